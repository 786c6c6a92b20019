"""Builds the API application: middlewares (errors as rport's JSON, authentication), routes,
OpenAPI, static files and the access log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

from aiohttp import web

from .. import __version__
from ..audit import AuditLog
from ..auth.permissions import RESOURCES, Grants
from ..auth.user_admin import GrantAdmin, UserAdmin
from ..errors import DatabaseUnavailable, NotFound, RportdError, StoreError
from ..store import Store
from . import (
    auditlog,
    auth,
    bodies,
    client_groups,
    clients,
    clients_auth,
    commands,
    me,
    tenants,
    tokens,
    user_groups,
    users,
    ws_commands,
)
from .admission import ANONYMOUS, FairAdmission
from .auth import AUTHENTICATOR, CALLER, Authenticator
from .authorize import GRANTS, ROUTE_PERMISSIONS, authorize_middleware
from .context import CONTEXT, ApiContext
from .http_server import error_body
from .openapi import classified, openapi_spec
from .operator import OPERATOR_KEY, PERMISSIONS, OperatorKey, operator_gate
from .tenants import TENANT_SERVICES, TenantServices

__all__ = ["build_api", "served_openapi", "ROUTES", "Route", "RESOURCES", "PERMISSION_KINDS", "ADMISSION"]

log = logging.getLogger("rportd.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUDIT_FLUSH_SECONDS = 3.0

_HTTP_CODES = {400: "ERR_CODE_INVALID_REQUEST", 401: "ERR_CODE_UNAUTHORIZED",
               404: "ERR_CODE_NOT_FOUND", 405: "ERR_CODE_METHOD_NOT_ALLOWED",
               408: "ERR_CODE_REQUEST_TIMEOUT", 413: "ERR_CODE_REQUEST_TOO_LARGE"}
_KEPT_HEADERS = ("Allow",)


def error_response(status: int, code: str, title: str, detail: str) -> web.Response:
    response = error_body(status, code, title, detail)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="rportd"'
    return response


def _http_error(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, f"ERR_CODE_HTTP_{exc.status}")
    response = error_response(exc.status, code, exc.reason, "")
    for name in _KEPT_HEADERS:  # 405 says which methods the path has
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


def _store_error(request: web.Request, exc: StoreError) -> web.Response:
    """The driver's text goes to the log, never to the caller (who may not even be logged in)."""
    log.warning("%s %s: database: %s", request.method, request.path, exc)
    if isinstance(exc, DatabaseUnavailable):
        response = error_response(exc.status, exc.code, exc.title,
                                  "the database is not answering; retry later")
        response.headers["Retry-After"] = "5"
        return response
    return error_response(500, "ERR_CODE_DATABASE_ERROR", "Database error",
                          "the database refused the operation; the server log has the details")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """rport's error shape for everything: our errors, aiohttp's, and the unexpected (500)."""
    try:
        response = await handler(request)
    except StoreError as exc:
        return _store_error(request, exc)
    except RportdError as exc:
        return error_response(exc.status, exc.code, exc.title, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc)
    except ConnectionError:
        log.debug("%s %s: the client hung up", request.method, request.path)
        raise
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


