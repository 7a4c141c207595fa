"""ComfyUI client: health, preflight, submit, follow (WS + polling), checked downloads.

The public names are re-exported here; see `client.ComfyClient`.
"""

from comfykube.comfyui.client import ComfyClient
from comfykube.comfyui.health import check_health
from comfykube.comfyui.hub import Watch
from comfykube.comfyui.models import (
    Device,
    DownloadedImage,
    HealthReport,
    HistoryEntry,
    OutputImage,
    ProgressCallback,
    ProgressUpdate,
    PromptPhase,
    PromptState,
    QueueItem,
    QueueSnapshot,
)

__all__ = [
    "ComfyClient",
    "Device",
    "DownloadedImage",
    "HealthReport",
    "HistoryEntry",
    "OutputImage",
    "ProgressCallback",
    "ProgressUpdate",
    "PromptPhase",
    "PromptState",
    "QueueItem",
    "QueueSnapshot",
    "Watch",
    "check_health",
]
