"""Load-test `cnnlab serve`: a bounded number of requests, bounded concurrency, 127.0.0.1 only.

    python benchmarks/load_test.py runs/basic_cnn-fashion_mnist            # starts the server
    python benchmarks/load_test.py --url http://127.0.0.1:8000 -n 1000 -c 16 --route features
    python benchmarks/load_test.py RUN --json                              # one JSON object
    python benchmarks/load_test.py RUN --body photo -n 500 -c 4            # 320x320 JPEG photos

Given a RUN, the server is started in a separate process (so that the client does not share a
GIL with it) on a free port, and stopped at the end. One warm-up request is not counted. Prints
requests, concurrency, throughput, p50/p90/p99/max latency, errors (non-200 answers or failed
connections), how many answers were 5xx, and the server's resident memory (RSS, from /proc)
after the warm-up and after the load (only for a server started here, on Linux). Exits 1 on any
error.

    python benchmarks/load_test.py RUN -n 20000 -c 8   # the long version (docs/reliability.md)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
ROUTES = {"predict": "/api/predict", "features": "/api/features"}
DISTINCT_IMAGES = 64
START_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60
SERVE = (
    "import sys; from cnnlab.serve import serve; "
    "serve(sys.argv[1], port=int(sys.argv[2]), log_level='warning')"
)


@dataclass
class Result:
    route: str
    body: str
    requests: int
    concurrency: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    server_5xx: int
    rss_before_mib: float | None
    rss_after_mib: float | None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with server(args.run, args.url) as (url, pid):
        result = load(url, args.route, args.body, args.requests, args.concurrency, pid)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print_table(result)
    return 1 if result.errors else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("run", nargs="?", help="run folder (or .keras file) to serve and test")
    target.add_argument("--url", help="an already running server on 127.0.0.1 instead")
    parser.add_argument("-n", "--requests", type=positive, default=500)
    parser.add_argument("-c", "--concurrency", type=positive, default=8)
    parser.add_argument("--route", choices=sorted(ROUTES), default="predict")
    parser.add_argument(
        "--body",
        choices=["png", "json", "photo"],
        default="png",
        help="a 28x28 PNG upload, JSON pixels, or a 320x320 JPEG photo of a test garment "
        "(object finding and five framings: photoset)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.url and urlsplit(args.url).hostname not in LOCAL_HOSTS:
        parser.error(f"--url must point at this machine ({', '.join(sorted(LOCAL_HOSTS))})")
    return args


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --- The server ------------------------------------------------------------------------------


@contextlib.contextmanager
def server(run: str | None, url: str | None) -> Iterator[tuple[str, int | None]]:
    """The URL to test and the server's process id: `url` as given (no id), or a server for
    `run` started here and stopped after."""
    if url:
        yield url.rstrip("/"), None
        return
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(run), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {START_TIMEOUT_S} s")


# --- The load ------------------------------------------------------------------------------


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of process `pid` in MiB, from /proc (None elsewhere or without a pid)."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def load(
    url: str, route: str, body: str, requests: int, concurrency: int, pid: int | None = None
) -> Result:
    """Send `requests` requests from `concurrency` threads; time each one."""
    bodies = make_bodies(body)
    path = ROUTES[route]
    latencies: list[float] = []
    errors = 0
    server_5xx = 0
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        send(client, path, bodies[0])  # warm-up: not counted
        rss_before = rss_mib(pid)

        def one(index: int) -> None:
            nonlocal errors, server_5xx
            started = time.perf_counter()
            status = send(client, path, bodies[index % len(bodies)])
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                errors += status != 200
                server_5xx += status is not None and status >= 500

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(requests)))
        seconds = time.perf_counter() - started
        rss_after = rss_mib(pid)
    ms = np.array(latencies) * 1000
    return Result(
        route=path,
        body=body,
        requests=requests,
        concurrency=concurrency,
        seconds=round(seconds, 3),
        throughput_rps=round(requests / seconds, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p90_ms=round(float(np.percentile(ms, 90)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        max_ms=round(float(ms.max()), 1),
        errors=errors,
        server_5xx=server_5xx,
        rss_before_mib=rss_before,
        rss_after_mib=rss_after,
    )


Upload = tuple[str, bytes, str]  # file name, bytes, content type


def send(client: httpx.Client, path: str, body: Upload | list[list[float]]) -> int | None:
    """The answer's status code, or None when no answer came."""
    try:
        if isinstance(body, tuple):
            response = client.post(path, files={"file": body})
        else:
            response = client.post(path, json=body)
    except httpx.HTTPError:
        return None
    return response.status_code


def make_bodies(kind: str) -> list[Upload] | list[list[list[float]]]:
    """Distinct drawings: a light bar on black at a random place, as a PNG or as pixels; or
    distinct photos: Fashion-MNIST test garments drawn as 320x320 JPEGs, the conditions of
    `benchmarks/photos.py` in turn at severity 1."""
    rng = np.random.default_rng(0)
    if kind == "photo":
        return make_photos(rng)
    arrays = []
    for _ in range(DISTINCT_IMAGES):
        image = np.zeros((28, 28), np.uint8)
        top, left = rng.integers(0, 20, size=2)
        height, width = rng.integers(3, 9, size=2) if rng.random() < 0.5 else (3, 15)
        image[top : top + height, left : left + width] = 255
        arrays.append(image)
    if kind == "json":
        return [(array / 255).tolist() for array in arrays]
    return [("drawing.png", png(array), "image/png") for array in arrays]


def make_photos(rng: np.random.Generator) -> list[Upload]:
    from photoset import CONDITIONS, make_photo

    from cnnlab.data import load_dataset

    test = load_dataset("fashion_mnist").x_test
    conditions = list(CONDITIONS)
    picks = rng.choice(len(test), DISTINCT_IMAGES, replace=False)
    photos = [
        make_photo(test[pick], conditions[i % len(conditions)], 1, rng)
        for i, pick in enumerate(picks)
    ]
    return [("photo.jpg", photo.jpeg(), "image/jpeg") for photo in photos]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def print_table(result: Result) -> None:
    rows = [
        ("route", f"POST {result.route} ({result.body})"),
        ("requests", f"{result.requests}"),
        ("concurrency", f"{result.concurrency}"),
        ("wall time", f"{result.seconds:.2f} s"),
        ("throughput", f"{result.throughput_rps:.1f} req/s"),
        ("latency p50", f"{result.p50_ms:.1f} ms"),
        ("latency p90", f"{result.p90_ms:.1f} ms"),
        ("latency p99", f"{result.p99_ms:.1f} ms"),
        ("latency max", f"{result.max_ms:.1f} ms"),
        ("errors", f"{result.errors}"),
        ("5xx answers", f"{result.server_5xx}"),
        ("server RSS before", _mib(result.rss_before_mib)),
        ("server RSS after", _mib(result.rss_after_mib)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _mib(value: float | None) -> str:
    return "n/a (server not started here)" if value is None else f"{value:.1f} MiB"


if __name__ == "__main__":
    sys.exit(main())
