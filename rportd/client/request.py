"""The connection request our agent sends: the newest rport client's ConnectionRequest (openrport
0.9), field for field and in its order, with a ClientConfiguration that holds no secret."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from .. import __version__
from .sysinfo import system_details

if TYPE_CHECKING:
    from .connection import AgentSettings

__all__ = ["connection_request", "FIELDS", "SESSION_ID"]

FIELDS = ("ID", "Name", "SessionID", "OS", "OSFullName", "OSVersion", "OSVirtualizationSystem",
          "OSVirtualizationRole", "OSArch", "OSFamily", "OSKernel", "Version", "Hostname",
          "CPUFamily", "CPUModel", "CPUModelName", "CPUVendor", "NumCPUs", "MemoryTotal",
          "Timezone", "IPv4", "IPv6", "Tags", "Labels", "Remotes", "ClientConfiguration")
SESSION_ID = str(uuid.uuid4())  # one per agent process, as the Go client's
_NS = 1_000_000_000  # Go durations are nanoseconds


def connection_request(settings: AgentSettings) -> bytes:
    body: dict[str, Any] = {"ID": settings.client_id, "Name": settings.name,
                            "SessionID": SESSION_ID, "Version": __version__}
    body.update(system_details())
    body.update(Tags=list(settings.tags), Labels=dict(settings.labels) or None,
                Remotes=settings.remotes or None, ClientConfiguration=_configuration(settings))
    return json.dumps({k: body[k] for k in FIELDS}, separators=(",", ":")).encode()


def _configuration(settings: AgentSettings) -> dict[str, Any]:
    """What of our config the newest client reports, in its shape, never the credential."""
    policy = settings.commands
    return {
        "client": {"server": settings.server.url, "id": settings.client_id,
                   "name": settings.name, "tags": list(settings.tags),
                   "labels": dict(settings.labels), "fingerprint": settings.fingerprint},
        "connection": {"keep_alive": int(settings.keepalive * _NS),
                       "max_retry_count": settings.max_retry_count,
                       "max_retry_interval": int(settings.max_retry_interval * _NS)},
        # the server learns from these that this agent runs commands and scripts
        "remote_commands": {"enabled": policy.enabled, "allow": list(policy.allow),
                            "deny": list(policy.deny), "order": list(policy.order),
                            "send_back_limit": policy.send_back_limit},
        "remote_scripts": {"enabled": policy.scripts_enabled},
    }
