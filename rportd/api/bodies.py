"""Request bodies read once, under a deadline, and JSON refused when nested too deep."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import BadRequest, RportdError
from .context import CONTEXT

__all__ = ["bounded_body", "read_json", "json_object", "json_depth", "MAX_JSON_DEPTH", "RequestTimeout",
           "UnsupportedMediaType", "ACCEPTED_TYPES"]

log = logging.getLogger("rportd.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# rport's bodies are flat objects; 32 levels leave room and keep json.loads far from
# Python's recursion limit (5,000 levels raised RecursionError: a 500).
MAX_JSON_DEPTH = 32


# What rport's API takes: JSON, and a form for POST /login (curl -d sends one too)
ACCEPTED_TYPES = ("application/json", "application/x-www-form-urlencoded")


class UnsupportedMediaType(RportdError):
    status = 415
    code = "ERR_CODE_UNSUPPORTED_MEDIA_TYPE"
    title = "Unsupported media type"


class RequestTimeout(RportdError):
    status = 408
    code = "ERR_CODE_REQUEST_TIMEOUT"
    title = "Request timeout"


def json_depth(body: bytes, limit: int) -> int:
    """How deep arrays and objects nest in `body` (strings skipped), counting up to limit + 1."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


async def _read(request: web.Request) -> bytes:
    timeout = request.app[CONTEXT].config.api.read_timeout
    try:
        async with asyncio.timeout(timeout):
            return await request.read()  # cached: the handler's json()/post() reuse it
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g}s") from None


@web.middleware
async def bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.body_exists:
        if "Content-Type" in request.headers and request.content_type not in ACCEPTED_TYPES:
            raise UnsupportedMediaType(f"send the body as {' or '.join(ACCEPTED_TYPES)}")
        try:
            body = await _read(request)
        except RequestTimeout as exc:
            response = web.json_response({"errors": [{"code": exc.code, "title": exc.title,
                                                      "detail": exc.detail}]}, status=exc.status)
            response.force_close()  # the rest of the body will not be read
            return response
        if "json" in request.content_type and json_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise BadRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels",
                             code="ERR_CODE_INVALID_JSON")
    return await handler(request)


async def read_json(request: web.Request) -> object:
    """The body's JSON, whatever its type; BadRequest when there is none or it is not JSON."""
    if not request.body_exists:
        raise BadRequest("missing body with JSON data", code="ERR_CODE_INVALID_JSON")
    try:
        return await request.json()
    except ValueError:
        raise BadRequest("the body is not valid JSON", code="ERR_CODE_INVALID_JSON") from None


async def json_object(request: web.Request, shape: str) -> dict[str, object]:
    """The body as a JSON object; BadRequest showing `shape` otherwise."""
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest(f"the body must be JSON: {shape}", code="ERR_CODE_INVALID_JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object: {shape}",
                         code="ERR_CODE_INVALID_JSON")
    return body
