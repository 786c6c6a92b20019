"""/clients and their tunnels. Every lookup goes through the registry with the caller's scope,
so another tenant's client answers exactly like a missing one."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from aiohttp import web

from ..errors import BadRequest, NotFound
from ..registry import ClientRecord
from ..tunnel_spec import Remote
from .auth import CALLER
from .context import CONTEXT

__all__ = ["ListingCache", "LISTINGS", "list_clients", "get_client", "delete_client",
           "put_tunnel", "delete_tunnel"]

FILTERABLE = ("id", "name", "os", "hostname", "tags", "connection_state", "os_kernel",
              "os_family", "client_auth_id")
SORTABLE = ("id", "name", "os", "hostname", "connection_state", "disconnected_at")
MAX_PAGE = 1000


def _matches(body: dict[str, Any], field: str, patterns: list[str]) -> bool:
    value = body.get(field)
    values = value if isinstance(value, list) else [value]
    return any(fnmatch.fnmatchcase(str(v), p) for v in values for p in patterns)


def _filters(query: Any) -> dict[str, list[str]]:
    found = {}
    for key, raw in query.items():
        if key.startswith("filter[") and key.endswith("]"):
            field = key[7:-1]
            if field not in FILTERABLE:
                raise BadRequest(f"cannot filter by {field!r}; use one of {', '.join(FILTERABLE)}")
            found[field] = [p for p in raw.split(",") if p]
    return found


def _page(query: Any) -> tuple[int | None, int]:
    def number(name: str) -> int | None:
        raw = query.get(name)
        if raw is None:
            return None
        if not raw.isdigit():
            raise BadRequest(f"{name} must be a whole number")
        return int(raw)

    limit, offset = number("page[limit]"), number("page[offset]") or 0
    if limit is not None and not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"page[limit] must be 1..{MAX_PAGE}")
    return limit, offset


def _sort(bodies: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    descending = sort.startswith("-")
    field = sort.lstrip("-")
    if field not in SORTABLE:
        raise BadRequest(f"cannot sort by {field!r}; use one of {', '.join(SORTABLE)}")
    return sorted(bodies, key=lambda b: str(b.get(field) or "").lower(), reverse=descending)


def _client_json(request: web.Request, record: ClientRecord) -> dict[str, Any]:
    ctx = request.app[CONTEXT]
    return record.to_json(with_tenant=ctx.config.server.multi_tenancy)


class ListingCache:
    """Serialised /clients answers per (scope, query), valid while the registry's version for
    that scope is unchanged. Serialising 100 clients costs far more than serving bytes."""

    def __init__(self, size: int = 4096):
        self._size = size
        self._entries: dict[tuple[str | None, str], tuple[int, bytes]] = {}

    def get(self, key: tuple[str | None, str], version: int) -> bytes | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] == version else None

    def put(self, key: tuple[str | None, str], version: int, body: bytes) -> None:
        if len(self._entries) >= self._size:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (version, body)


LISTINGS: web.AppKey[ListingCache] = web.AppKey("listings")


async def list_clients(request: web.Request) -> web.Response:
    scope, registry = request[CALLER].scope, request.app[CONTEXT].registry
    key, version = (scope.tenant, request.query_string), registry.version(scope)
    body = request.app[LISTINGS].get(key, version)
    if body is None:
        body = json.dumps(_listing(request)).encode()
        request.app[LISTINGS].put(key, version, body)
    return web.Response(body=body, content_type="application/json")


def _listing(request: web.Request) -> dict[str, Any]:
    filters, (limit, offset) = _filters(request.query), _page(request.query)
    bodies = [_client_json(request, r) for r in request.app[CONTEXT].registry.list(
        request[CALLER].scope)]
    for field, patterns in filters.items():
        bodies = [b for b in bodies if _matches(b, field, patterns)]
    bodies = _sort(bodies, request.query.get("sort", "id"))
    total = len(bodies)
    bodies = bodies[offset:] if limit is None else bodies[offset:offset + limit]
    return {"data": bodies, "meta": {"count": total}}


def _record(request: web.Request) -> ClientRecord:
    return request.app[CONTEXT].registry.get(request[CALLER].scope, request.match_info["id"])


async def get_client(request: web.Request) -> web.Response:
    return web.json_response({"data": _client_json(request, _record(request))})


async def delete_client(request: web.Request) -> web.Response:
    await request.app[CONTEXT].registry.delete(request[CALLER].scope, request.match_info["id"])
    return web.Response(status=204)


def _host_port(text: str, name: str, default_host: str) -> tuple[str, str]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise BadRequest(f"{name} must be [host:]port with a port 1..65535, got {text!r}")
    return host.strip("[]") or default_host, port


def _remote_from_query(request: web.Request) -> tuple[Remote, bool]:
    query = request.query
    if not query.get("remote"):
        raise BadRequest("remote=[host:]port is required")
    rhost, rport = _host_port(query["remote"], "remote", "127.0.0.1")
    lhost, lport = "0.0.0.0", ""
    if query.get("local"):
        lhost, lport = _host_port(query["local"], "local", "0.0.0.0")
    remote = Remote(lhost, lport, rhost, rport, lport_random=not lport,
                    scheme=query.get("scheme") or None, acl=query.get("acl") or None)
    remote.validate()
    check = query.get("check_port", "1") not in ("0", "false")
    return remote, check


async def put_tunnel(request: web.Request) -> web.Response:
    """Create a tunnel: listen on local (or a random pool port) and forward to remote."""
    record = _record(request)
    remote, check = _remote_from_query(request)
    ctx = request.app[CONTEXT]
    if remote.lport and ctx.ports.excluded(int(remote.lport)):
        raise BadRequest(f"local port {remote.lport} is in excluded_ports",
                         code="ERR_CODE_LOCAL_PORT_EXCLUDED")
    session = record.session
    if session is None:
        raise BadRequest("the client is not connected", code="ERR_CODE_CLIENT_NOT_CONNECTED")
    return web.json_response({"data": await session.open_tunnel(remote, check=check)})


async def delete_tunnel(request: web.Request) -> web.Response:
    record = _record(request)
    tunnel_id = request.match_info["tunnel_id"]
    ctx = request.app[CONTEXT]
    session = record.session
    removed = (await session.remove_tunnel(tunnel_id) if session is not None
               else await ctx.registry.forget_tunnel(record, tunnel_id))
    if not removed:
        raise NotFound("tunnel not found", code="ERR_CODE_TUNNEL_NOT_FOUND")
    return web.Response(status=204)
