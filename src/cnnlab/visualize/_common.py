"""What every picture module shares: saving a figure or image atomically as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab._io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def figure() -> Figure:
    """A new matplotlib Figure, made without pyplot (no GUI, no global state, thread-safe)."""
    from matplotlib.figure import Figure

    return Figure(layout="constrained")


def to_png(picture: Any) -> bytes:
    """A matplotlib Figure or a PIL Image encoded as PNG."""
    import io

    buffer = io.BytesIO()
    if hasattr(picture, "savefig"):
        picture.savefig(buffer, format="png", dpi=DPI)
    else:
        picture.save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(picture: Any, path: str | Path) -> Path:
    """Write a matplotlib Figure or a PIL Image to `path` as PNG, atomically."""
    path = Path(path)
    atomic_write_bytes(path, to_png(picture))
    return path
