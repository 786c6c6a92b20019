"""/clients-auth: client credentials of the caller's tenant. Passwords go in (hashed with bcrypt
off the event loop) and never come out; a new credential takes the caller's tenant."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from ..auth.passwords import hash_password
from ..errors import BadRequest, Conflict, Forbidden, MethodNotAllowed, NotFound
from .auth import CALLER
from .context import CONTEXT

__all__ = ["list_credentials", "create_credential", "delete_credential"]

_ID = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")


def _writable(request: web.Request) -> None:
    ctx = request.app[CONTEXT]
    auth = ctx.client_auth
    if not ctx.config.server.auth_write or auth is None or not auth.writable:
        raise MethodNotAllowed("client credentials are read-only (auth_write = false or a "
                               "single/file auth source)", code="ERR_CODE_CLIENT_AUTH_RO")


async def list_credentials(request: web.Request) -> web.Response:
    auth = request.app[CONTEXT].client_auth
    ids = await auth.list_ids(request[CALLER].scope) if auth else []
    return web.json_response({"data": [{"id": auth_id} for auth_id in ids]})


async def create_credential(request: web.Request) -> web.Response:
    _writable(request)
    caller = request[CALLER]
    if caller.scope.sees_nothing:
        raise Forbidden("a user without a tenant cannot create client credentials",
                        code="ERR_CODE_NO_TENANT")
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be JSON: {\"id\": ..., \"password\": ...}") from None
    auth_id, password = (body.get("id"), body.get("password")) if isinstance(body, dict) else (0, 0)
    if not isinstance(auth_id, str) or not _ID.match(auth_id):
        raise BadRequest("id must be 1-100 characters of letters, digits, . _ @ -")
    if not isinstance(password, str) or not 8 <= len(password) <= 128:
        raise BadRequest("password must be 8-128 characters")
    stored = await asyncio.to_thread(hash_password, password)
    auth = request.app[CONTEXT].client_auth
    assert auth is not None
    # Credential ids are global (they are SSH usernames): an id taken in any tenant conflicts.
    if not await auth.create(auth_id, stored, caller.scope.tenant or ""):
        raise Conflict(f"client auth id {auth_id!r} already exists", code="ERR_CODE_ALREADY_EXIST")
    return web.json_response({"data": {"id": auth_id}}, status=201)


async def delete_credential(request: web.Request) -> web.Response:
    _writable(request)
    ctx, caller = request.app[CONTEXT], request[CALLER]
    auth_id = request.match_info["id"]
    in_use = [r.id for r in ctx.registry.list(caller.scope)
              if r.connected and r.client_auth_id == auth_id]
    if in_use:
        raise BadRequest(f"credential {auth_id!r} is used by connected client(s) "
                         f"{', '.join(sorted(in_use))}", code="ERR_CODE_CLIENT_AUTH_HAS_CLIENT")
    auth = ctx.client_auth
    assert auth is not None
    if not await auth.delete(auth_id, caller.scope):
        raise NotFound("client auth not found", code="ERR_CODE_CLIENT_AUTH_NOT_FOUND")
    return web.Response(status=204)