@web.middleware
async def route_errors_first(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A method the path does not have is 405 (with Allow) before authentication: which
    routes exist is public (openapi.json), and asking for credentials would hide the mistake."""
    unrouted = request.match_info.http_exception
    if isinstance(unrouted, web.HTTPMethodNotAllowed):
        raise unrouted
    return await handler(request)


ADMISSION: web.AppKey[FairAdmission] = web.AppKey("admission")


@web.middleware
async def data_plane_first(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After authentication: each caller queues for its own turn (admission.py)."""
    admission = request.app[ADMISSION]
    if not admission.admit_now(asyncio.get_running_loop().time()):
        caller = request.get(CALLER)
        key = ANONYMOUS if caller is None else ("user", caller.scope.tenant, caller.user.username)
        await admission.admit(key)
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
    return web.json_response(served_openapi())


def served_openapi() -> dict[str, object]:
    """openapi.py's document with each route's permission from ROUTES."""
    return classified(openapi_spec(), [(r.method, r.path, r.permission) for r in ROUTES],
                      RESOURCES)


class Route(NamedTuple):
    """One endpoint and the permission a caller needs for it: `public` (no login), `self` (any
    logged-in caller, about themselves), `operator` (the operator identity), or
    `<resource>:read` / `<resource>:write` (READ and WRITE of the tenant's resources)."""

    method: str
    path: str
    handler: Handler
    permission: str


PERMISSION_KINDS = ("public", "self", "operator")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/health", health, "public"),
    Route("GET", "/api/v1/openapi.json", openapi, "public"),
    Route("GET", "/api/v1/login", auth.login_get, "self"),
    Route("POST", "/api/v1/login", auth.login_post, "self"),
    Route("DELETE", "/api/v1/login", auth.login_delete, "self"),
    Route("GET", "/api/v1/me", me.me, "self"),
    Route("GET", "/api/v1/me/tokens", tokens.list_tokens, "self"),
    Route("POST", "/api/v1/me/tokens", tokens.create_token, "self"),
    Route("DELETE", "/api/v1/me/tokens/{id}", tokens.delete_token, "self"),
    Route("GET", "/api/v1/status", status, "self"),
    Route("GET", "/api/v1/clients", clients.list_clients, "clients:read"),
    Route("GET", "/api/v1/clients/{id}", clients.get_client, "clients:read"),
    Route("DELETE", "/api/v1/clients/{id}", clients.delete_client, "clients:write"),
    Route("PUT", "/api/v1/clients/{id}/tunnels", clients.put_tunnel, "tunnels:write"),
    Route("DELETE", "/api/v1/clients/{id}/tunnels/{tunnel_id}", clients.delete_tunnel,
          "tunnels:write"),
    Route("POST", "/api/v1/clients/{id}/commands", commands.post_client_command,
          "commands:write"),
    Route("GET", "/api/v1/clients/{id}/commands", commands.list_client_commands, "commands:read"),
    Route("GET", "/api/v1/clients/{id}/commands/{jid}", commands.get_client_command,
          "commands:read"),
    Route("POST", "/api/v1/clients/{id}/scripts", commands.post_client_script, "commands:write"),
    Route("POST", "/api/v1/commands", commands.post_multi_command, "commands:write"),
    Route("GET", "/api/v1/commands", commands.list_multi_commands, "commands:read"),
    Route("GET", "/api/v1/commands/{jid}", commands.get_multi_command, "commands:read"),
    Route("POST", "/api/v1/scripts", commands.post_multi_script, "commands:write"),
    # A GET that runs commands: it needs the write permission (the WebSocket upgrade is a GET).
    Route("GET", "/api/v1/ws/commands", ws_commands.commands_ws, "commands:write"),
    Route("GET", "/api/v1/clients-auth", clients_auth.list_credentials, "credentials:read"),
    Route("POST", "/api/v1/clients-auth", clients_auth.create_credential, "credentials:write"),
    Route("DELETE", "/api/v1/clients-auth/{id}", clients_auth.delete_credential,
          "credentials:write"),
    Route("GET", "/api/v1/users", users.list_users, "users:read"),
    Route("POST", "/api/v1/users", users.create_user, "users:write"),
    Route("PUT", "/api/v1/users/{username}", users.update_user, "users:write"),
    Route("PATCH", "/api/v1/users/{username}", users.update_user, "users:write"),
    Route("DELETE", "/api/v1/users/{username}", users.delete_user, "users:write"),
    Route("GET", "/api/v1/user-groups", user_groups.list_groups, "users:read"),
    Route("GET", "/api/v1/user-groups/{name}", user_groups.get_group, "users:read"),
    Route("PUT", "/api/v1/user-groups/{name}", user_groups.put_group, "users:write"),
    Route("DELETE", "/api/v1/user-groups/{name}", user_groups.delete_group, "users:write"),
    Route("GET", "/api/v1/auditlog", auditlog.list_auditlog, "auditlog:read"),
    Route("GET", "/api/v1/client-groups", client_groups.list_groups, "client-groups:read"),
    Route("POST", "/api/v1/client-groups", client_groups.create_group, "client-groups:write"),
    Route("GET", "/api/v1/client-groups/{id}", client_groups.get_group, "client-groups:read"),
    Route("PUT", "/api/v1/client-groups/{id}", client_groups.put_group, "client-groups:write"),
    Route("DELETE", "/api/v1/client-groups/{id}", client_groups.delete_group,
          "client-groups:write"),
    Route("GET", "/api/v1/tenants", tenants.list_tenants, "operator"),
    Route("POST", "/api/v1/tenants", tenants.create_tenant, "operator"),
    Route("POST", "/api/v1/tenants/install", tenants.install, "operator"),
    Route("GET", "/api/v1/tenants/{name}", tenants.get_tenant, "operator"),
    Route("PATCH", "/api/v1/tenants/{name}", tenants.patch_tenant, "operator"),
    Route("DELETE", "/api/v1/tenants/{name}", tenants.delete_tenant, "operator"),
    Route("GET", "/api/v1/operator/status", tenants.operator_status, "operator"),
    Route("GET", "/metrics", tenants.metrics, "operator"),
    Route("GET", "/api/v1/operator/auditlog", auditlog.list_all_auditlog, "operator"),
)


