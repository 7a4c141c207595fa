"""pytest fixtures for the comfyui stand-in (filled in by its module's owner)."""
