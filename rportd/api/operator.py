"""The operator identity and the Host rules: who may reach `operator` routes, and which routes a
request's Host may reach when `[api] tenant_domain` is set.

The operator is `Authorization: Bearer <[api] operator_key>`, compared in constant time (as
SHA-256 digests, so not even the key's length shows) and never logged. It reaches the routes
whose permission is `operator` and the public ones, nothing else: no tenant's clients, jobs or
credentials (separation of duties). Anything but the key on an operator route is 401 at once,
before any user lookup, so operator routes tell nobody whether a username or password is right.

With tenant_domain: the bare domain (and any host that is not one of its subdomains) serves the
operator routes and the public ones; a tenant's subdomain serves the tenant routes and the public
ones, and binds the request to that tenant (auth.py refuses users of other tenants exactly as a
wrong password). Other combinations answer 421 ERR_CODE_MISDIRECTED_REQUEST.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import RportdError, Unauthorized
from ..tenants import HostBinding, tenant_for_host

__all__ = ["OPERATOR", "HOST_TENANT", "PERMISSIONS", "OperatorKey", "OPERATOR_KEY",
           "operator_gate", "Misdirected", "OperatorOnly"]

log = logging.getLogger("rportd.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPERATOR: web.RequestKey[bool] = web.RequestKey("operator")
# The tenant the Host names (tenant_domain on, a tenant's subdomain); absent otherwise.
HOST_TENANT: web.RequestKey[str] = web.RequestKey("host_tenant")
# (method, path template) -> permission, from app.ROUTES
PERMISSIONS: web.AppKey[dict[tuple[str, str], str]] = web.AppKey("permissions")


class Misdirected(RportdError):
    status = 421
    code = "ERR_CODE_MISDIRECTED_REQUEST"
    title = "Misdirected request"


class OperatorOnly(RportdError):
    status = 403
    code = "ERR_CODE_OPERATOR_FORBIDDEN"
    title = "Forbidden"


class OperatorKey:
    """The configured key, kept only as a digest."""

    def __init__(self, key: str, tenant_domain: str = ""):
        self._digest = hashlib.sha256(key.encode()).digest() if key else None
        self.tenant_domain = tenant_domain

    def matches(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if self._digest is None or scheme.lower() not in ("bearer", "bearer:"):
            return False
        offered = hashlib.sha256(value.strip().encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(offered, self._digest)


OPERATOR_KEY: web.AppKey[OperatorKey] = web.AppKey("operator_key")


def _permission(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return None
    return request.app[PERMISSIONS].get((request.method, resource.canonical))


def _check_host(binding: HostBinding, permission: str, domain: str) -> None:
    if not binding.active or permission == "public":
        return
    if binding.bare and permission != "operator":
        raise Misdirected(f"tenant endpoints are served on <tenant>.{domain}")
    if binding.tenant is not None and permission == "operator":
        raise Misdirected(f"the operator API is served on {domain}")


@web.middleware
async def operator_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before authentication: the Host rules, then the operator key."""
    permission = _permission(request)
    if permission is None:  # not a route (static files, 404): nothing to decide here
        return await handler(request)
    key = request.app[OPERATOR_KEY]
    # the header itself: aiohttp's request.host falls back to socket.getfqdn(), a blocking
    # DNS lookup, when a request has no Host
    binding = tenant_for_host(request.headers.get("Host", ""), key.tenant_domain)
    _check_host(binding, permission, key.tenant_domain)
    if binding.tenant is not None:
        request[HOST_TENANT] = binding.tenant
    is_operator = key.matches(request.headers.get("Authorization", ""))
    if permission == "operator":
        if not is_operator:
            log.info("operator route %s %s refused from %s: no valid operator key",
                     request.method, request.path, request.remote)
            raise Unauthorized("this endpoint needs the operator key as Authorization: "
                               "Bearer <key>", code="ERR_CODE_OPERATOR_KEY_REQUIRED")
        request[OPERATOR] = True
    elif is_operator and permission != "public":
        raise OperatorOnly("the operator key reaches no tenant's clients, jobs, credentials or "
                           "users; log in as a user of the tenant")
    return await handler(request)
