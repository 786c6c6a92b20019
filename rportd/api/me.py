"""GET /me: who the caller is, in which tenant, and what they may do there."""

from __future__ import annotations

from aiohttp import web

from .auth import CALLER
from .authorize import held

__all__ = ["me"]


async def me(request: web.Request) -> web.Response:
    """`permissions` is what this request may do: for a personal token, the owner's current
    permissions narrowed by the token's `scopes` (`account` shows the owner's own)."""
    caller = request[CALLER]
    user, rights = caller.user, await held(request)
    data: dict[str, object] = {"username": user.username, "groups": list(user.groups),
                               "tenant": user.tenant, "permissions": sorted(rights.effective)}
    if caller.personal is not None:
        data["token"] = {"id": caller.personal.id, "scopes": list(caller.personal.scopes),
                         "expires_at": caller.personal.expires_at}
        data["account_permissions"] = sorted(rights.account)
    return web.json_response({"data": data})
