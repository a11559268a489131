"""`cnnlab serve`: a web page and a JSON API over a trained run (FastAPI on uvicorn)."""

from cnnlab.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
