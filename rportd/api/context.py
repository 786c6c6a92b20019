"""What the API needs of a running rportd, handed over by the composition root (server.py).

The API reaches clients only through the registry (with the caller's scope) and live agents only
through the registry's `ClientSession` protocol: it never imports the agent port.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..auth.clients import ClientAuth
from ..client_groups import ClientGroups
from ..config import Config
from ..jobs import JobService
from ..registry import Registry
from ..tunnel_spec import PortPool
from ..wire.pipe import TrafficMeter

__all__ = ["ApiContext", "CONTEXT"]


@dataclass(frozen=True)
class ApiContext:
    config: Config
    registry: Registry
    client_auth: ClientAuth | None
    ports: PortPool
    traffic: TrafficMeter
    fingerprint: str
    connect_url: str
    groups: ClientGroups
    jobs: JobService | None = None  # remote commands (rportd/jobs)


CONTEXT: web.AppKey[ApiContext] = web.AppKey("api_context")
