"""The server's defaults and limits, in one place: `create_app` and `cnnlab serve`'s flags both
take them from here (a module without FastAPI, so building the CLI's parser stays fast)."""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_TOP_K = 3
DEFAULT_BODY_TIMEOUT_S = 60.0
"""A request body must arrive within this: 10 MiB at about 1.4 Mbit/s, and a trickling client
is cut off rather than held open."""
MAX_BATCH_FILES = 64
