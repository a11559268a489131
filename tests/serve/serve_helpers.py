"""Helpers for the web app tests: PNG bytes, and the app served by a real uvicorn."""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
from fastapi import FastAPI
from PIL import Image

SERVER_START_SECONDS = 30


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class LiveServer:
    """The app served by a real uvicorn on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))  # the kernel picks a free port; no race
        port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=SERVER_START_SECONDS)
        self._socket.close()
