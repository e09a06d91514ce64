"""Lenient JSON bodies: Google's front end tolerated trailing commas (its own sample create
body has ``"epoch_count":5,}``), and curl users often forget ``Content-Type``. A route class
that repairs both before FastAPI parses the body, so the schemas (and OpenAPI) stay exact."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute


def strip_trailing_commas(text: str) -> str:
    """Remove commas directly before ``}`` or ``]`` (outside strings)."""
    out: list[str] = []
    in_str = esc = False
    pending: list[str] = []  # a comma and the whitespace after it, held back
    for ch in text:
        if in_str:
            out.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if pending:
            if ch.isspace():
                pending.append(ch)
                continue
            if ch in "}]":
                out.extend(pending[1:])
            else:
                out.extend(pending)
            pending = []
        if ch == ",":
            pending = [ch]
            continue
        out.append(ch)
        if ch == '"':
            in_str = True
    out.extend(pending)
    return "".join(out)


class LenientJSONRequest(Request):
    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            raw = await super().body()
            if raw.strip():
                try:
                    json.loads(raw)
                except ValueError:
                    try:
                        fixed = strip_trailing_commas(raw.decode("utf-8")).encode()
                        json.loads(fixed)
                        raw = fixed
                    except (ValueError, UnicodeDecodeError):
                        pass
            self._body = raw
        return self._body


class LenientJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def lenient_handler(request: Request) -> Response:
            scope = request.scope
            ctype = request.headers.get("content-type", "")
            if request.method in ("POST", "PATCH", "PUT") and (
                not ctype or ctype.startswith("application/x-www-form-urlencoded")
            ):
                # curl -d sends form encoding; a JSON API means JSON.
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))
                scope = {**scope, "headers": headers}
            return await handler(LenientJSONRequest(scope, request.receive))

        return lenient_handler
