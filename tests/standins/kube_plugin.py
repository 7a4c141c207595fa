"""pytest fixtures for the kube stand-in (filled in by its module's owner)."""
