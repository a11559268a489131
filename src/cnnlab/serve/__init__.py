"""`cnnlab serve`: a web page and a JSON API over a trained run (FastAPI on uvicorn).

`create_app` and `serve` are imported on first use, so `cnnlab.serve.limits` (the defaults the
CLI shows) can be read without loading FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["create_app", "serve"]

if TYPE_CHECKING:
    from cnnlab.serve.app import create_app, serve


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("cnnlab.serve.app"), name)
    raise AttributeError(f"module 'cnnlab.serve' has no attribute {name!r}")
