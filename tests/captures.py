"""Where the recorded ComfyUI exchanges are: `tests/data/comfyui/`, inside the repository.

They were copied from the team's reference material (origin and list in that directory's
README.md), so every test runs from a plain clone; nothing is read from outside the checkout.
"""

from __future__ import annotations

from pathlib import Path

CAPTURES = Path(__file__).resolve().parent / "data" / "comfyui"


def captures_dir() -> Path:
    """The directory of recorded ComfyUI exchanges (one JSON file per exchange)."""
    return CAPTURES
