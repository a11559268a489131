"""Reading images out of requests, refusing bad ones with the right 4xx before any decoding.

| problem                                         | status |
|-------------------------------------------------|--------|
| empty body, empty file, malformed JSON          | 400    |
| body or file over the size limit, too many pixels | 413  |
| a content type other than multipart, JSON or image/* | 415 |
| bytes that are not an image Pillow can open     | 415    |
| wrong array shape, values outside [0, 1] or NaN, a truncated image | 422 |
"""

from __future__ import annotations

import asyncio
import io
import json
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from fastapi import HTTPException, Request, status
from numpy.typing import NDArray
from starlette.datastructures import Headers, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cnnlab.data.images import MAX_PIXELS, TooManyPixels, check_unit_range, read_size
from cnnlab.errors import ImageError

CHUNK_BYTES = 64 * 1024
MULTIPART_ENVELOPE_BYTES = 64 * 1024
"""Room for multipart boundaries and headers on top of the image itself."""
ACCEPTED = (
    "send multipart/form-data with the image in the field 'file', an image/* body, "
    "or application/json with a 28x28 array of values in [0, 1]"
)


@dataclass(frozen=True)
class ImageInput:
    """One picture from a request: encoded image bytes or a model-ready array, and its name."""

    source: str
    image: bytes | NDArray[np.float32]

    def opened(self) -> BinaryIO | NDArray[np.float32]:
        """What `cnnlab.prediction.preprocess` reads: a named file object, so its errors name the
        file."""
        if isinstance(self.image, np.ndarray):
            return self.image
        buffer = io.BytesIO(self.image)
        buffer.name = self.source
        return buffer


@dataclass(frozen=True)
class Refused:
    """A file of a batch request that was refused, with the status it would get alone."""

    source: str
    status: int
    detail: str


def fail(status_code: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status_code, detail=detail)


# --- One image per request -----------------------------------------------------------------


async def read_image(request: Request, size: tuple[int, int], max_bytes: int) -> ImageInput:
    """The image of a predict/features request: a multipart file, an image body or JSON pixels."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise fail(
                    status.HTTP_422_UNPROCESSABLE_CONTENT, "no file in the form field 'file'"
                )
            return ImageInput(upload.filename or "upload", await read_upload(upload, max_bytes))
    body = await request.body()  # bounded by BodySizeLimit
    if not body:
        raise fail(status.HTTP_400_BAD_REQUEST, f"the request body is empty; {ACCEPTED}")
    if media_type == "application/json" or media_type.endswith("+json"):
        return ImageInput("pixels", parse_pixels(parse_json(body), size))
    if media_type.startswith("image/") or media_type == "application/octet-stream":
        check_image(body, "body")
        return ImageInput("body", body)
    shown = media_type or "none"
    raise fail(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"content type {shown}: {ACCEPTED}")


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """An uploaded file's bytes, read in chunks and refused as soon as it passes `max_bytes`."""
    name = upload.filename or "upload"
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise too_large(name, max_bytes)
        chunks.append(chunk)
    if not size:
        raise fail(status.HTTP_400_BAD_REQUEST, f"{name}: the file is empty (0 bytes)")
    data = b"".join(chunks)
    check_image(data, name)
    return data


def too_large(name: str, max_bytes: int) -> HTTPException:
    return fail(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"{name}: over the upload limit of {format_bytes(max_bytes)}; send a smaller image",
    )


