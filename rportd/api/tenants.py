"""/tenants, /tenants/install, /operator/status and /metrics: the operator's view and tools.

Every route here has the `operator` permission (api/operator.py lets only the operator key in).
Answers carry counts and quotas, never a tenant's clients, credentials or users themselves.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..auth.clients import Guard
from ..auth.passwords import check_new_password
from ..errors import BadRequest, Conflict, MethodNotAllowed, NotFound
from ..quotas import QuotaService, TenantSuspended
from ..store.base import Transaction
from ..tenant_admin import Install, install_tenant, remove_tenant
from ..tenants import (
    QUOTA_KINDS,
    STATUSES,
    SUSPENDED,
    Tenant,
    TenantTables,
    check_name,
    parse_quotas,
)
from .auth import CALLER, Caller, hash_new_password
from .context import CONTEXT

__all__ = ["TenantServices", "TENANT_SERVICES", "list_tenants", "create_tenant", "get_tenant",
           "patch_tenant", "delete_tenant", "install", "operator_status", "metrics",
           "suspended_gate", "refuse_suspended", "rows_quota"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_USERNAME_MAX = 150  # users.username is VARCHAR(150)
# no ':' (basic auth splits there), no control character or blank at either end
USERNAME = re.compile(r"[^:\x00-\x20\x7f]([^:]{0,148}[^:\x00-\x20\x7f])?")


@dataclass(frozen=True)
class TenantServices:
    tables: TenantTables
    quotas: QuotaService


TENANT_SERVICES: web.AppKey[TenantServices] = web.AppKey("tenant_services")


def _services(request: web.Request) -> TenantServices:
    return request.app[TENANT_SERVICES]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _require_tenancy(request: web.Request) -> None:
    """Tenants are the tenant columns of the auth tables: nothing to create or remove without."""
    if not request.app[CONTEXT].config.server.multi_tenancy:
        raise MethodNotAllowed("tenants need [server] multi_tenancy = true",
                               code="ERR_CODE_TENANCY_OFF")


def _name(request: web.Request, value: Any) -> str:
    return check_name(value, dns_label=bool(request.app[CONTEXT].config.api.tenant_domain))


class _Usage:
    """Per-tenant counts, gathered once per request."""

    def __init__(self, counts: dict[str, tuple[int, int, int]], credentials: dict[str, int],
                 users: dict[str, int], running: Callable[[str], int]):
        self._counts, self._credentials, self._users = counts, credentials, users
        self._running = running

    def of(self, tenant: str) -> dict[str, int]:
        connected, disconnected, tunnels = self._counts.get(tenant, (0, 0, 0))
        return {"clients_connected": connected, "clients_disconnected": disconnected,
                "credentials": self._credentials.get(tenant, 0),
                "users": self._users.get(tenant, 0), "tunnels": tunnels,
                "commands": self._running(tenant)}

    @property
    def orphaned(self) -> tuple[int, int]:
        connected, disconnected, _ = self._counts.get("", (0, 0, 0))
        return connected, disconnected


async def _usage(request: web.Request) -> _Usage:
    services, config = _services(request), request.app[CONTEXT].config
    tables = services.tables

    async def by_tenant(table: str) -> dict[str, int]:
        return await tables.counts_by_tenant(table) if table else {}

    return _Usage(request.app[CONTEXT].registry.tenant_counts(),
                  await by_tenant(config.server.auth_table),
                  await by_tenant(config.api.auth_user_table), _running_commands(request))


def _running_commands(request: web.Request) -> Callable[[str], int]:
    jobs = request.app[CONTEXT].jobs
    return jobs.running if jobs is not None else (lambda tenant: 0)


def _tenant_json(tenant: Tenant, usage: _Usage) -> dict[str, Any]:
    used = usage.of(tenant.name)
    against = {"clients": used["clients_connected"], "credentials": used["credentials"],
               "users": used["users"], "tunnels": used["tunnels"], "commands": used["commands"]}
    return {**tenant.to_json(), "usage": used,
            "quota_usage": {kind: {"used": against[kind], "quota": tenant.quotas.get(kind)}
                            for kind in QUOTA_KINDS}}


async def _existing(request: web.Request) -> Tenant:
    name = request.match_info["name"]
    tenant = await _services(request).tables.get(name) if len(name) <= 50 else None
    if tenant is None:
        raise NotFound("tenant not found", code="ERR_CODE_TENANT_NOT_FOUND")
    return tenant


async def refuse_suspended(request: web.Request, caller: Caller) -> None:
    """TenantSuspended (403 ERR_CODE_TENANT_SUSPENDED) for a user of a suspended tenant."""
    if not caller.scope.tenant:
        return
    quotas = request.app[TENANT_SERVICES].quotas
    suspended = quotas.suspended_now(caller.scope.tenant)  # the hot path: no coroutine
    if suspended is None:
        suspended = await quotas.suspended(caller.scope.tenant)
    if suspended:
        raise TenantSuspended()


@web.middleware
async def suspended_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After authentication: users of a suspended tenant get 403 ERR_CODE_TENANT_SUSPENDED
    (POST /login authenticates in its handler, and asks refuse_suspended there)."""
    caller = request.get(CALLER)
    if caller is not None:
        await refuse_suspended(request, caller)
    return await handler(request)


