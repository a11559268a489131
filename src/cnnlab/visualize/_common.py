"""What every picture module shares: saving a figure or image atomically as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab._io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def figure() -> Figure:
    """A new matplotlib Figure, made without pyplot (no GUI, no global state, thread-safe)."""
    from matplotlib.figure import Figure

    return Figure(layout="constrained")


def save_png(picture: Any, path: str | Path) -> Path:
    """Write a matplotlib Figure or a PIL Image to `path` as PNG, atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        if hasattr(picture, "savefig"):
            picture.savefig(tmp, format="png", dpi=DPI)
        else:
            picture.save(tmp, format="PNG")
    return path
