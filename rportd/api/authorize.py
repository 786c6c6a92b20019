"""Route permissions enforced in one place: a middleware after authentication reads the
permission the matched route names (app.ROUTES) and refuses a caller who does not hold it.

It runs before the handler, so before any lookup: a forbidden write answers the same 403 for an
object of the caller's tenant, of another tenant or of nobody (no existence oracle). A route
under /api/ that names no permission is refused (deny by default). `operator` routes are left
to the operator's authentication (they are not a tenant user's to hold).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ..auth.permissions import ALL, Grants, names
from ..auth.users import SingleUser
from ..errors import Forbidden
from .auth import AUTHENTICATOR, CALLER, Caller

__all__ = ["Held", "ROUTE_PERMISSIONS", "GRANTS", "authorize_middleware", "held",
           "route_permission", "FREE_KINDS"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FREE_KINDS = ("public", "self", "operator")

ROUTE_PERMISSIONS: web.AppKey[dict[web.AbstractRoute, str]] = web.AppKey("route_permissions")
GRANTS: web.AppKey[Grants] = web.AppKey("grants")


@dataclass(frozen=True)
class Held:
    """What the caller's account holds, and what this request may use (narrowed by a personal
    token's scopes: never more than the account holds now)."""

    account: frozenset[str]
    effective: frozenset[str]
    scopes: tuple[str, ...] | None = None


_HELD: web.RequestKey[Held] = web.RequestKey("held")


async def _account(request: web.Request, caller: Caller) -> frozenset[str]:
    if isinstance(request.app[AUTHENTICATOR].users, SingleUser):
        return ALL  # `[api] auth`: its one user is the administrator
    return await request.app[GRANTS].of(caller.scope, caller.user.groups)


async def held(request: web.Request) -> Held:
    """The caller's permissions, computed once per request."""
    if _HELD in request:
        return request[_HELD]
    caller = request[CALLER]
    account = await _account(request, caller)
    if caller.personal is None:
        result = Held(account, account)
    else:
        scopes = caller.personal.scopes
        result = Held(account, account & names(scopes), scopes)
    request[_HELD] = result
    return result


def route_permission(request: web.Request) -> str | None:
    """The permission the matched route names; None when nothing matched (404/405 follow)."""
    if request.match_info.http_exception is not None:
        return None
    return request.app[ROUTE_PERMISSIONS].get(request.match_info.route, "")


@web.middleware
async def authorize_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    permission = route_permission(request)
    if permission is None or permission in FREE_KINDS:
        return await handler(request)
    if not permission or CALLER not in request:
        # no permission named, or not a tenant's user (the operator key reaches no tenant route)
        raise Forbidden("this route is not yours to call", code="ERR_CODE_FORBIDDEN")
    if permission not in (await held(request)).effective:
        raise Forbidden(f"your permissions do not include {permission}",
                        code="ERR_CODE_FORBIDDEN")
    return await handler(request)
