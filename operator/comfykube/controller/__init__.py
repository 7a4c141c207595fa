"""The kopf operator: handlers, the per-job runner, status writing, scheduling, backends, maintenance."""
