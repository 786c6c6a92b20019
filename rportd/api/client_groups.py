"""/client-groups: rport's client groups of the caller's tenant, with their current members.
Every call goes through `ClientGroups` with the caller's scope, so another tenant's group answers
exactly like a missing one, and a group only ever lists the caller's tenant's clients."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..client_groups import ClientGroup, parse_group
from .auth import CALLER
from .bodies import read_json
from .context import CONTEXT

__all__ = ["list_groups", "create_group", "get_group", "put_group", "delete_group"]


async def _one_json(request: web.Request, group: ClientGroup) -> dict[str, Any]:
    groups = request.app[CONTEXT].groups
    return (await groups.to_json(request[CALLER].scope, [group]))[0]


async def list_groups(request: web.Request) -> web.Response:
    scope, groups = request[CALLER].scope, request.app[CONTEXT].groups
    found = await groups.to_json(scope, await groups.find_all(scope))
    return web.json_response({"data": found, "meta": {"count": len(found)}})


async def create_group(request: web.Request) -> web.Response:
    group = parse_group(await read_json(request))
    await request.app[CONTEXT].groups.create(request[CALLER].scope, group)
    return web.json_response({"data": await _one_json(request, group)}, status=201)


async def get_group(request: web.Request) -> web.Response:
    scope, groups = request[CALLER].scope, request.app[CONTEXT].groups
    group = await groups.get(scope, request.match_info["id"])
    return web.json_response({"data": await _one_json(request, group)})


async def put_group(request: web.Request) -> web.Response:
    """rport's PUT: replaces the group, or creates it; 204 either way."""
    group = parse_group(await read_json(request), path_id=request.match_info["id"])
    await request.app[CONTEXT].groups.save(request[CALLER].scope, group)
    return web.Response(status=204)


async def delete_group(request: web.Request) -> web.Response:
    await request.app[CONTEXT].groups.delete(request[CALLER].scope, request.match_info["id"])
    return web.Response(status=204)
