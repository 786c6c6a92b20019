"""Audit of every write through the API, recorded in one middleware, and GET /auditlog.

Every request other than GET/HEAD/OPTIONS by an authenticated caller (and every request to a
route that needs a write permission, as the GET of /ws/commands) becomes one entry: the
caller, tenant, action (`METHOD /route/template`), target (the path's ids, else the created
object's id), result (`success` or the error code), source address and time. Bodies are never
recorded raw: only the keys in `_SAFE_KEYS` (names, ids, groups, scopes, permissions), never a
password or a token. Recording only queues the entry (audit.py), so the answer never waits on
the audit table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from ..audit import FILTERS, AuditEntry, AuditLog, AuditQuery
from ..errors import BadRequest, RportdError
from ..tenancy import Scope
from .auth import CALLER
from .authorize import route_permission
from .operator import OPERATOR

__all__ = ["AUDIT", "ACTOR", "audit_middleware", "list_auditlog", "list_all_auditlog",
           "audit_listing", "MAX_PAGE"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUDIT: web.AppKey[AuditLog] = web.AppKey("audit")
# (tenant, name) of a caller that is not a tenant's user: whoever authenticates such callers
# sets it, and their writes are audited like everyone's. The operator key (operator.py) is
# ("", "operator"): in no tenant, so only GET /operator/auditlog shows it.
ACTOR: web.RequestKey[tuple[str, str]] = web.RequestKey("audit_actor")
OPERATOR_ACTOR = ("", "operator")
MAX_PAGE = 1000
_READS = ("GET", "HEAD", "OPTIONS")
_SAFE_KEYS = ("id", "username", "name", "groups", "scopes", "permissions", "lifetime",
              "remote", "local", "scheme", "force")
_SECRET_WORDS = ("password", "token", "secret", "key", "auth")
_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?Z?)?$")


def _safe(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, list):
        return [_safe(v) for v in value[:64] if isinstance(v, str | int | float | bool)]
    return None


def _body_fields(raw: bytes, content_type: str) -> dict[str, Any]:
    try:
        if "json" in content_type:
            data = json.loads(raw)
        else:
            data = dict(parse_qsl(raw.decode("utf-8", "replace")))
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: _safe(data[k]) for k in _SAFE_KEYS if k in data}


def _query_fields(request: web.Request) -> dict[str, Any]:
    return {k: v[:200] for k, v in request.query.items()
            if not any(word in k.lower() for word in _SECRET_WORDS)}


async def _details(request: web.Request) -> dict[str, Any]:
    details: dict[str, Any] = {}
    query = _query_fields(request)
    if query:
        details["query"] = query
    # bounded_body (inside this middleware) has read the body already: this is its cache
    if request.body_exists and request.content_type != "application/octet-stream":
        body = _body_fields(await request.read(), request.content_type)
        if body:
            details["body"] = body
    return details


def _created_id(response: web.StreamResponse) -> str:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return ""
    try:
        data = json.loads(response.body).get("data")
    except (ValueError, AttributeError):
        return ""
    if isinstance(data, dict):
        for key in ("id", "username", "name"):
            if isinstance(data.get(key), str | int):
                return str(data[key])
    return ""


def _target(request: web.Request, details: dict[str, Any], created: str) -> str:
    """The path's ids, else the id the answer shows (a created object), else the body's."""
    ids = list(request.match_info.values())
    if ids:
        return "/".join(ids)
    if created:
        return created
    body = details.get("body", {})
    for key in ("id", "username", "name"):
        if isinstance(body.get(key), str):
            return str(body[key])
    return ""


def _action(request: web.Request) -> str:
    info = request.match_info
    template = info.route.resource.canonical if info.route.resource else request.path
    return f"{request.method} {template}"


def _who(request: web.Request) -> tuple[str, str] | None:
    caller = request.get(CALLER)
    if caller is not None:
        return caller.scope.tenant or "", caller.user.username
    if request.get(OPERATOR):
        return OPERATOR_ACTOR
    return request.get(ACTOR)  # None: a stranger's attempts are nobody's history


async def _record(request: web.Request, result: str, created: str) -> None:
    who = _who(request)
    if who is None:
        return
    details = await _details(request)
    caller = request.get(CALLER)
    if caller is not None and caller.personal is not None:
        details["token_id"] = caller.personal.id
    request.app[AUDIT].record(AuditEntry(
        tenant=who[0], username=who[1], action=_action(request),
        target=_target(request, details, created), result=result,
        source=request.remote or "", details=details))


def _result_of(exc: BaseException) -> str:
    if isinstance(exc, RportdError):
        return exc.code
    if isinstance(exc, web.HTTPException):
        return f"ERR_CODE_HTTP_{exc.status}"
    return "ERR_CODE_INTERNAL"


def _is_write(request: web.Request) -> bool:
    """Not a read method, or a route that needs a write permission whatever its method (GET
    /ws/commands runs commands: its upgrade is a GET)."""
    if request.method not in _READS:
        return True
    permission = route_permission(request)
    return permission is not None and permission.endswith(":write")


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/") or request.match_info.http_exception is not None \
            or not _is_write(request):
        return await handler(request)
    try:
        response = await handler(request)
    except BaseException as exc:
        if isinstance(exc, Exception):
            await _record(request, _result_of(exc), "")
        raise
    result = "success" if response.status < 400 else f"ERR_CODE_HTTP_{response.status}"
    await _record(request, result, _created_id(response))
    return response


def _number(request: web.Request, name: str, default: int, top: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > top:
        raise BadRequest(f"{name} must be a whole number up to {top}",
                         code="ERR_CODE_INVALID_REQUEST")
    return int(raw)


def _query(request: web.Request, allowed: tuple[str, ...] = FILTERS) -> AuditQuery:
    filters: dict[str, str] = {}
    for key, value in request.query.items():
        if key.startswith("filter[") and key.endswith("]"):
            name = key[7:-1]
            if name in allowed and not value:
                continue  # an empty filter filters nothing
            if name not in allowed:
                raise BadRequest(f"cannot filter by {name!r}; use one of {', '.join(allowed)}",
                                 code="ERR_CODE_INVALID_FILTER")
            if name in ("since", "until") and not _TIME.match(value):
                raise BadRequest(f"filter[{name}] must be a UTC time like "
                                 "2026-12-01T19:30:00Z", code="ERR_CODE_INVALID_FILTER")
            filters[name] = value[:255]
    sort = request.query.get("sort", "-at")
    if sort not in ("at", "-at"):
        raise BadRequest("sort must be at or -at", code="ERR_CODE_INVALID_REQUEST")
    limit = _number(request, "page[limit]", 100, MAX_PAGE)
    if limit < 1:
        raise BadRequest(f"page[limit] must be 1..{MAX_PAGE}", code="ERR_CODE_INVALID_REQUEST")
    return AuditQuery(filters, limit, _number(request, "page[offset]", 0, 10**9),
                      sort == "-at")


async def audit_listing(request: web.Request, scope: Scope,
                        allowed: tuple[str, ...] = FILTERS) -> web.Response:
    """The listing for any scope: `Scope(None)` is every tenant (the operator's view)."""
    entries, total = await request.app[AUDIT].entries(scope, _query(request, allowed))
    return web.json_response({"data": entries, "meta": {"count": total}})


async def list_auditlog(request: web.Request) -> web.Response:
    """GET /auditlog: the caller's tenant only."""
    return await audit_listing(request, request[CALLER].scope)


async def list_all_auditlog(request: web.Request) -> web.Response:
    """GET /operator/auditlog: every tenant's entries, `filter[tenant]` too (operator only)."""
    return await audit_listing(request, Scope(None), (*FILTERS, "tenant"))
