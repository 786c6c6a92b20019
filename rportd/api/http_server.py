"""The API's HTTP layer below routing: deadlines, and rport's JSON for errors aiohttp answers itself.

aiohttp answers a request it cannot parse (oversized headers, a bad request line) before any
middleware runs, with a plain-text 400 and a traceback in the log. rportd wants its JSON error
shape and one debug line, so it reaches below aiohttp's public API here, and only here. Every
such use, and why (tests/test_api_hardening.py pins each one, so an aiohttp upgrade that changes
them fails loudly instead of silently bringing the tracebacks back):

1. `RequestHandler.handle_error(request, status, exc, message)` is overridden. aiohttp calls it
   for parse errors and for its own 500s; the signature and the call are aiohttp internals.
2. `BaseRunner.server` (a documented property) is overridden to return a factory of that
   RequestHandler subclass: `TCPSite.start` passes `runner.server` to `loop.create_server` as the
   protocol factory, and `RequestHandler(manager, loop=..., **kwargs)` is how aiohttp's own
   `Server.__call__` builds one.
3. The header deadline is aiohttp's keep-alive timer (the public `keepalive_timeout`): since
   aiohttp 3.10 it starts when a connection is made and closes it while no complete request has
   arrived, which covers silent and half-sent requests as well as idle keep-alive connections.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest

__all__ = ["ApiRunner", "JsonErrorRequestHandler", "RedactingAccessLogger", "error_body"]

log = logging.getLogger("rportd.api")

_CODES = {400: "ERR_CODE_INVALID_REQUEST", 408: "ERR_CODE_REQUEST_TIMEOUT",
          413: "ERR_CODE_REQUEST_TOO_LARGE", 431: "ERR_CODE_HEADERS_TOO_LARGE"}


def error_body(status: int, code: str, title: str, detail: str) -> web.Response:
    """rport's error shape: {"errors": [{"code", "title", "detail"}]}."""
    return web.json_response({"errors": [{"code": code, "title": title, "detail": detail}]},
                             status=status)


class JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering its own errors in rport's JSON shape."""

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # A malformed request is the client's fault: one debug line, never a traceback.
        log.debug("unparsable request from %s answered %d: %s", request.remote, status,
                  message or exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started; cannot send an error")
        if status >= 500:
            response = error_body(status, "ERR_CODE_INTERNAL", "Internal error",
                                  "an unexpected error happened; the server log has the details")
        else:
            response = error_body(status, _CODES.get(status, f"ERR_CODE_HTTP_{status}"),
                                  "Invalid request", _first_line(message or str(exc or "")))
        response.force_close()
        return response


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


_QUERY_PAIR = re.compile(r"([?&])([^=&\s]*)=([^&\s]*)")
_SECRET_KEYS = ("access_token",)


def _redact_pair(match: re.Match[str]) -> str:
    """The key as aiohttp reads it (percent-decoded: `access%5Ftoken` is `access_token`)."""
    if unquote_plus(match.group(2)) in _SECRET_KEYS:
        return f"{match.group(1)}{match.group(2)}=REDACTED"
    return match.group(0)


def _redact(text: str) -> str:
    return _QUERY_PAIR.sub(_redact_pair, text) if "=" in text else text


class RedactingAccessLogger(AccessLogger):
    """The access log without the token a WebSocket sends as `access_token` in its URL."""

    def _format_line(self, request: BaseRequest, response: web.StreamResponse,
                     time: float) -> Any:
        return [(key, _redact(value) if isinstance(value, str) else value)
                for key, value in super()._format_line(request, response, time)]


class ApiRunner(web.AppRunner):
    """An AppRunner whose connections are JsonErrorRequestHandlers, with a header deadline."""

    def __init__(self, app: web.Application, *, read_timeout: float,
                 shutdown_timeout: float = 2.0, **handler_kwargs: Any):
        handler_kwargs.update(keepalive_timeout=read_timeout, lingering_time=read_timeout)
        super().__init__(app, handle_signals=False, shutdown_timeout=shutdown_timeout,
                         **handler_kwargs)
        handler_kwargs.setdefault("access_log_class", RedactingAccessLogger)
        self._handler_kwargs = handler_kwargs

    @property
    def server(self) -> Any:
        server = super().server
        if server is None:
            return None

        def protocol() -> JsonErrorRequestHandler:
            return JsonErrorRequestHandler(server, loop=asyncio.get_running_loop(),
                                           **self._handler_kwargs)

        return protocol
