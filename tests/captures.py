"""Where the recorded ComfyUI exchanges are: `shared/` beside the checkout (as CI lays it out).

Order: $COMFYUI_CAPTURES, `../shared/comfyui-protocol/captures` next to this repository,
then `/work/shared/...` (the developers' machines).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def captures_dir() -> Path:
    """The first captures directory that exists (the last candidate if none does)."""
    candidates = [
        *([Path(os.environ["COMFYUI_CAPTURES"])] if os.environ.get("COMFYUI_CAPTURES") else []),
        REPO.parent / "shared" / "comfyui-protocol" / "captures",
        Path("/work/shared/comfyui-protocol/captures"),
    ]
    return next((path for path in candidates if path.is_dir()), candidates[-1])
