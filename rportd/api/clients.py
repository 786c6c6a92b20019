"""/clients and their tunnels. Every lookup goes through the registry with the caller's scope,
so another tenant's client answers exactly like a missing one."""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import json
import socket
from collections import OrderedDict
from typing import Any

from aiohttp import web

from ..errors import BadRequest, NotFound
from ..registry import ClientRecord
from ..tunnel_spec import Remote
from .auth import CALLER
from .context import CONTEXT
from .tenants import TENANT_SERVICES

__all__ = ["ListingCache", "LISTINGS", "list_clients", "get_client", "delete_client",
           "put_tunnel", "delete_tunnel"]

FILTERABLE = ("id", "name", "os", "hostname", "tags", "connection_state", "os_kernel",
              "os_family", "client_auth_id", "os_arch", "os_full_name", "os_version",
              "os_virtualization_system", "os_virtualization_role", "cpu_family", "cpu_model",
              "cpu_model_name", "cpu_vendor", "num_cpus", "mem_total", "timezone", "ipv4", "ipv6",
              "labels", "version", "address", "session_id")
SORTABLE = ("id", "name", "os", "hostname", "connection_state", "disconnected_at")
MAX_PAGE = 1000


def _matches(body: dict[str, Any], field: str, patterns: list[str]) -> bool:
    """Any value (a list's items; a labels object's `key: value` pairs) matching any pattern."""
    value = body.get(field)
    if isinstance(value, dict):
        value = [f"{k}: {v}" for k, v in value.items()]
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
        if not (raw.isascii() and raw.isdigit()):
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


Query = tuple[tuple[tuple[str, tuple[str, ...]], ...], int | None, int, str]


def _normalised_query(query: Any) -> Query:
    """What a listing depends on, in one canonical form: unknown parameters, their order and
    repeated filter patterns do not make a different listing (nor a new cache entry)."""
    filters = tuple(sorted((f, tuple(sorted(set(p)))) for f, p in _filters(query).items()))
    limit, offset = _page(query)
    sort = query.get("sort", "id")
    if sort.lstrip("-") not in SORTABLE:
        raise BadRequest(f"cannot sort by {sort.lstrip('-')!r}; use one of {', '.join(SORTABLE)}")
    return filters, limit, offset, sort


class ListingCache:
    """Serialised /clients answers per (scope, normalised query), valid while the registry's
    version for that scope is unchanged, least recently used dropped first once they hold more
    than `max_bytes`. Serialising 100 clients costs far more than serving bytes."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[str | None, Query], tuple[int, bytes]] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: tuple[str | None, Query], version: int) -> bytes | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] != version:
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: tuple[str | None, Query], version: int, body: bytes) -> None:
        self._drop(key)
        if len(body) > self._max_bytes // 4:  # one huge listing must not flush all the others
            return
        self._entries[key] = (version, body)
        self._bytes += len(body)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str | None, Query]) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])


LISTINGS: web.AppKey[ListingCache] = web.AppKey("listings")


async def list_clients(request: web.Request) -> web.Response:
    scope, registry = request[CALLER].scope, request.app[CONTEXT].registry
    query = _normalised_query(request.query)
    key, version = (scope.tenant, query), registry.version(scope)
    body = request.app[LISTINGS].get(key, version)
    if body is None:
        body = json.dumps(_listing(request, query)).encode()
        request.app[LISTINGS].put(key, version, body)
    return web.Response(body=body, content_type="application/json")


def _listing(request: web.Request, query: Query) -> dict[str, Any]:
    filters, limit, offset, sort = query
    bodies = [_client_json(request, r) for r in request.app[CONTEXT].registry.list(
        request[CALLER].scope)]
    for field, patterns in filters:
        bodies = [b for b in bodies if _matches(b, field, list(patterns))]
    bodies = _sort(bodies, sort)
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
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
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


_ANY_HOST = ("", "0.0.0.0", "::", "*")


def _bindable(host: str) -> None:
    """Blocking: raise BadRequest unless `host` is an address of this machine (bind to port 0)."""
    unavailable = "ERR_CODE_LOCAL_ADDRESS_NOT_AVAILABLE"
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError, ValueError):
        raise BadRequest(f"local host {host!r} does not resolve to an address",
                         code=unavailable) from None
    with socket.socket(family, kind) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                return  # e.g. permissions: opening the tunnel will say what is wrong
            raise BadRequest(f"local host {host!r} is not an address of this server; use one "
                             "of its addresses or 0.0.0.0", code=unavailable) from None


async def put_tunnel(request: web.Request) -> web.Response:
    """Create a tunnel: listen on local (or a random pool port) and forward to remote."""
    record = _record(request)
    remote, check = _remote_from_query(request)
    if remote.lhost not in _ANY_HOST:
        await asyncio.to_thread(_bindable, remote.lhost)  # getaddrinfo may block
    ctx = request.app[CONTEXT]
    if remote.lport and ctx.ports.excluded(int(remote.lport)):
        raise BadRequest(f"local port {remote.lport} is in excluded_ports",
                         code="ERR_CODE_LOCAL_PORT_EXCLUDED")
    session = record.session
    if session is None:
        raise BadRequest("the client is not connected", code="ERR_CODE_CLIENT_NOT_CONNECTED")
    scope = request[CALLER].scope

    def tunnels_in_use() -> int:
        return sum(len(r.tunnels) for r in ctx.registry.list(scope))

    # held until the tunnel is in the registry, where tunnels_in_use counts it
    async with request.app[TENANT_SERVICES].quotas.hold(record.tenant, "tunnels", tunnels_in_use):
        tunnel = await session.open_tunnel(remote, check=check)
    return web.json_response({"data": tunnel})


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