async def list_tenants(request: web.Request) -> web.Response:
    """Every tenant: recorded ones and those only the operator's tables name."""
    usage = await _usage(request)
    tenants = await _services(request).tables.all()
    return web.json_response({"data": [_tenant_json(t, usage) for t in tenants],
                              "meta": {"count": len(tenants)}})


async def get_tenant(request: web.Request) -> web.Response:
    tenant = await _existing(request)
    return web.json_response({"data": _tenant_json(tenant, await _usage(request))})


async def create_tenant(request: web.Request) -> web.Response:
    """A record for a new tenant, or for one the operator's tables name already (it gains
    quotas); 409 ERR_CODE_TENANT_EXISTS when it has a record."""
    _require_tenancy(request)
    body = await _body(request)
    name = _name(request, body.get("name"))
    quotas = parse_quotas(body.get("quotas", {}))
    tables = _services(request).tables
    existing = await tables.get(name)
    if existing is not None and existing.recorded:
        raise _exists(name)
    async with tables.store.transaction() as tx:
        await tables.insert(tx, name, quotas)
    _services(request).quotas.forget(name)
    return await _answer(request, name, status=201)


def _exists(name: str) -> Conflict:
    return Conflict(f"tenant {name!r} exists already", code="ERR_CODE_TENANT_EXISTS")


async def _answer(request: web.Request, name: str, status: int = 200) -> web.Response:
    tenant = await _services(request).tables.get(name)
    assert tenant is not None
    return web.json_response({"data": _tenant_json(tenant, await _usage(request))},
                             status=status)


async def patch_tenant(request: web.Request) -> web.Response:
    """{"quotas": {...}} (null removes a quota) and {"status": "active" | "suspended"}; an
    unrecorded tenant gets its record. Suspending closes the tenant's agents (they retry and are
    refused until it is active again) and refuses its users (403 ERR_CODE_TENANT_SUSPENDED)."""
    _require_tenancy(request)
    tenant = await _existing(request)
    body = await _body(request)
    unknown = set(body) - {"quotas", "status"}
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(sorted(unknown))}; use quotas, status")
    status = body.get("status", tenant.status)
    if status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}",
                         code="ERR_CODE_INVALID_STATUS")
    quotas = parse_quotas(body.get("quotas", {}), tenant.quotas)
    tables = _services(request).tables
    if not tenant.recorded:
        async with tables.store.transaction() as tx:
            await tables.insert(tx, tenant.name, quotas)
    await tables.update(tenant.name, quotas, status)
    _services(request).quotas.forget(tenant.name)
    if status == SUSPENDED:
        for session in request.app[CONTEXT].registry.sessions_of(tenant.name):
            session.close()
    return await _answer(request, tenant.name)


async def delete_tenant(request: web.Request) -> web.Response:
    """Remove every trace; 409 ERR_CODE_TENANT_HAS_CLIENTS while clients are connected,
    unless ?force=true (they are disconnected)."""
    _require_tenancy(request)
    tenant = await _existing(request)
    force = request.query.get("force", "false")
    if force not in ("true", "false", "1", "0"):
        raise BadRequest("force must be true or false")
    jobs = request.app[CONTEXT].jobs
    removed = await remove_tenant(_services(request).tables, request.app[CONTEXT].registry,
                                  tenant.name, force in ("true", "1"),
                                  jobs.forget_tenant if jobs is not None else None)
    _services(request).quotas.forget(tenant.name)
    return web.json_response({"data": {"name": tenant.name, "removed": removed}})


