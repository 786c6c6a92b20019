"""/clients-auth: client credentials of the caller's tenant. Passwords go in (hashed with bcrypt
on the API's password pool) and never come out; a new credential takes the caller's tenant.

Credential ids are SSH usernames, one namespace for all tenants. So that no answer depends on
another tenant's data, under multi-tenancy an id created here is stored as
`<tenant tag>_<id>` (tenancy.tenant_tag: a slug of the tenant plus a hash of it, lower-case), and
the 201 shows the stored id the agent must use. A tenant can only create (and so probe) ids in its
own namespace; `J` and `j` get different tags even on case-insensitive tables."""

from __future__ import annotations

import re

from aiohttp import web

from ..auth.passwords import check_new_password
from ..errors import BadRequest, Conflict, Forbidden, MethodNotAllowed, NotFound
from ..tenancy import Scope, tenant_tag
from .auth import CALLER, hash_new_password
from .context import CONTEXT
from .tenants import rows_quota

__all__ = ["list_credentials", "create_credential", "delete_credential"]

_ID = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")
_MAX_STORED_ID = 100  # rport's clients_auth.id is VARCHAR(100)


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


def _stored_id(auth_id: str, scope: Scope) -> str:
    """The id as stored: prefixed with the caller's tenant tag under multi-tenancy (see the
    module docstring); an id that already carries the caller's own tag is not prefixed twice."""
    if scope.tenant is None:
        return auth_id
    prefix = tenant_tag(scope.tenant) + "_"
    stored = auth_id if auth_id.startswith(prefix) else prefix + auth_id
    if len(stored) > _MAX_STORED_ID:
        raise BadRequest(f"id must be at most {_MAX_STORED_ID - len(prefix)} characters in this "
                         "tenant (the stored id is prefixed with the tenant's tag)")
    return stored


async def _new_credential(request: web.Request) -> tuple[str, str]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be JSON: {\"id\": ..., \"password\": ...}") from None
    auth_id, password = (body.get("id"), body.get("password")) if isinstance(body, dict) else (0, 0)
    if not isinstance(auth_id, str) or not _ID.match(auth_id):
        raise BadRequest("id must be 1-100 characters of letters, digits, . _ @ -")
    if not isinstance(password, str) or not 8 <= len(password) <= 128:
        raise BadRequest("password must be 8-128 characters")
    check_new_password(password)
    return auth_id, password


async def create_credential(request: web.Request) -> web.Response:
    _writable(request)
    caller = request[CALLER]
    if caller.scope.sees_nothing:
        raise Forbidden("a user without a tenant cannot create client credentials",
                        code="ERR_CODE_NO_TENANT")
    auth_id, password = await _new_credential(request)
    stored_id = _stored_id(auth_id, caller.scope)
    stored = await hash_new_password(request, password)
    auth = request.app[CONTEXT].client_auth
    assert auth is not None
    tenant = caller.scope.tenant or ""
    # Under multi-tenancy a conflict can only be with the caller's own namespace.
    if not await auth.create(stored_id, stored, tenant, rows_quota(request, tenant, "credentials")):
        raise Conflict(f"client auth id {stored_id!r} already exists",
                       code="ERR_CODE_ALREADY_EXIST")
    return web.json_response({"data": {"id": stored_id}}, status=201)


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
