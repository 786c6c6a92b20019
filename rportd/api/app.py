"""Builds the API application: middlewares (errors as rport's JSON, authentication), routes,
OpenAPI, static files and the access log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .. import __version__
from ..errors import NotFound, RportdError
from ..wire.pipe import TrafficMeter
from . import auth, clients, clients_auth
from .auth import AUTHENTICATOR, CALLER, Authenticator
from .context import CONTEXT, ApiContext
from .openapi import openapi_spec

__all__ = ["build_api", "ROUTES"]

log = logging.getLogger("rportd.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {400: "ERR_CODE_INVALID_REQUEST", 401: "ERR_CODE_UNAUTHORIZED",
               404: "ERR_CODE_NOT_FOUND", 405: "ERR_CODE_METHOD_NOT_ALLOWED",
               413: "ERR_CODE_REQUEST_TOO_LARGE"}


def error_response(status: int, code: str, title: str, detail: str) -> web.Response:
    response = web.json_response({"errors": [{"code": code, "title": title, "detail": detail}]},
                                 status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="rportd"'
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """rport's error shape for everything: our errors, aiohttp's, and the unexpected (500)."""
    try:
        response = await handler(request)
    except RportdError as exc:
        return error_response(exc.status, exc.code, exc.title, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"ERR_CODE_HTTP_{exc.status}")
        return error_response(exc.status, code, exc.reason, "")
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(500, "ERR_CODE_INTERNAL", "Internal error",
                              "an unexpected error happened; the server log has the details")
    if (response.status >= 400 and request.path.startswith("/api/")
            and response.content_type != "application/json"):
        # e.g. the doc_root handler's plain 404 for a path under /api/ that has no route
        code = _HTTP_CODES.get(response.status, f"ERR_CODE_HTTP_{response.status}")
        return error_response(response.status, code, response.reason or "", "")
    return response


class DataPlaneFirst:
    """While tunnels stream, API requests are admitted at `[api] rate_while_tunnels_busy` at
    most: Python code gets one core, each request costs tens of microseconds of it, and an
    unbounded API took two thirds of a busy tunnel's throughput (bench/tunnel_under_api_load.py).
    Requests over the rate wait; none is refused."""

    def __init__(self, meter: TrafficMeter, rate: int):
        self._meter = meter
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def admit(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._interval or not self._meter.busy(now):
            return
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


DATA_PLANE_FIRST: web.AppKey[DataPlaneFirst] = web.AppKey("data_plane_first")


@web.middleware
async def data_plane_first(request: web.Request, handler: Handler) -> web.StreamResponse:
    await request.app[DATA_PLANE_FIRST].admit()
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"data": {"status": "ok", "version": __version__}})


async def status(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    connected, disconnected = ctx.registry.counts(request[CALLER].scope)
    return web.json_response({"data": {
        "version": __version__, "clients_connected": connected,
        "clients_disconnected": disconnected, "fingerprint": ctx.fingerprint,
        "connect_url": ctx.connect_url, "multi_tenancy": ctx.config.server.multi_tenancy,
    }})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/api/v1/health", health),
    ("GET", "/api/v1/openapi.json", openapi),
    ("GET", "/api/v1/login", auth.login_get),
    ("POST", "/api/v1/login", auth.login_post),
    ("DELETE", "/api/v1/login", auth.login_delete),
    ("GET", "/api/v1/me", auth.me),
    ("GET", "/api/v1/status", status),
    ("GET", "/api/v1/clients", clients.list_clients),
    ("GET", "/api/v1/clients/{id}", clients.get_client),
    ("DELETE", "/api/v1/clients/{id}", clients.delete_client),
    ("PUT", "/api/v1/clients/{id}/tunnels", clients.put_tunnel),
    ("DELETE", "/api/v1/clients/{id}/tunnels/{tunnel_id}", clients.delete_tunnel),
    ("GET", "/api/v1/clients-auth", clients_auth.list_credentials),
    ("POST", "/api/v1/clients-auth", clients_auth.create_credential),
    ("DELETE", "/api/v1/clients-auth/{id}", clients_auth.delete_credential),
)


def build_api(ctx: ApiContext, authenticator: Authenticator) -> web.Application:
    app = web.Application(client_max_size=ctx.config.api.max_request_bytes,
                          middlewares=[data_plane_first, error_middleware,
                                       auth.auth_middleware])
    app[CONTEXT] = ctx
    app[AUTHENTICATOR] = authenticator
    app[clients.LISTINGS] = clients.ListingCache()
    app[DATA_PLANE_FIRST] = DataPlaneFirst(ctx.traffic,
                                           ctx.config.api.rate_while_tunnels_busy)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    if ctx.config.api.doc_root:
        app.router.add_get("/{path:.*}", static_files(Path(ctx.config.api.doc_root)))
    return app


def static_files(root: Path) -> Handler:
    """doc_root, served below every API route; /api/... never falls through to a file."""
    root = root.resolve()

    def locate(relative: str) -> Path | None:
        candidate = (root / (relative or "index.html")).resolve()
        if candidate.is_dir():
            candidate = candidate / "index.html"
        return candidate if candidate.is_relative_to(root) and candidate.is_file() else None

    async def handler(request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        if relative.startswith("api/"):
            raise NotFound("no such API endpoint", code="ERR_CODE_NOT_FOUND")
        found = await asyncio.to_thread(locate, relative)  # stat calls stay off the loop
        if found is None:
            raise web.HTTPNotFound()
        return web.FileResponse(found)

    return handler
