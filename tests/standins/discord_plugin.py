"""pytest fixtures for the discord stand-in (filled in by its module's owner)."""
