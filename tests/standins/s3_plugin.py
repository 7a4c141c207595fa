"""pytest fixtures for the s3 stand-in (filled in by its module's owner)."""
