"""The bodies of command and script requests, checked field by field (rport refuses unknown
fields), and their targets resolved in the caller's scope.

A target another tenant owns is not found exactly like an id nobody has: the registry raises
the same NotFound for both."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from ..client_groups import ClientGroups, clients_in_groups
from ..errors import BadRequest
from ..jobs import JobSpec
from ..jobs.service import MAX_TARGETS
from ..registry import ClientRecord, Registry
from ..tenancy import Scope

__all__ = ["CommandRequest", "parse_command", "parse_script", "resolve_targets", "json_object",
           "MAX_TIMEOUT_SEC"]

MAX_TIMEOUT_SEC = 86400
SHELLS = ("", "cmd", "powershell")
_COMMON = {"timeout_sec", "cwd", "is_sudo", "interpreter", "stream_result"}
_ONE = {"command", "shell", *_COMMON}
_MANY = {"client_ids", "group_ids", "execute_concurrently", "abort_on_error"}
_SCRIPT = {"script", *_COMMON}
_MAX_TEXT = 4096


@dataclass(frozen=True)
class CommandRequest:
    spec: JobSpec
    client_ids: list[str]
    group_ids: list[str]
    concurrent: bool
    abort_on_err: bool


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="ERR_CODE_INVALID_JSON")
    return body


def _unknown(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise BadRequest(f"unknown field {extra[0]!r}", code="ERR_CODE_UNKNOWN_FIELD")


def _string(body: dict[str, Any], key: str, limit: int = _MAX_TEXT) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or "\x00" in value:
        raise BadRequest(f"{key} must be a string", code="ERR_CODE_INVALID_FIELD")
    if len(value) > limit:
        raise BadRequest(f"{key} is longer than {limit} characters",
                         code="ERR_CODE_INVALID_FIELD")
    return value


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false", code="ERR_CODE_INVALID_FIELD")
    return value


def _timeout(body: dict[str, Any], default: int) -> int:
    """rport: missing or 0 means the server's default."""
    value = body.get("timeout_sec")
    if value is None or value == 0:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_TIMEOUT_SEC:
        raise BadRequest(f"timeout_sec must be a whole number of seconds, 1..{MAX_TIMEOUT_SEC}",
                         code="ERR_CODE_INVALID_TIMEOUT")
    return value


def _ids(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if (not isinstance(value, list) or len(value) > MAX_TARGETS
            or not all(isinstance(v, str) and 0 < len(v) <= 150 for v in value)):
        raise BadRequest(f"{key} must be a list of at most {MAX_TARGETS} ids",
                         code="ERR_CODE_INVALID_FIELD")
    return list(dict.fromkeys(value))  # each client once, in the order given


def _spec(body: dict[str, Any], default_timeout: int, command: str, is_script: bool) -> JobSpec:
    shell = _string(body, "shell")
    if shell not in SHELLS:
        raise BadRequest("shell must be cmd or powershell (Windows clients), or empty",
                         code="ERR_CODE_INVALID_SHELL")
    return JobSpec(command=command, timeout_sec=_timeout(body, default_timeout), shell=shell,
                   cwd=_string(body, "cwd"), interpreter=_string(body, "interpreter", 256),
                   is_sudo=_flag(body, "is_sudo", False), is_script=is_script,
                   stream_result=_flag(body, "stream_result", False))


def _command(body: dict[str, Any]) -> str:
    command = _string(body, "command", 1 << 16)
    if not command.strip():
        raise BadRequest("command cannot be empty", code="ERR_CODE_MISSING_COMMAND")
    return command


def _script(body: dict[str, Any]) -> str:
    encoded = _string(body, "script", 1 << 20)
    if not encoded:
        raise BadRequest("script cannot be empty", code="ERR_CODE_MISSING_SCRIPT")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("script must be the script's text, base64-encoded",
                         code="ERR_CODE_INVALID_SCRIPT") from None
    # As openrport (a Go string marshalled to JSON): bytes that are not UTF-8 become U+FFFD.
    return raw.decode("utf-8", "replace")


def _many(body: dict[str, Any], spec: JobSpec, minimum: int) -> CommandRequest:
    client_ids, group_ids = _ids(body, "client_ids"), _ids(body, "group_ids")
    if not group_ids and len(client_ids) < minimum:
        raise BadRequest(f"at least {minimum} client ids (or a group id) must be given",
                         code="ERR_CODE_TOO_FEW_CLIENTS")
    return CommandRequest(spec, client_ids, group_ids,
                          _flag(body, "execute_concurrently", False),
                          _flag(body, "abort_on_error", True))


def parse_command(body: Any, default_timeout: int, many: bool = False,
                  minimum: int = 2) -> CommandRequest:
    body = json_object(body)
    _unknown(body, _ONE | _MANY if many else _ONE)
    spec = _spec(body, default_timeout, _command(body), is_script=False)
    return _many(body, spec, minimum) if many else CommandRequest(spec, [], [], False, True)


def parse_script(body: Any, default_timeout: int, many: bool = False) -> CommandRequest:
    body = json_object(body)
    _unknown(body, _SCRIPT | _MANY if many else _SCRIPT)
    spec = _spec(body, default_timeout, _script(body), is_script=True)
    return _many(body, spec, 1) if many else CommandRequest(spec, [], [], False, True)


async def resolve_targets(registry: Registry, groups: ClientGroups, scope: Scope,
                          request: CommandRequest) -> list[ClientRecord]:
    """The caller's clients named by id (NotFound for any other, the same for all), then the
    connected members of the named groups not named already (as rport: an unknown group, or
    another tenant's, is not found; groups without a connected member and no ids, a 400)."""
    named = [registry.get(scope, client_id) for client_id in request.client_ids]
    if not request.group_ids:
        return named
    members = await clients_in_groups(groups, scope, request.group_ids)
    if not members and not named:
        raise BadRequest("no connected clients belong to the selected group(s)",
                         code="ERR_CODE_NO_CLIENTS_IN_GROUPS")
    ids = {record.id for record in named}
    targets = named + [record for record in members if record.id not in ids]
    if len(targets) > MAX_TARGETS:
        raise BadRequest(f"the command would run on {len(targets)} clients; at most "
                         f"{MAX_TARGETS}", code="ERR_CODE_TOO_MANY_CLIENTS")
    return targets
