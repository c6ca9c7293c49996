"""The HTTP API: one router per area, thin routes over the domain packages."""
