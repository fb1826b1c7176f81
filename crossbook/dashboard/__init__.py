"""Live web dashboard: `crossbook dashboard` (see server.py)."""
