"""Request bodies are bounded before they are read.

``BodyLimit`` (an ASGI middleware around the whole app) hands every request a ``receive``
that refuses a body over the limit: a declared ``Content-Length`` over it is refused on the
first read, before a byte of the body is taken in, and a chunked body is counted as it
arrives and refused the moment it passes the limit. The refusal is a 413 in the Google error
shape (``api/errors.py``) with ``Connection: close``, so the client stops sending.

The limit is checked when the body is first read, not when the request arrives: the API's
route class (``api/lenient.py``) first checks the caller's credentials and sets the route's
own limit (uploads: ``UPLOAD_LIMIT``), so a caller without credentials gets 401 and the
server never reads, or spools to disk, the body it declared.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunelab.data.parse import MAX_FILE_BYTES

BODY_KEY = "tunelab.body"  # the request's BoundedBody, in the ASGI scope
UPLOAD_FRAMING = 64 * 1024  # multipart boundaries, part headers and the small form fields
UPLOAD_LIMIT = MAX_FILE_BYTES + UPLOAD_FRAMING


async def read_upload(file: Any) -> bytes:
    """An uploaded dataset's bytes (a Starlette ``UploadFile``), read no further than one byte
    over ``MAX_FILE_BYTES``; a larger file is a ``DatasetError`` naming the limit (the same
    for the Gemini, OpenAI and Studio uploads)."""
    data = await file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        from tunelab.errors import DatasetError, Problem

        raise DatasetError([Problem(
            f"the file is larger than {MAX_FILE_BYTES // 2**20} MB; remove examples or "
            "shorten them", file.filename or "upload")])
    return data


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


class BodyTooLarge(HTTPException):
    """413: a Starlette ``HTTPException`` so that FastAPI's body parsing passes it on as it
    is (it turns any other exception raised while reading into a generic 400)."""

    def __init__(self, limit: int, hint: str):
        super().__init__(
            413,
            detail=f"Request payload size exceeds the limit: {limit:,} bytes ({_size(limit)}) "
            f"for this method. {hint}",
            headers={"Connection": "close"},
        )


JSON_HINT = ("Send fewer or shorter examples or contents; a dataset of up to 4 MB can be "
             "uploaded as a file (POST /v1beta/files) and tuned with trainingData.file.")
UPLOAD_HINT = "Upload a file of at most 4 MB: remove examples or shorten them."


class BoundedBody:
    """A request's ``receive``, counting body bytes against ``limit`` (which the route may
    change before the first read)."""

    def __init__(self, receive: Receive, scope: Scope, limit: int):
        self._receive = receive
        self.limit = limit
        self.hint = JSON_HINT
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        self.declared = int(length) if length.isdigit() else None
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._more = bool(self.declared) or chunked  # whether a body is still to come
        self._received = 0
        self._started = False

    @property
    def unread(self) -> bool:
        """Whether the client may still be sending body bytes that nobody read (an answer
        given now should close the connection rather than wait for them)."""
        return self._more

    async def __call__(self) -> Message:
        if not self._started:
            self._started = True
            if self.declared is not None and self.declared > self.limit:
                raise BodyTooLarge(self.limit, self.hint)
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            self._more = message.get("more_body", False)
            if self._received > self.limit:
                raise BodyTooLarge(self.limit, self.hint)
        elif message["type"] == "http.disconnect":
            self._more = False
        return message


class BodyLimit:
    """ASGI middleware: every HTTP request's body is read through a ``BoundedBody``."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = BoundedBody(receive, scope, self.limit)
        scope[BODY_KEY] = body
        await self.app(scope, body, send)
