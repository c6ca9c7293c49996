"""Server-rendered admin UI (Jinja2 + HTMX, vendored, no build step)."""
