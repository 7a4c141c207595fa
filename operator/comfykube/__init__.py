"""comfykube: ImageJobs rendered by ComfyUI — types, pipeline, ComfyUI client, storage, operator, CLI."""
