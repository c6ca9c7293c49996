"""Long work as persisted jobs (DESIGN.md §7), queued with Huey."""