def format_bytes(size: int) -> str:
    """`10 MiB (10,485,760 bytes)`, or `900 bytes`."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit} ({size:,} bytes)"
    return f"{size:,} bytes"


def check_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse what is not an image (415) or declares too many pixels (413), decoding nothing:
    `cnnlab.data.images.read_size`, whose errors are those decoding would give."""
    try:
        read_size(data, name, max_pixels)
    except TooManyPixels as exc:
        raise fail(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from None
    except ImageError as exc:
        raise fail(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from None


# --- Several images per request ------------------------------------------------------------


async def read_batch(
    request: Request, max_files: int, max_bytes: int
) -> list[ImageInput | Refused]:
    """The files of a batch request (form field 'files'); a bad file gets its error in its place."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        if not await request.body():
            raise fail(status.HTTP_400_BAD_REQUEST, "the request body is empty")
        raise fail(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"content type {media_type or 'none'}: send multipart/form-data with the images "
            "in the field 'files'",
        )
    async with request.form(max_files=max_files, max_fields=16) as form:
        uploads = [item for item in form.getlist("files") if isinstance(item, UploadFile)]
        if not uploads:
            raise fail(status.HTTP_422_UNPROCESSABLE_CONTENT, "no files in the form field 'files'")
        items: list[ImageInput | Refused] = []
        for upload in uploads:
            name = upload.filename or "upload"
            try:
                items.append(ImageInput(name, await read_upload(upload, max_bytes)))
            except HTTPException as exc:
                items.append(Refused(name, exc.status_code, str(exc.detail)))
        return items


# --- JSON pixels ---------------------------------------------------------------------------


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, deep nesting
        raise fail(status.HTTP_400_BAD_REQUEST, f"malformed JSON: {exc}") from None


def parse_pixels(payload: Any, size: tuple[int, int]) -> NDArray[np.float32]:
    """A `[[...]]` or `{"pixels": [[...]]}` payload as a (H, W, 1) float32 array in [0, 1]."""
    height, width = size
    expected = f"expected {height} rows of {width} numbers in [0, 1]"
    if isinstance(payload, dict):
        if "pixels" not in payload:
            raise unprocessable(f'no "pixels" key in the JSON object; {expected}')
        payload = payload["pixels"]
    if not isinstance(payload, list):
        raise unprocessable(f"pixels must be a JSON array; {expected}")
    with warnings.catch_warnings():  # a ragged list is reported below, not warned about
        warnings.simplefilter("ignore")
        cells = np.array(payload, dtype=object)
    if cells.shape not in ((height, width), (height, width, 1)):
        shape = "x".join(map(str, cells.shape)) if cells.ndim > 1 else "not rectangular"
        raise unprocessable(f"the pixel array is {shape}; {expected}")
    if not all(type(value) in (int, float) for value in cells.flat):  # bool is not a number here
        raise unprocessable(f"pixels must all be numbers; {expected}")
    values = cells.astype(np.float64)
    try:
        check_unit_range(values, "pixels")  # the rule a float array passed to the library meets
    except ImageError as exc:
        raise unprocessable(f"{exc}; {expected}") from None
    return values.astype(np.float32).reshape(height, width, 1)


def unprocessable(detail: str) -> HTTPException:
    return fail(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


# --- The whole body ------------------------------------------------------------------------


class BodySizeLimit:
    """ASGI middleware: refuse a request body over `max_bytes` (+ `slack`) with 413.

    A declared Content-Length over the limit is refused before reading anything; a chunked body
    is counted as it streams in, so an oversized upload is never held in memory or spooled.
    `slack` leaves room for multipart boundaries around a file of exactly `max_bytes`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, slack: int = MULTIPART_ENVELOPE_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limit = max_bytes + slack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            from fastapi.responses import JSONResponse

            detail = too_large("the request body", self.max_bytes).detail
            await JSONResponse({"detail": detail}, status.HTTP_413_CONTENT_TOO_LARGE)(
                scope, receive, send
            )
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise too_large("the request body", self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


class BodyDeadline:
    """ASGI middleware: a request body must arrive in full within `seconds`, else 408.

    uvicorn's own timeouts cover idle keep-alive connections, not a client that sends its
    headers and then trickles the body a byte at a time: without a deadline such a client
    holds a connection and a pending request for as long as it likes. The clock starts when
    the app first asks for the body; after the 408 the connection is closed (the rest of the
    body is never read), and other clients are served all along.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        complete = False

        async def timed_receive() -> Message:
            nonlocal deadline, complete
            if complete:  # the body is in; what is left is the disconnect, however late
                return await receive()
            if deadline is None:
                deadline = loop.time() + self.seconds
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise HTTPException(
                    status.HTTP_408_REQUEST_TIMEOUT,
                    f"the request body did not arrive within {self.seconds:g} s; "
                    "send it at once, or check the connection",
                    headers={"Connection": "close"},  # the server drops the rest of the body
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)
