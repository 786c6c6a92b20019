"""Who is calling: basic auth or bearer tokens, and the caller's scope.

Password logins are throttled inside the auth layer (auth/gate.py: 429 when refused); bearer
tokens never touch the throttle, and a token is accepted only for the account generation it was
issued to (auth/tokens.py).

Every authenticated request carries a `Caller` whose `scope` (tenancy.py) is what the handlers
pass to the registry and the credential store; a handler never builds a scope itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from ..auth.passwords import hash_password
from ..auth.personal_tokens import PersonalToken, PersonalTokens, is_personal
from ..auth.tokens import DEFAULT_LIFETIME, MAX_LIFETIME, TokenClaims, TokenIssuer
from ..auth.users import User, UserSource
from ..errors import BadRequest, Forbidden, Unauthorized
from ..tenancy import Scope
from .operator import HOST_TENANT, OPERATOR

__all__ = ["Caller", "Authenticator", "CALLER", "AUTHENTICATOR", "LOGIN_CHECK", "auth_middleware",
           "login_get", "login_post", "login_delete", "hash_new_password"]

log = logging.getLogger("rportd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PUBLIC = {("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/health"), ("POST", "/api/v1/login")}
# Browsers cannot set headers on a WebSocket: rport takes the token from `access_token` there.
_QUERY_TOKEN = {("GET", "/api/v1/ws/commands")}


@dataclass(frozen=True)
class Caller:
    user: User
    scope: Scope
    token: TokenClaims | None = None
    personal: PersonalToken | None = None  # a personal token (`/me/tokens`): scoped


class Authenticator:
    """Turns credentials into a Caller; shared by the middleware and POST /login."""

    def __init__(self, users: UserSource | None, tokens: TokenIssuer, multi_tenancy: bool,
                 personal: PersonalTokens | None = None):
        self.users = users
        self.tokens = tokens
        self.personal = personal
        self._multi_tenancy = multi_tenancy

    def _caller(self, user: User, token: TokenClaims | None = None,
                personal: PersonalToken | None = None) -> Caller:
        return Caller(user, Scope.for_user(self._multi_tenancy, user.tenant), token, personal)

    async def with_password(self, username: str, password: str, address: str,
                            tenant: str | None = None) -> Caller:
        """LoginRefused (429) or PoolBusy (503) from the auth layer pass through. `tenant`: the
        tenant the request's Host names; a user of another tenant is refused as a wrong password."""
        user = (await self.users.authenticate(username, password, address, tenant)
                if self.users else None)
        if user is None:
            log.info("failed API login for %r from %s", username, address)
            raise Unauthorized("invalid username or password", code="ERR_CODE_UNAUTHORIZED")
        return self._caller(user)

    async def with_token(self, token: str, tenant: str | None = None) -> Caller:
        if is_personal(token):
            return await self.with_personal_token(token, tenant=tenant)
        claims = self.tokens.verify(token)
        user = await self.users.get(claims.username) if self.users else None
        if user is not None and tenant is not None and user.tenant != tenant:
            user = None  # another tenant's subdomain: as for a removed user
        if user is None or not self.tokens.bound_to(claims, user.tenant, user.username,
                                                    user.password):
            # removed, re-created, moved or with a new password since the token was issued
            raise Unauthorized("invalid token", code="ERR_CODE_INVALID_TOKEN")
        return self._caller(user, claims)

    async def with_personal_token(self, text: str, tenant: str | None = None) -> Caller:
        """Bound to the owner's tenant and account generation (and to `tenant`, the tenant the
        request's Host names, when given); expiry checked after the secret, so only the holder
        of a token learns that it expired."""
        if self.personal is None or self.users is None:
            raise Unauthorized("invalid token", code="ERR_CODE_INVALID_TOKEN")
        token, secret, stored = await self.personal.find(text)
        user = await self.users.get(token.username)
        bound = user is not None and user.tenant == token.tenant and \
            (tenant is None or user.tenant == tenant)
        account = (self.tokens.account(user.tenant, user.username, user.password)
                   if user is not None and bound else "")
        if user is None or not account or not self.personal.matches(secret, account, stored):
            raise Unauthorized("invalid token", code="ERR_CODE_INVALID_TOKEN")
        if self.personal.expired(token):
            raise Unauthorized("token expired", code="ERR_CODE_TOKEN_EXPIRED")
        return self._caller(user, personal=token)

    def personal_store(self) -> PersonalTokens:
        if self.personal is None:
            raise Unauthorized("personal tokens need a database", code="ERR_CODE_INVALID_TOKEN")
        return self.personal

    def issue_token(self, user: User, lifetime: int) -> str:
        account = self.tokens.account(user.tenant, user.username, user.password)
        return self.tokens.issue(user.username, lifetime, account)

    async def from_header(self, header: str, address: str, tenant: str | None = None) -> Caller:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized("malformed basic credentials") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise Unauthorized("malformed basic credentials")
            return await self.with_password(username, password, address, tenant)
        if scheme in ("bearer", "bearer:"):  # rport documents "Bearer: <token>" too
            return await self.with_token(value.strip(), tenant)
        raise Unauthorized("use HTTP basic auth or a bearer token")