def _install_body(request: web.Request, body: dict[str, Any]) -> tuple[str, str, str]:
    name = _name(request, body.get("name"))
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise BadRequest(f"username must be 1-{_USERNAME_MAX} characters without ':' or "
                         "surrounding blanks", code="ERR_CODE_INVALID_USERNAME")
    if not isinstance(password, str) or not 8 <= len(password) <= 128:
        raise BadRequest("password must be 8-128 characters", code="ERR_CODE_INVALID_PASSWORD")
    check_new_password(password)
    return name, username, password


async def install(request: web.Request) -> web.Response:
    """{"name", "username", "password"[, "quotas"]}: the tenant and its first admin (group
    Administrators, every permission) in one transaction."""
    config = request.app[CONTEXT].config
    if not (config.server.multi_tenancy and config.api.auth_user_table):
        raise MethodNotAllowed("install needs multi_tenancy and [api] auth_user_table",
                               code="ERR_CODE_INSTALL_UNAVAILABLE")
    body = await _body(request)
    name, username, password = _install_body(request, body)
    quotas = parse_quotas(body.get("quotas", {}))
    stored = await hash_new_password(request, password)
    await install_tenant(_services(request).tables, config.api.auth_user_table,
                         config.api.auth_group_table,
                         Install(name, username, stored, quotas))
    _services(request).quotas.forget(name)
    answer = (await _answer(request, name, status=201))
    answer.headers["Location"] = f"/api/v1/tenants/{name}"
    return answer


async def operator_status(request: web.Request) -> web.Response:
    """Totals over every tenant, with the orphaned clients (a credential without a tenant)."""
    usage = await _usage(request)
    tenants = await _services(request).tables.all()
    counts = request.app[CONTEXT].registry.tenant_counts()
    orphaned = usage.orphaned
    return web.json_response({"data": {
        "tenants": len(tenants),
        "clients_connected": sum(c[0] for c in counts.values()),
        "clients_disconnected": sum(c[1] for c in counts.values()),
        "orphaned_clients_connected": orphaned[0],
        "orphaned_clients_disconnected": orphaned[1],
        "tunnels": sum(c[2] for c in counts.values()),
    }})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_GAUGES = (("clients_connected", "Connected clients"),
           ("clients_disconnected", "Disconnected clients kept"),
           ("credentials", "Client credentials"), ("users", "API users"),
           ("tunnels", "Tunnels"), ("commands", "Commands running"))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition: per-tenant gauges, quotas, orphaned clients."""
    usage = await _usage(request)
    tenants = await _services(request).tables.all()
    lines: list[str] = []
    for key, help_text in _GAUGES:
        lines += [f"# HELP rportd_tenant_{key} {help_text} per tenant.",
                  f"# TYPE rportd_tenant_{key} gauge"]
        lines += [f'rportd_tenant_{key}{{tenant="{_label(t.name)}"}} {usage.of(t.name)[key]}'
                  for t in tenants]
    lines += ["# HELP rportd_tenant_quota A tenant's quota (absent: unlimited).",
              "# TYPE rportd_tenant_quota gauge"]
    lines += [f'rportd_tenant_quota{{tenant="{_label(t.name)}",kind="{kind}"}} {limit}'
              for t in tenants for kind, limit in sorted(t.quotas.items())]
    connected, disconnected = usage.orphaned
    lines += ["# HELP rportd_orphaned_clients Clients whose credential has no tenant.",
              "# TYPE rportd_orphaned_clients gauge",
              f'rportd_orphaned_clients{{state="connected"}} {connected}',
              f'rportd_orphaned_clients{{state="disconnected"}} {disconnected}',
              "# HELP rportd_tenants Tenants known (recorded or named by the auth tables).",
              "# TYPE rportd_tenants gauge", f"rportd_tenants {len(tenants)}"]
    return web.Response(body=("\n".join(lines) + "\n").encode(), headers={
        "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def rows_quota(request: web.Request, tenant: str, kind: str) -> Guard:
    """The guard an inserting transaction runs first: QuotaExceeded (403) when the tenant's rows
    of `kind` ("credentials", "users") already fill its quota."""
    quotas = request.app[TENANT_SERVICES].quotas

    async def within_quota(tx: Transaction) -> None:
        await quotas.check_rows(tx, tenant, kind)

    return within_quota
