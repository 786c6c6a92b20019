"""Builds the API application: routes and middlewares."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .. import __version__

if TYPE_CHECKING:
    from ..app import Runtime

__all__ = ["build_api", "RUNTIME"]

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"data": {"status": "ok", "version": __version__}})


def build_api(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=runtime.config.api.max_request_bytes)
    app[RUNTIME] = runtime
    app.router.add_get("/api/v1/health", health)
    return app
