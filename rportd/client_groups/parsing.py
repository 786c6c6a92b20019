"""Client groups from API bodies: rport's fields and id rule, every size bounded, each kind of bad
input with its own code."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ..errors import BadRequest, Conflict
from .matching import PARAM_NAMES, ClientGroup

__all__ = ["parse_group", "check_group_id", "stored_params", "MAX_ID_LENGTH",
           "MAX_DESCRIPTION_LENGTH", "MAX_PATTERNS_PER_PARAM", "MAX_PATTERN_LENGTH",
           "INVALID_ID"]

_BODY_KEYS = ("id", "description", "params", "client_ids")

MAX_ID_LENGTH = 30  # rport's groupIDMaxLength
_ID = re.compile(r"[A-Za-z0-9_*-]{1,30}")  # rport's characters: letters, digits, _ - *
MAX_DESCRIPTION_LENGTH = 2000
MAX_PATTERNS_PER_PARAM = 32
MAX_PATTERN_LENGTH = 100
MAX_GROUPS_PER_TENANT = 500  # bounds the work of a listing: groups x clients x patterns
MAX_GROUP_IDS = 100  # group ids one resolution may name
INVALID_ID = "ERR_CODE_INVALID_CLIENT_GROUP_ID"
_INVALID_PARAMS = "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"
_INVALID_GROUP = "ERR_CODE_INVALID_CLIENT_GROUP"


def check_group_id(value: Any) -> str:
    """rport's rule: 1-30 letters, digits, `_`, `-` or `*`. No blank, no case folding: `grp`
    and `GRP` are two groups, and `grp  ` is refused (it would meet `grp` in a pad-insensitive
    comparison)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("id must be a non-empty string", code=INVALID_ID)
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"id must be at most {MAX_ID_LENGTH} characters, got {len(value)}",
                         code=INVALID_ID)
    if not _ID.fullmatch(value):
        raise BadRequest("id may contain only letters, digits and _ - *", code=INVALID_ID)
    return value


def _names(keys: Iterable[str]) -> str:
    shown = [repr(k[:40]) for k in sorted(keys)[:5]]
    return ", ".join(shown)


def _patterns(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise BadRequest(f"params.{name} must be an array of strings or null",
                         code=_INVALID_PARAMS)
    if len(value) > MAX_PATTERNS_PER_PARAM:
        raise BadRequest(f"params.{name} has {len(value)} patterns; at most "
                         f"{MAX_PATTERNS_PER_PARAM}", code=_INVALID_PARAMS)
    if any(len(p) > MAX_PATTERN_LENGTH for p in value):
        raise BadRequest(f"params.{name}: a pattern is longer than {MAX_PATTERN_LENGTH} "
                         "characters", code=_INVALID_PARAMS)
    return tuple(value)


def _params(value: Any) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("params must be an object", code=_INVALID_PARAMS)
    unknown = set(value) - set(PARAM_NAMES)
    if unknown:
        raise BadRequest(f"unknown params {_names(unknown)}; use {', '.join(PARAM_NAMES)}",
                         code=_INVALID_PARAMS)
    parsed = {name: _patterns(name, value[name]) for name in PARAM_NAMES if name in value}
    return {name: patterns for name, patterns in parsed.items() if patterns is not None}


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest("description must be a string", code=_INVALID_GROUP)
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise BadRequest(f"description must be at most {MAX_DESCRIPTION_LENGTH} characters",
                         code=_INVALID_GROUP)
    return value


def parse_group(body: Any, path_id: str | None = None) -> ClientGroup:
    """A group from a POST/PUT body (rport's fields; `client_ids` is read-only and ignored).
    With `path_id` (PUT) the body's id must be the same. Raises BadRequest with its code."""
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"id": ..., "description": ..., '
                         '"params": {...}}', code=_INVALID_GROUP)
    unknown = set(body) - set(_BODY_KEYS)
    if unknown:
        raise BadRequest(f"unknown fields {_names(unknown)}; use {', '.join(_BODY_KEYS)}",
                         code=_INVALID_GROUP)
    client_ids = body.get("client_ids")
    if client_ids is not None and not (isinstance(client_ids, list)
                                       and all(isinstance(c, str) for c in client_ids)):
        raise BadRequest("client_ids is read-only; send an array of strings or leave it out",
                         code=_INVALID_GROUP)
    group_id = check_group_id(body.get("id"))
    if path_id is not None and path_id != group_id:
        # 409, not rport's 400: the body describes another group than the one addressed
        raise Conflict("the id in the path and the id in the body differ",
                       code="ERR_CODE_CLIENT_GROUP_ID_MISMATCH")
    return ClientGroup(group_id, _description(body.get("description")),
                       _params(body.get("params")))


def stored_params(raw: Any) -> dict[str, tuple[str, ...]]:
    """Params as read back; a row edited by hand into something else selects nobody."""
    try:
        decoded = json.loads(raw) if isinstance(raw, str | bytes) else {}
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {name: tuple(str(p) for p in value) for name, value in decoded.items()
            if name in PARAM_NAMES and isinstance(value, list)}

