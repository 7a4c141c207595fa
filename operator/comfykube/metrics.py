"""Prometheus metrics of the pipeline and the operator (served on `/metrics`).

Names follow Prometheus conventions: `comfykube_` prefix, base units
(seconds, bytes), `_total` for counters. The pipeline records what it does
(durations, bytes); the operator records jobs by phase, retries and backend
state. Nothing here talks to Kubernetes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

JOB_TRANSITIONS = Counter(
    "comfykube_job_transitions_total", "ImageJob phase changes written, by the phase entered.", ["phase"]
)
JOBS_FINISHED = Counter(
    "comfykube_jobs_finished_total", "ImageJobs that reached a terminal phase, by phase and reason.",
    ["phase", "reason"],
)
JOBS_ACTIVE = Gauge("comfykube_jobs_active", "ImageJobs this operator is working on, by phase.", ["phase"])
QUEUE_WAIT = Histogram(
    "comfykube_job_queue_wait_seconds", "From submission to the start of execution in ComfyUI.",
    buckets=DURATION_BUCKETS,
)
EXECUTION = Histogram(
    "comfykube_job_execution_seconds", "From the start of execution to ComfyUI reporting the prompt done.",
    buckets=DURATION_BUCKETS,
)
DOWNLOAD = Histogram(
    "comfykube_image_download_seconds", "Downloading and checking one output image.", buckets=DURATION_BUCKETS
)
UPLOAD = Histogram(
    "comfykube_image_upload_seconds", "Uploading, verifying and presigning one image.", buckets=DURATION_BUCKETS
)
BYTES_DOWNLOADED = Counter("comfykube_downloaded_bytes_total", "Image bytes downloaded from ComfyUI.")
BYTES_UPLOADED = Counter("comfykube_uploaded_bytes_total", "Image bytes stored and verified in the object store.")
SUBMISSIONS = Counter("comfykube_prompt_submissions_total", "Prompts submitted to ComfyUI, by backend.", ["backend"])
RETRIES = Counter("comfykube_job_retries_total", "Attempts retried after a retryable fault, by reason.", ["reason"])
BACKEND_UP = Gauge("comfykube_backend_up", "1 when the ComfyUI backend passed its last health check.", ["backend"])
BACKEND_QUEUE = Gauge(
    "comfykube_backend_queue_depth", "Prompts running or waiting in the backend's own queue.", ["backend"]
)
BACKEND_INFLIGHT = Gauge(
    "comfykube_backend_inflight_jobs", "Jobs this operator has in flight on the backend.", ["backend"]
)
PREVIEW_FRAMES = Counter(
    "comfykube_preview_frames_total", "Live preview frames received from ComfyUI (most are only kept, not stored)."
)
PREVIEWS_STORED = Counter(
    "comfykube_previews_stored_total", "Live previews written to the bucket (at most one per job per interval).",
    ["outcome"],
)
