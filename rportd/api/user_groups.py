"""/user-groups: the groups of the caller's tenant and the permissions granted to each.

A group exists in a tenant when it is granted something (a `group_permissions` row, even an
empty list) or has members there; `Administrators` always exists, holds `*` and cannot be changed
or deleted. Granting any group anything makes the tenant enforce grants (auth/permissions.py).
Another tenant's group answers exactly like a missing one.
"""

from __future__ import annotations

from aiohttp import web

from ..auth.permissions import ADMINISTRATORS, ALL, Grants, names, parse_names
from ..auth.user_admin import GrantAdmin
from ..errors import BadRequest, Forbidden, NotFound
from .auth import CALLER
from .authorize import GRANTS, held
from .bodies import json_object
from .users import GROUP_NAME, USER_ADMIN

__all__ = ["GRANT_ADMIN", "list_groups", "get_group", "put_group", "delete_group"]

GRANT_ADMIN: web.AppKey[GrantAdmin] = web.AppKey("grant_admin")


def _tenant(request: web.Request) -> str:
    """The tenant key of the caller's groups ('' without multi-tenancy)."""
    return request[CALLER].scope.tenant or ""


async def _groups(request: web.Request) -> dict[str, dict[str, object]]:
    if request[CALLER].scope.sees_nothing:
        return {}
    tenant, grants = _tenant(request), request.app[GRANTS]
    granted = await grants.of_tenant(tenant)
    admin = request.app[USER_ADMIN]
    members = await admin.members(tenant) if admin is not None else {}
    found = {name: {"name": name, "permissions": list(perms), "members": members.get(name, 0)}
             for name, perms in granted.items()}
    for name, count in members.items():
        found.setdefault(name, {"name": name, "permissions": [], "members": count})
    found[ADMINISTRATORS] = {"name": ADMINISTRATORS, "permissions": ["*"],
                             "members": members.get(ADMINISTRATORS, 0)}
    return found


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not GROUP_NAME.match(name):
        raise BadRequest("a group name is letters, digits, spaces inside, . _ @ -",
                         code="ERR_CODE_INVALID_GROUPS")
    return name


def _not_administrators(name: str) -> None:
    if name == ADMINISTRATORS:
        raise Forbidden("Administrators always holds every permission; it cannot be changed",
                        code="ERR_CODE_USER_GROUP_FIXED")


async def list_groups(request: web.Request) -> web.Response:
    groups = await _groups(request)
    return web.json_response({"data": [groups[k] for k in sorted(groups)]})


async def get_group(request: web.Request) -> web.Response:
    found = (await _groups(request)).get(_name(request))
    if found is None:
        raise NotFound("user group not found", code="ERR_CODE_USER_GROUP_NOT_FOUND")
    return web.json_response({"data": found})


async def put_group(request: web.Request) -> web.Response:
    """{"permissions": [...]}: the group's grant, created or replaced."""
    name = _name(request)
    body = await json_object(request, '{"permissions": ["clients:read", ...]}')
    permissions = parse_names(body.get("permissions"), "permissions")
    _not_administrators(name)
    if request[CALLER].scope.sees_nothing:
        raise Forbidden("a user without a tenant has no groups", code="ERR_CODE_NO_TENANT")
    if not names(permissions) <= (await held(request)).effective:
        raise Forbidden("you cannot grant permissions you do not hold",
                        code="ERR_CODE_EXCEEDS_OWN_PERMISSIONS")
    await request.app[GRANT_ADMIN].put(_tenant(request), name, permissions)
    grants: Grants = request.app[GRANTS]
    grants.forget()
    return web.json_response({"data": (await _groups(request))[name]})


async def delete_group(request: web.Request) -> web.Response:
    """The grant and the memberships of the caller's tenant."""
    name = _name(request)
    _not_administrators(name)
    if name not in await _groups(request):
        raise NotFound("user group not found", code="ERR_CODE_USER_GROUP_NOT_FOUND")
    tenant = _tenant(request)
    granted = await request.app[GRANTS].of_tenant(tenant)
    if set(granted) == {name} and (await held(request)).effective != ALL:
        # the tenant's last grant: without it everyone falls back to rport's defaults
        raise Forbidden("only an administrator can remove the tenant's last grant",
                        code="ERR_CODE_EXCEEDS_OWN_PERMISSIONS")
    await request.app[GRANT_ADMIN].delete(tenant, name)
    admin = request.app[USER_ADMIN]
    if admin is not None:
        await admin.drop_group(tenant, name)
    request.app[GRANTS].forget()
    return web.Response(status=204)
