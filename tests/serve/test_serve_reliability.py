"""The server under load and under a slow client, and the warning for a non-loopback host.

All traffic goes to 127.0.0.1. The load here is short (a few hundred requests);
benchmarks/load_test.py is the long version with figures.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from serve_helpers import LiveServer, png_bytes
from synthetic import CLASS_NAMES, make_images

from cnnlab.serve import app as app_module
from cnnlab.serve import create_app

REQUESTS = 320
CONCURRENCY = 8
WARM_UP = 40
RSS_GROWTH_LIMIT = 64 * 2**20  # a leak of one 28x28 float32 input per request would be 1 MB;
# a leak of each /api/features answer (hundreds of kB) would pass it within these requests
TRICKLE_TIMEOUT_S = 1.0
TRICKLE_GIVE_UP_S = 30.0  # the trickle below would take 400 s to finish


def _rss_bytes() -> int:
    """This process's resident set size (the server runs in a thread of it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_bounded_load_gives_no_5xx_and_bounded_memory(live_server: LiveServer) -> None:
    labels = np.arange(64) % len(CLASS_NAMES)
    arrays = make_images(labels, np.random.default_rng(5))
    bodies = [png_bytes(array) for array in arrays]
    limits = httpx.Limits(max_connections=CONCURRENCY)
    with httpx.Client(base_url=live_server.url, timeout=60, limits=limits) as client:

        def one(index: int) -> int:
            body = bodies[index % len(bodies)]
            if index % 10 == 9:  # every tenth request asks for the layer pictures as well
                files = {"file": ("x.png", body, "image/png")}
                return client.post("/api/features", files=files).status_code
            if index % 2:
                pixels = (arrays[index % len(arrays)] / 255).tolist()
                return client.post("/api/predict", json=pixels).status_code
            return client.post(
                "/api/predict", files={"file": ("x.png", body, "image/png")}
            ).status_code

        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            warm = Counter(pool.map(one, range(WARM_UP)))
            before = _rss_bytes()
            statuses = Counter(pool.map(one, range(REQUESTS)))
            after = _rss_bytes()
    assert warm == {200: WARM_UP}
    assert statuses == {200: REQUESTS}, statuses  # no 5xx, and no other refusal either
    assert after - before < RSS_GROWTH_LIMIT, f"RSS grew {(after - before) / 2**20:.1f} MiB"


@pytest.fixture(scope="module")
def strict_server(tiny_run: Path) -> Iterator[LiveServer]:
    """The app with a body deadline of TRICKLE_TIMEOUT_S, on its own real uvicorn."""
    with LiveServer(create_app(tiny_run, body_timeout_s=TRICKLE_TIMEOUT_S)) as server:
        yield server


def test_a_trickled_body_is_cut_off_and_others_are_served(strict_server: LiveServer) -> None:
    address = urlsplit(strict_server.url)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    with socket.create_connection((host, port), timeout=5) as slow:
        slow.sendall(
            f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 2000\r\n\r\n[".encode()
        )
        slow.settimeout(0.2)
        answer = b""
        served_meanwhile = False
        started = time.monotonic()
        while time.monotonic() - started < TRICKLE_GIVE_UP_S:
            try:
                slow.sendall(b" ")  # one byte every 0.2 s: the body would take 400 s
            except OSError:  # the server closed the connection
                break
            if not served_meanwhile:  # another client is answered while the trickle goes on
                served_meanwhile = httpx.get(f"{strict_server.url}/api/health").status_code == 200
            try:
                chunk = slow.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:  # closed after the answer
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 1 s" in answer
    assert served_meanwhile
    pixels = np.zeros((28, 28)).tolist()
    response = httpx.post(f"{strict_server.url}/api/predict", json=pixels)
    assert response.status_code == 200  # and the server is still serving


def test_a_whole_body_sent_at_once_is_not_cut_off(strict_server: LiveServer) -> None:
    body = png_bytes(make_images(np.array([1]), np.random.default_rng(0))[0])
    files = {"file": ("x.png", body, "image/png")}
    response = httpx.post(f"{strict_server.url}/api/predict", files=files)
    assert response.status_code == 200 and response.json()["label"] in CLASS_NAMES


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.10", True),
        ("myhost.example", True),
    ],
)
def test_a_non_loopback_host_warns_that_there_is_no_authentication(
    host: str, warned: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    started: list[str] = []
    monkeypatch.setattr(app_module, "create_app", lambda run, **_: object())
    monkeypatch.setattr(uvicorn, "run", lambda app, host, **_: started.append(host))
    with caplog.at_level(logging.WARNING, logger=app_module.log.name):
        app_module.serve("run", host=host, port=8000)
    assert started == [host]  # nothing listens: uvicorn.run is replaced
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) == warned, warnings
    if warned:
        assert "no authentication" in warnings[0] and host in warnings[0]
