"""An agent's connection request (rport's ConnectionRequest: the 2021 client's and openrport
0.9's, Go field names without JSON tags): checked, and turned into the client's details under
rport's API names.

Everything wrong with a request is found here, before any registry write, and answered with a
text starting `invalid connection request: ` (or `can't create tunnel: ` for a tunnel rportd
cannot set up). The agent's password, which the newest client repeats inside
`ClientConfiguration`, is removed here (client_config.py): nothing after this sees it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import RportdError
from ..registry import MAX_ID_LENGTH
from ..tunnel_spec import PortPool, Remote
from .client_config import sanitize_client_configuration

__all__ = ["ConnectionRequest", "InvalidRequest", "parse_connection_request", "TEXT_FIELDS",
           "LIST_FIELDS", "COUNT_FIELDS", "MAX_ITEMS"]

TEXT_FIELDS = {"Name": "name", "OS": "os", "OSArch": "os_arch", "OSFamily": "os_family",
               "OSKernel": "os_kernel", "Hostname": "hostname", "Version": "version",
               "SessionID": "session_id", "OSFullName": "os_full_name",
               "OSVersion": "os_version", "OSVirtualizationSystem": "os_virtualization_system",
               "OSVirtualizationRole": "os_virtualization_role", "CPUFamily": "cpu_family",
               "CPUModel": "cpu_model", "CPUModelName": "cpu_model_name",
               "CPUVendor": "cpu_vendor", "Timezone": "timezone"}
LIST_FIELDS = {"IPv4": "ipv4", "IPv6": "ipv6", "Tags": "tags"}
COUNT_FIELDS = {"NumCPUs": ("num_cpus", 2**31 - 1), "MemoryTotal": ("mem_total", 2**64 - 1)}
# Kept per client in memory: a 512 KiB list of empty strings would be ~170,000 objects.
MAX_ITEMS = 1000
MAX_REASON = 300


class InvalidRequest(Exception):
    """The request is refused with this text (rport's wording), then the agent is hung up on."""


@dataclass(frozen=True)
class ConnectionRequest:
    client_id: str  # "" when the agent sent none: the session picks one
    details: dict[str, Any]
    remotes: list[Remote]


def parse_connection_request(payload: bytes, *, limit: int, address: str, ports: PortPool,
                             password: str) -> ConnectionRequest:
    """Parse `payload` from an agent at `address` ("host:port") that logged in with
    `password`. Raises InvalidRequest with the text to answer."""
    if len(payload) > limit:
        raise InvalidRequest(f"invalid connection request: larger than {limit} bytes")
    try:
        request = _decode(payload)
        details = _details(request, address, password)
        remotes = _remotes(request)
        client_id = _client_id(request)
    except (ValueError, RportdError) as exc:
        raise InvalidRequest(f"invalid connection request: {_reason(exc)}") from None
    for remote in remotes:
        try:
            remote.check_supported()
            remote.check_local(ports)
        except RportdError as exc:
            raise InvalidRequest(f"can't create tunnel: {_reason(exc)}") from None
    return ConnectionRequest(client_id, details, remotes)


def _reason(exc: Exception) -> str:
    """The reason, cut short: it may quote what the agent sent, and is logged and answered."""
    text = (exc.detail or str(exc)) if isinstance(exc, RportdError) else str(exc)
    return text if len(text) <= MAX_REASON else text[:MAX_REASON] + "..."


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        request = json.loads(payload)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 JSON") from None
    if not isinstance(request, dict):
        raise ValueError("not a JSON object")
    return request


def _client_id(request: dict[str, Any]) -> str:
    client_id = request.get("ID") or ""
    if not isinstance(client_id, str):
        raise ValueError("ID must be a string")
    if len(client_id) > MAX_ID_LENGTH:
        raise ValueError(f"ID is longer than {MAX_ID_LENGTH} characters")
    return client_id


def _details(request: dict[str, Any], address: str, password: str) -> dict[str, Any]:
    details: dict[str, Any] = {"address": address}
    for key, name in TEXT_FIELDS.items():
        details[name] = _text(request, key)
    for key, name in LIST_FIELDS.items():
        details[name] = _strings(request, key)
    for key, (name, most) in COUNT_FIELDS.items():
        details[name] = _count(request, key, most)
    details["labels"] = _labels(request)
    details["client_configuration"] = sanitize_client_configuration(
        request.get("ClientConfiguration"), password)
    return details


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key) or ""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _strings(request: dict[str, Any], key: str) -> list[str]:
    value = request.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings")
    if len(value) > MAX_ITEMS:
        raise ValueError(f"{key} has more than {MAX_ITEMS} items")
    return value


def _count(request: dict[str, Any], key: str, most: int) -> int:
    value = request.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ValueError(f"{key} must be a whole number 0..{most}")
    return value


def _labels(request: dict[str, Any]) -> dict[str, str]:
    labels = request.get("Labels")
    if labels is None:
        return {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError("Labels must be an object of strings")
    if len(labels) > MAX_ITEMS:
        raise ValueError(f"Labels has more than {MAX_ITEMS} items")
    return labels


def _remotes(request: dict[str, Any]) -> list[Remote]:
    remotes = request.get("Remotes") or []
    if not isinstance(remotes, list):
        raise ValueError("Remotes must be a list")
    return [Remote.from_json(r) for r in remotes]