def build_api(ctx: ApiContext, authenticator: Authenticator, store: Store,
              tenant_services: TenantServices) -> web.Application:
    """Middlewares, outermost first: errors, 405s, the operator's key, who is calling, a
    suspended tenant, admission, the body, the audit of writes (it sees refusals too), then the
    route's permission (before any handler looks anything up)."""
    api = ctx.config.api
    app = web.Application(client_max_size=api.max_request_bytes,
                          middlewares=[error_middleware, route_errors_first, operator_gate,
                                       auth.auth_middleware, tenants.suspended_gate,
                                       data_plane_first, bodies.bounded_body,
                                       auditlog.audit_middleware, authorize_middleware])
    app[CONTEXT] = ctx
    app[AUTHENTICATOR] = authenticator
    app[TENANT_SERVICES] = tenant_services
    app[auth.LOGIN_CHECK] = tenants.refuse_suspended
    app[OPERATOR_KEY] = OperatorKey(api.operator_key, api.tenant_domain)
    app[PERMISSIONS] = {(route.method, route.path): route.permission for route in ROUTES}
    app[clients.LISTINGS] = clients.ListingCache(api.listing_cache_bytes)
    app[ADMISSION] = FairAdmission(ctx.traffic, api.rate_while_tunnels_busy)
    _permissions_and_audit(app, ctx, store)
    permissions: dict[web.AbstractRoute, str] = {}
    for route in ROUTES:
        permissions[app.router.add_route(route.method, route.path, route.handler)] = \
            route.permission
    if ctx.config.api.doc_root:
        files = app.router.add_get("/{path:.*}", static_files(Path(ctx.config.api.doc_root)))
        permissions.update({route: "public" for route in files.resource or ()})
    app[ROUTE_PERMISSIONS] = permissions
    return app


def _permissions_and_audit(app: web.Application, ctx: ApiContext, store: Store) -> None:
    api, multi_tenancy = ctx.config.api, ctx.config.server.multi_tenancy
    app[GRANTS] = Grants(store)
    app[user_groups.GRANT_ADMIN] = GrantAdmin(store)
    app[users.USER_ADMIN] = (UserAdmin(store, api.auth_user_table, api.auth_group_table,
                                       multi_tenancy) if api.auth_user_table else None)
    app[auditlog.AUDIT] = AuditLog(store)
    app.cleanup_ctx.append(_audit_writer)


async def _audit_writer(app: web.Application) -> AsyncIterator[None]:
    """The audit log's writer task, owned by the app: flushed (bounded) and cancelled at
    shutdown."""
    audit = app[auditlog.AUDIT]
    task = asyncio.create_task(audit.run(), name="audit-writer")
    try:
        yield
    finally:
        await audit.flush(AUDIT_FLUSH_SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
