"""/me/tokens: the caller's personal API tokens. A token's scopes name permissions; what it may
do is its owner's permissions at the time of each request intersected with its scopes
(api/authorize.py), so it can narrow its owner's rights and never widen them. The secret is in
the 201 answer only. Tokens are managed with a password or a login token, never with a personal
token (a token cannot mint or outlive itself)."""

from __future__ import annotations

from aiohttp import web

from ..auth.permissions import expand, parse_names
from ..auth.personal_tokens import DEFAULT_LIFETIME, MAX_LIFETIME, MAX_TOKENS_PER_USER
from ..errors import BadRequest, Conflict, Forbidden, NotFound
from .auth import AUTHENTICATOR, CALLER, Caller
from .authorize import held
from .bodies import json_object

__all__ = ["list_tokens", "create_token", "delete_token"]

_SHAPE = '{"name": ..., "scopes": ["clients:read", ...], "lifetime": seconds}'


def _owner(request: web.Request) -> Caller:
    caller = request[CALLER]
    if caller.personal is not None:
        raise Forbidden("manage tokens with your password or a login token, not a personal "
                        "token", code="ERR_CODE_FORBIDDEN")
    return caller


def _lifetime(value: object) -> int:
    if value is None:
        return DEFAULT_LIFETIME
    if not isinstance(value, int) or isinstance(value, bool) or not 60 <= value <= MAX_LIFETIME:
        raise BadRequest(f"lifetime must be 60..{MAX_LIFETIME} seconds",
                         code="ERR_CODE_INVALID_LIFETIME")
    return value


def _name(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 150:
        raise BadRequest("name must be text of at most 150 characters",
                         code="ERR_CODE_INVALID_REQUEST")
    return value


async def list_tokens(request: web.Request) -> web.Response:
    caller = _owner(request)
    tokens = await request.app[AUTHENTICATOR].personal_store().owned(caller.user.tenant,
                                                                      caller.user.username)
    return web.json_response({"data": [t.to_json() for t in tokens]})


async def create_token(request: web.Request) -> web.Response:
    caller, authenticator = _owner(request), request.app[AUTHENTICATOR]
    body = await json_object(request, _SHAPE)
    scopes = parse_names(body.get("scopes"), "scopes")
    if not scopes:
        raise BadRequest("scopes must name at least one permission",
                         code="ERR_CODE_INVALID_PERMISSION")
    lifetime, name = _lifetime(body.get("lifetime")), _name(body.get("name"))
    account = (await held(request)).account
    exceeding = [s for s in scopes if "*" not in s and not expand(s) <= account]
    if exceeding:
        raise Forbidden(f"you do not hold {exceeding[0]}: a token can only narrow your rights",
                        code="ERR_CODE_EXCEEDS_OWN_PERMISSIONS")
    user, store = caller.user, authenticator.personal_store()
    if len(await store.owned(user.tenant, user.username)) >= MAX_TOKENS_PER_USER:
        raise Conflict(f"at most {MAX_TOKENS_PER_USER} tokens per user; revoke some",
                       code="ERR_CODE_TOO_MANY_TOKENS")
    binding = authenticator.tokens.account(user.tenant, user.username, user.password)
    token, text = await store.create(user.tenant, user.username, binding, name, scopes,
                                     lifetime)
    return web.json_response({"data": {**token.to_json(), "token": text}}, status=201)


async def delete_token(request: web.Request) -> web.Response:
    caller = _owner(request)
    store = request.app[AUTHENTICATOR].personal_store()
    if not await store.revoke(caller.user.tenant, caller.user.username,
                              request.match_info["id"]):
        raise NotFound("token not found", code="ERR_CODE_TOKEN_NOT_FOUND")
    return web.Response(status=204)
