"""Protection of the library: backups, restores, drills and the consistency checker."""
