"""One connected agent: SSH authentication, the rport-v1 requests, and its live tunnels.

Data flow: auth (credential + tenant) -> `new_connection` -> registry -> tunnels. Every SSH hook
denies unless a rule here allows it: the agent may not open channels, only password auth exists,
and nothing but `new_connection`, `ping` and `cmd_result` is understood.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import asyncssh
from asyncssh.connection import SSHServerConnection

from ..auth.clients import ClientAuth, ClientCredential
from ..config import Config
from ..errors import BadRequest, RportdError
from ..registry import ClientRecord, IdTaken, Registry
from ..tunnel_spec import PortPool, Remote, TunnelError
from ..wire.asyncssh_internals import (
    SERVER_VERSION,
    RportVersionMixin,
    open_rport_channel,
    reply_global,
    send_global_request,
)
from ..wire.pipe import Pipe, TrafficMeter
from .lifecycle import Lifecycle, State
from .tunnels import Tunnel

__all__ = ["AgentServices", "AgentSession", "RportServerConnection", "REGISTRATION_TIMEOUT"]

log = logging.getLogger("rportd.agent_port")

REGISTRATION_TIMEOUT = 10.0
_LIST_FIELDS = {"IPv4": "ipv4", "IPv6": "ipv6", "Tags": "tags"}
_TEXT_FIELDS = {"Name": "name", "OS": "os", "OSArch": "os_arch", "OSFamily": "os_family",
                "OSKernel": "os_kernel", "Hostname": "hostname", "Version": "version"}


@dataclass
class AgentServices:
    """What every session shares: config, registry, credentials, the port pool."""

    config: Config
    registry: Registry
    client_auth: ClientAuth | None
    ports: PortPool

    ports_in_use: set[int] = field(default_factory=set)  # lports of every live tunnel
    traffic: TrafficMeter = field(default_factory=TrafficMeter)
    connections: set[SSHServerConnection] = field(default_factory=set)  # incl. unregistered
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # registrations, cleanups

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def wait_tasks(self) -> None:
        """Shutdown: let every session finish recording itself before the store closes."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)

    def close_pending(self) -> None:
        """Shutdown: hang up on every connection, registered or still in its handshake."""
        for conn in list(self.connections):
            conn.close()


class RportServerConnection(RportVersionMixin, SSHServerConnection):
    """asyncssh's server connection speaking rport-v1's banner and global requests."""

    rport_version = SERVER_VERSION
    global_requests: ClassVar[dict[str, str]] = {
        "new_connection": "_on_new_connection", "ping": "_on_ping", "cmd_result": "_on_cmd_result"}

    @property
    def _session(self) -> AgentSession:
        return cast("AgentSession", self.get_owner())

    def _on_new_connection(self, payload: bytes) -> None:
        self._session.on_new_connection(payload)

    def _on_ping(self, payload: bytes) -> None:
        self._session.on_ping()

    def _on_cmd_result(self, payload: bytes) -> None:
        self._session.on_cmd_result(payload)


