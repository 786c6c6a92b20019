"""/users: the API users of the caller's tenant, managed by its administrators (`users:write`).

Usernames are one namespace for all tenants (logins name no tenant). So that no answer depends
on another tenant's users, under multi-tenancy a username created here is stored as
`<tenant tag>_<name>` (tenancy.tenant_tag, as for credential ids); the 201 shows the stored name
to log in with. A tenant can only create, and so only collide with, names in its own namespace.
Another tenant's user answers exactly like a missing one. Passwords are hashed with bcrypt on the
API's password pool and never shown. Nobody assigns a group, or edits a user, whose permissions
exceed their own (no escalation through user management; for a personal token, "their own" is
what the token may do, never its owner's whole account).
"""

from __future__ import annotations

import re

from aiohttp import web

from ..auth.passwords import check_new_password
from ..auth.permissions import Grants
from ..auth.user_admin import UserAdmin, UserRecord
from ..errors import BadRequest, Conflict, Forbidden, MethodNotAllowed, NotFound
from ..tenancy import Scope, same_identity, tenant_tag
from .auth import AUTHENTICATOR, CALLER, hash_new_password
from .authorize import GRANTS, held
from .bodies import json_object
from .tenants import rows_quota

__all__ = ["USER_ADMIN", "list_users", "create_user", "update_user", "delete_user",
           "check_groups", "GROUP_NAME", "stored_username"]

USER_ADMIN: web.AppKey[UserAdmin | None] = web.AppKey("user_admin")
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,150}$")
GROUP_NAME = re.compile(r"^[A-Za-z0-9._@-]([A-Za-z0-9 ._@-]{0,148}[A-Za-z0-9._@-])?$")
_MAX_STORED = 150
_MAX_GROUPS = 32
_SHAPE = '{"username": ..., "password": ..., "groups": [...]}'


def _admin(request: web.Request) -> UserAdmin:
    admin = request.app[USER_ADMIN]
    if admin is None:
        raise MethodNotAllowed("API users are read-only: they come from [api] auth or auth_file; "
                               "use auth_user_table to manage them here",
                               code="ERR_CODE_USERS_RO")
    return admin


def stored_username(name: str, scope: Scope) -> str:
    """The name as stored: prefixed with the caller's tenant tag under multi-tenancy (see the
    module docstring); a name that carries the caller's own tag already is not prefixed twice."""
    if scope.tenant is None:
        return name
    prefix = tenant_tag(scope.tenant) + "_"
    stored = name if name.startswith(prefix) else prefix + name
    if len(stored) > _MAX_STORED:
        raise BadRequest(f"username must be at most {_MAX_STORED - len(prefix)} characters in "
                         "this tenant (the stored name is prefixed with the tenant's tag)",
                         code="ERR_CODE_INVALID_USERNAME")
    return stored


def _password(value: object) -> str:
    if not isinstance(value, str) or not 8 <= len(value) <= 128:
        raise BadRequest("password must be 8-128 characters", code="ERR_CODE_INVALID_PASSWORD")
    check_new_password(value)
    return value


def _groups(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > _MAX_GROUPS or \
            not all(isinstance(g, str) and GROUP_NAME.match(g) for g in value):
        raise BadRequest(f"groups must be a list of at most {_MAX_GROUPS} group names (letters, "
                         "digits, spaces inside, . _ @ -)", code="ERR_CODE_INVALID_GROUPS")
    return tuple(sorted(set(value)))


async def check_groups(request: web.Request, groups: tuple[str, ...]) -> None:
    """Refuse what would give someone more than this request may do now (a personal token's
    scopes included: its holder could log in as the user it made, or with the password it set)."""
    grants: Grants = request.app[GRANTS]
    wanted = await grants.of(request[CALLER].scope, groups)
    if not wanted <= (await held(request)).effective:
        raise Forbidden("these groups hold permissions you do not hold",
                        code="ERR_CODE_EXCEEDS_OWN_PERMISSIONS")


async def list_users(request: web.Request) -> web.Response:
    admin, scope = request.app[USER_ADMIN], request[CALLER].scope
    if admin is not None:
        found = [u.to_json() for u in await admin.listing(scope)]
    else:
        source = request.app[AUTHENTICATOR].users
        found = [{"username": u.username, "groups": list(u.groups)}
                 for u in (await source.all() if source else []) if not scope.sees_nothing]
    return web.json_response({"data": found})


async def create_user(request: web.Request) -> web.Response:
    admin, caller = _admin(request), request[CALLER]
    if caller.scope.sees_nothing:
        raise Forbidden("a user without a tenant cannot create users", code="ERR_CODE_NO_TENANT")
    body = await json_object(request, _SHAPE)
    name = body.get("username")
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest("username must be 1-150 characters of letters, digits, . _ @ -",
                         code="ERR_CODE_INVALID_USERNAME")
    password, groups = _password(body.get("password")), _groups(body.get("groups", []))
    stored = stored_username(name, caller.scope)
    await check_groups(request, groups)
    tenant = caller.scope.tenant or ""
    if not await admin.create(stored, await hash_new_password(request, password), tenant, groups,
                              rows_quota(request, tenant, "users")):
        raise Conflict(f"user {stored!r} already exists", code="ERR_CODE_ALREADY_EXIST")
    return web.json_response({"data": {"username": stored, "groups": list(groups)}},
                             status=201)


async def _target(request: web.Request, admin: UserAdmin) -> UserRecord:
    user = await admin.get(request.match_info["username"], request[CALLER].scope)
    if user is None:
        raise NotFound("user not found", code="ERR_CODE_USER_NOT_FOUND")
    grants: Grants = request.app[GRANTS]
    if not await grants.of(request[CALLER].scope, user.groups) <= (await held(request)).effective:
        raise Forbidden("this user holds permissions you do not hold",
                        code="ERR_CODE_EXCEEDS_OWN_PERMISSIONS")
    return user


async def update_user(request: web.Request) -> web.Response:
    """PUT or PATCH: {"password"} and/or {"groups"} (what is left out stays)."""
    admin = _admin(request)
    body = await json_object(request, '{"password": ..., "groups": [...]}')
    if "password" not in body and "groups" not in body:
        raise BadRequest("send password and/or groups", code="ERR_CODE_INVALID_REQUEST")
    password = _password(body["password"]) if "password" in body else None
    groups = _groups(body["groups"]) if "groups" in body else None
    user = await _target(request, admin)
    if groups is not None:
        await check_groups(request, groups)
    stored = await hash_new_password(request, password) if password is not None else None
    await admin.update(user, stored, groups)
    return web.Response(status=204)


async def delete_user(request: web.Request) -> web.Response:
    admin, caller = _admin(request), request[CALLER]
    user = await _target(request, admin)
    if same_identity(user.username, caller.user.username):
        raise BadRequest("you cannot delete yourself", code="ERR_CODE_CANNOT_DELETE_SELF")
    if not await admin.delete(user):
        raise NotFound("user not found", code="ERR_CODE_USER_NOT_FOUND")
    return web.Response(status=204)