CALLER: web.RequestKey[Caller] = web.RequestKey("caller")
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
# What the middlewares after authentication would refuse a caller for (a suspended tenant),
# asked by POST /login, which authenticates in its handler (app.py sets it).
LOGIN_CHECK: web.AppKey[Callable[[web.Request, Caller], Awaitable[None]]] = \
    web.AppKey("login_check")


def _cross_site(request: web.Request) -> bool:
    """A browser page of another origin sent this (Origin names another host, or `null`). A
    reverse proxy's X-Forwarded-Host counts as ours too: no page can add that header to a
    request that skips the CORS preflight."""
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser's cross-origin request (curl, rport's CLI, aiohttp)
    ours = {request.headers.get(name, "").strip().lower() for name in ("Host", "X-Forwarded-Host")}
    return urlsplit(origin).netloc.lower() not in ours - {""}


def _refuse_ambient(request: web.Request, header: str) -> None:
    """Basic credentials are the one kind a browser adds by itself (cached from its login
    prompt) to another site's form POST or WebSocket handshake, which need no CORS preflight:
    from another origin they are refused. Tokens are not ambient (the page must know them)."""
    if header.partition(" ")[0].lower() == "basic" and _cross_site(request):
        log.info("%s %s: basic credentials from another origin (%r) refused", request.method,
                 request.path, request.headers.get("Origin", "")[:100])
        raise Forbidden("basic credentials are not accepted from another site's page; use a "
                        "bearer token", code="ERR_CODE_CROSS_SITE")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (not request.path.startswith("/api/") or (request.method, request.path) in _PUBLIC
            or request.get(OPERATOR)):  # operator routes: operator.py checked the key
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header and (request.method, request.path) in _QUERY_TOKEN:
        token = request.query.get("access_token", "")
        header = f"Bearer {token}" if token else ""
    if not header:
        raise Unauthorized("authentication required: HTTP basic auth or a bearer token")
    _refuse_ambient(request, header)
    request[CALLER] = await request.app[AUTHENTICATOR].from_header(
        header, request.remote or "", request.get(HOST_TENANT))
    return await handler(request)


def _lifetime(raw: str | None) -> int:
    if raw in (None, ""):
        return DEFAULT_LIFETIME
    try:
        seconds = int(raw)
    except ValueError:
        raise BadRequest("token-lifetime must be a number of seconds") from None
    if not 0 < seconds <= MAX_LIFETIME:
        raise BadRequest(f"token-lifetime must be 1..{MAX_LIFETIME} seconds (90 days)")
    return seconds


def _token_response(request: web.Request, caller: Caller, lifetime: int) -> web.Response:
    token = request.app[AUTHENTICATOR].issue_token(caller.user, lifetime)
    return web.json_response({"data": {"token": token}})


async def login_get(request: web.Request) -> web.Response:
    """GET /login with basic auth: a token for `token-lifetime` seconds (default 600)."""
    caller = request[CALLER]
    if caller.token is not None or caller.personal is not None:
        raise BadRequest("log in with basic auth to get a token")
    return _token_response(request, caller, _lifetime(request.query.get("token-lifetime")))


async def login_post(request: web.Request) -> web.Response:
    """POST /login with {"username","password"} as JSON or a form."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
    else:
        body = dict(await request.post())
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise BadRequest("username and password are required")
    caller = await request.app[AUTHENTICATOR].with_password(
        username, password, request.remote or "", request.get(HOST_TENANT))
    if LOGIN_CHECK in request.app:
        await request.app[LOGIN_CHECK](request, caller)
    lifetime = _lifetime(str(body.get("token-lifetime") or request.query.get("token-lifetime")
                             or ""))
    return _token_response(request, caller, lifetime)


async def login_delete(request: web.Request) -> web.Response:
    """DELETE /login: revoke the bearer token this request carries."""
    caller = request[CALLER]
    if caller.personal is not None:
        raise BadRequest("revoke a personal token with DELETE /api/v1/me/tokens/{id}")
    if caller.token is None:
        raise BadRequest("send the token to revoke as Authorization: Bearer <token>")
    await request.app[AUTHENTICATOR].tokens.revoke(caller.token)
    return web.Response(status=204)


async def hash_new_password(request: web.Request, password: str) -> str:
    """A password to store (credentials, users, a tenant's first admin), hashed off the loop: on
    the API's bounded password pool when there is one."""
    users = request.app[AUTHENTICATOR].users
    if users is None:
        return await asyncio.to_thread(hash_password, password)
    return await users.gate.pool.hash(password)