class AgentSession(asyncssh.SSHServer):
    """The SSHServer for one agent connection (asyncssh calls the hooks below)."""

    def __init__(self, services: AgentServices, lifecycle: Lifecycle):
        self._services = services
        self._lifecycle = lifecycle
        self._address = lifecycle.peer
        self._conn: SSHServerConnection | None = None
        self.credential: ClientCredential | None = None
        self.record: ClientRecord | None = None
        self.tunnels: dict[str, Tunnel] = {}
        self._registering = False
        self._timeout: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncssh hooks
    def connection_made(self, conn: SSHServerConnection) -> None:
        self._conn = conn
        self._services.connections.add(conn)

    def begin_auth(self, username: str) -> bool:
        """Called at the first auth request, right after the key exchange; True: authentication
        is required (always)."""
        self._lifecycle.key_exchange_done()
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        """Awaitable; the username is the client auth id. False on any doubt."""
        auth = self._services.client_auth
        credential = await auth.authenticate(username, password, self._address) if auth else None
        if credential is None:
            log.info("agent %s: authentication failed for %r", self._address, username)
            return False
        if not self._services.config.server.multi_tenancy:
            credential = ClientCredential(credential.id, "")
        self.credential = credential
        return True

    def auth_completed(self) -> None:
        self._lifecycle.advance(State.AUTHENTICATED)
        loop = asyncio.get_running_loop()
        self._timeout = loop.call_later(REGISTRATION_TIMEOUT, self._registration_overdue)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._services.connections.discard(self._conn)
        if self._timeout:
            self._timeout.cancel()
        self._lifecycle.close()

    # ------------------------------------------------------------------ rport-v1 requests
    def on_new_connection(self, payload: bytes) -> None:
        if self._registering or self.record is not None:
            self._reply(False, "client already sent its connection request")
            return
        limit = self._services.config.server.max_request_bytes
        if len(payload) > limit:
            self._refuse(f"invalid connection request: larger than {limit} bytes")
            return
        try:
            request = json.loads(payload)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
            details, remotes = _parse_request(request, self._address)
        except (ValueError, RportdError) as exc:
            self._refuse(f"invalid connection request: {exc}")
            return
        self._registering = True
        client_id = str(request.get("ID") or "")
        self._services.spawn(self._register_or_refuse(client_id, details, remotes))

    def on_ping(self) -> None:
        if self.record is None:
            self._reply(False, "expecting connection request")
        else:
            self._reply(True)

    def on_cmd_result(self, payload: bytes) -> None:
        # Commands are not part of rportd yet; the result is acknowledged and dropped.
        log.info("agent %s: ignoring cmd_result (%d bytes)", self._address, len(payload))
        reply_global(self._require_conn(), True)

    def _reply(self, ok: bool, text: str = "", payload: bytes | None = None) -> None:
        reply_global(self._require_conn(), ok, payload if payload is not None else text.encode())

    def _refuse(self, text: str) -> None:
        """Fail the connection request with rport's text, then hang up (the client exits)."""
        self._reply(False, text)
        self._require_conn().close()

    def _require_conn(self) -> SSHServerConnection:
        assert self._conn is not None
        return self._conn

    def _registration_overdue(self) -> None:
        if self.record is None and not self._registering and self._conn is not None:
            log.info("agent %s: no connection request within %ss; closing", self._address,
                     REGISTRATION_TIMEOUT)
            self._conn.close()

    async def _register_or_refuse(self, client_id: str, details: dict[str, Any],
                                  remotes: list[Remote]) -> None:
        """The agent waits for an answer to new_connection: it gets one even on a bug."""
        try:
            await self._register(client_id, details, remotes)
        except Exception:
            log.exception("agent %s: registration failed", self._address)
            self._refuse("server error while registering the client; see the server log")

    async def _register(self, client_id: str, details: dict[str, Any],
                        remotes: list[Remote]) -> None:
        assert self.credential is not None
        server = self._services.config.server
        tenant = self.credential.tenant
        if not client_id:
            client_id = self._default_client_id(details)
        try:
            record = await self._services.registry.connect(
                tenant, client_id, self.credential.id, details, self, server.auth_multiuse_creds)
        except IdTaken as exc:
            log.info("agent %s: %s", self._address, exc.detail)
            self._refuse(exc.detail)
            return
        self.record = record
        try:
            tunnels = await self._establish(remotes, record)
        except RportdError as exc:
            self._refuse(f"can't create tunnel: {exc.detail or exc}")
            return
        if server.multi_tenancy and not tenant:
            log.warning("client %s connected with credential %r, which has no tenant: it is "
                        "orphaned, invisible to every API user; give the credential a tenant",
                        client_id, self.credential.id)
        else:
            log.info("client %s connected (tenant %r, auth id %r) from %s", client_id, tenant,
                     self.credential.id, self._address)
        self._reply(True, payload=json.dumps([t.remote.to_json() for t in tunnels]).encode())

    def _default_client_id(self, details: dict[str, Any]) -> str:
        assert self.credential is not None
        server = self._services.config.server
        if server.equate_clientauthid_clientid and not server.auth_multiuse_creds:
            return self.credential.id
        # Stable across reconnects of the same machine, so its tunnels come back.
        seed = f"{self.credential.id}|{details.get('hostname', '')}|{details.get('name', '')}"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "rportd:" + seed))

    async def _establish(self, requested: list[Remote], record: ClientRecord) -> list[Tunnel]:
        """Set up the tunnels asked for now, then bring back the ones the client had before.
        A requested random-port tunnel that existed before gets its old port back if free."""
        kept = record.tunnels
        previous = [Remote.from_json(t) for t in kept]
        record.tunnels = []
        made = []
        try:
            for remote in requested:
                earlier = _take_matching(previous, remote)
                if earlier is not None and not remote.lport:
                    remote = Remote(**{**remote.__dict__, "lhost": earlier.lhost,
                                       "lport": earlier.lport, "lport_random": True})
                made.append(await self.add_tunnel(remote, check=False, persist=False))
        except RportdError:
            record.tunnels = kept  # a refused registration must not forget the old tunnels
            raise
        for remote in previous:
            try:
                made.append(await self.add_tunnel(remote, check=False, persist=False))
            except RportdError as exc:
                log.warning("client %s: tunnel %s:%s not re-established: %s", record.id,
                            remote.lhost, remote.lport, exc.detail)
        await self._services.registry.save_tunnels(record)
        return made

    async def cleanup(self) -> None:
        """Called once by the connection's owner (listener.py) after it closed."""
        for tunnel in list(self.tunnels.values()):
            await self._close_tunnel(tunnel)
        self.tunnels.clear()
        if self.record is not None:
            await self._services.registry.disconnect(self.record, self)
            log.info("client %s disconnected", self.record.id)

    # ------------------------------------------------------------------ internal interface
    async def check_port(self, host_port: str) -> tuple[bool, str]:
        """Ask the agent whether it can reach host:port (rport's check_port request)."""
        timeout = self._services.config.server.check_port_timeout
        payload = json.dumps({"HostPort": host_port, "Timeout": int(timeout * 1e9)}).encode()
        try:
            ok, reply = await asyncio.wait_for(
                send_global_request(self._require_conn(), "check_port", payload), timeout + 5)
        except TimeoutError:
            return False, "the client did not answer the port check"
        if not ok:
            return False, reply.decode("utf-8", "replace")
        try:
            answer = json.loads(reply)
            return bool(answer.get("Open")), str(answer.get("ErrMsg") or "")
        except (ValueError, AttributeError):
            return False, "the client sent an unreadable port check reply"

    async def open_tunnel(self, remote: Remote, *, check: bool) -> dict[str, Any]:
        return (await self.add_tunnel(remote, check=check)).to_json()

    async def add_tunnel(self, remote: Remote, *, check: bool = True,
                         persist: bool = True) -> Tunnel:
        """Listen for `remote` and forward accepted connections to the agent."""
        assert self.record is not None
        target = f"{remote.rhost or '127.0.0.1'}:{remote.rport}"
        if check:
            is_open, why = await self.check_port(target)
            if not is_open:
                raise BadRequest(f"remote {target} is not reachable from the client: {why}",
                                 code="ERR_CODE_REMOTE_PORT_CLOSED")
        remote = Remote(**{**remote.__dict__})
        remote.rhost = remote.rhost or "127.0.0.1"
        tunnel = await self._listen(remote)
        self.tunnels[tunnel.id] = tunnel
        self._services.ports_in_use.add(int(tunnel.remote.lport))
        self.record.tunnels.append(tunnel.to_json())
        if persist:
            await self._services.registry.save_tunnels(self.record)
        return tunnel

    async def _listen(self, remote: Remote) -> Tunnel:
        tunnel_id = str(1 + max((int(t) for t in self.tunnels if t.isdigit()), default=0))
        for taken in self.tunnels.values():
            if remote.lport and taken.remote.lport == remote.lport:
                raise TunnelError(f"local port {remote.lport} is already used by tunnel {taken.id}",
                                  code="ERR_CODE_LOCAL_PORT_IN_USE")
        meter = self._services.traffic
        if remote.lport and not remote.lport_random:
            tunnel = Tunnel(tunnel_id, remote, meter=meter)
            await tunnel.listen(self.open_channel)
            return tunnel
        remote.lhost, remote.lport_random = remote.lhost or "0.0.0.0", True
        candidates = self._services.ports.candidates(self._services.ports_in_use)[:50]
        if remote.lport:  # a random port this client had before: keep it if still free
            candidates.insert(0, int(remote.lport))
        for port in candidates:
            remote.lport = str(port)
            tunnel = Tunnel(tunnel_id, remote, meter=meter)
            try:
                await tunnel.listen(self.open_channel)
                return tunnel
            except TunnelError:
                continue  # busy: try another
        raise TunnelError("no free port left in used_ports", code="ERR_CODE_NO_FREE_PORT")

    async def remove_tunnel(self, tunnel_id: str) -> bool:
        tunnel = self.tunnels.pop(tunnel_id, None)
        if tunnel is None:
            return False
        await self._close_tunnel(tunnel)
        assert self.record is not None
        self.record.tunnels = [t for t in self.record.tunnels if t.get("id") != tunnel_id]
        await self._services.registry.save_tunnels(self.record)
        return True

    async def _close_tunnel(self, tunnel: Tunnel) -> None:
        self._services.ports_in_use.discard(int(tunnel.remote.lport))
        await tunnel.close()

    async def open_channel(self, target: str, pipe: Pipe) -> None:
        await open_rport_channel(self._require_conn(), target, pipe.channel_session())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _take_matching(previous: list[Remote], wanted: Remote) -> Remote | None:
    """Remove and return the earlier tunnel that `wanted` asks for again, if any."""
    for index, earlier in enumerate(previous):
        same_target = (earlier.rhost, earlier.rport) == (wanted.rhost or "127.0.0.1", wanted.rport)
        same_port = earlier.lport == wanted.lport or (not wanted.lport and earlier.lport_random)
        if same_target and same_port:
            return previous.pop(index)
    return None


def _parse_request(request: dict[str, Any], address: str) -> tuple[dict[str, Any], list[Remote]]:
    details: dict[str, Any] = {"address": address}
    for key, name in _TEXT_FIELDS.items():
        value = request.get(key) or ""
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        details[name] = value
    for key, name in _LIST_FIELDS.items():
        value = request.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key} must be a list of strings")
        details[name] = value
    if not isinstance(request.get("ID") or "", str):
        raise ValueError("ID must be a string")
    remotes = request.get("Remotes") or []
    if not isinstance(remotes, list):
        raise ValueError("Remotes must be a list")
    return details, [Remote.from_json(r) for r in remotes]
