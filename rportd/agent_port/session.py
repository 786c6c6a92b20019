"""One connected agent: SSH authentication, the rport-v1 requests, and its live tunnels.

Data flow: auth (credential + tenant) -> `new_connection` -> registry -> tunnels. Every SSH hook
denies unless a rule here allows it: the agent may open no channel but a job's stdout/stderr
stream (agent_port/commands.py), only password auth exists, and only the requests in
`RportServerConnection.global_requests` are understood (any other one that wants a reply gets a
failure). The connection request is parsed in connection_request.py.

The connection's `Lifecycle` (lifecycle.py) decides what is still accepted: once it is closing,
no tunnel, channel or registry write starts, and every step re-checks after each await. The
session owns the tasks it starts (the registration); the connection's owner task awaits
`cleanup()`, which waits for them, closes the tunnels and records the disconnect.

A database outage must not make a Go client give up. Registry writes are retried for
STORE_RETRY_SECONDS; then the agent is answered with a text containing `client is already
connected:`. Closing without an answer is not enough: in rport's client/client.go the
generations with `retryableError` (cloudradar-monitoring/rport) return the non-retryable
"connection request verification failed" when the connection drops before the reply and stop
for good, as they do on any other failure text; the oldest break out of the connection loop on
both. Only openrport's newer client (comm.WithRetry) reconnects after a lost connection (backoff
from 5 s to 10 min, with jitter). Every generation retries on `client is already connected:`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, cast

import asyncssh
from asyncssh.connection import SSHServerConnection

from ..auth.clients import ClientAuth, ClientCredential
from ..config import Config
from ..errors import BadRequest, RportdError, StoreError
from ..jobs import JobService
from ..quotas import QuotaExceeded, QuotaService
from ..registry import AlreadyConnected, ClientRecord, IdTaken, Registry
from ..tunnel_spec import PortPool, Remote, TunnelError, join_host_port, take_matching
from ..wire.asyncssh_internals import (
    SERVER_VERSION,
    RportVersionMixin,
    allow_packets,
    open_rport_channel,
    reply_global,
    send_global_request,
)
from ..wire.pipe import Pipe, TrafficMeter
from . import commands
from .connection_request import InvalidRequest, parse_connection_request
from .lifecycle import Lifecycle, State
from .reports import UNSOLICITED, InvalidReport, NewestOnly, parse_updates_status
from .tunnels import Tunnel

__all__ = ["AgentServices", "AgentSession", "RportServerConnection", "REGISTRATION_TIMEOUT",
           "STORE_RETRY_SECONDS", "LIVENESS_TIMEOUT"]

log = logging.getLogger("rportd.agent_port")

REGISTRATION_TIMEOUT = 10.0
STORE_RETRY_SECONDS = 15.0  # the Go client waits 30 s for the reply before it retries itself
LIVENESS_TIMEOUT = 3.0  # how long an agent holding an id may take to answer a ping
REGISTERING_READ_BUDGET = 64 * 1024  # bytes read from an agent awaiting its answer
CLEANUP_WAIT = 20.0  # how long cleanup waits for the session's own tasks before cancelling
T = TypeVar("T")


@dataclass
class AgentServices:
    """What every session shares: config, registry, credentials, the port pool."""

    config: Config
    registry: Registry
    client_auth: ClientAuth | None
    ports: PortPool
    jobs: JobService | None = None  # remote commands (rportd/jobs); None: run_cmd unsupported
    quotas: QuotaService | None = None  # None: nothing is limited

    ports_in_use: set[int] = field(default_factory=set)  # lports of every live tunnel
    traffic: TrafficMeter = field(default_factory=TrafficMeter)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # every session's own tasks

    async def wait_tasks(self) -> None:
        """Shutdown: let every session finish recording itself before the store closes."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)


class RportServerConnection(RportVersionMixin, SSHServerConnection):
    """asyncssh's server connection speaking rport-v1's banner and global requests."""

    rport_version = SERVER_VERSION
    global_requests: ClassVar[dict[str, str]] = {
        "new_connection": "_on_new_connection", "ping": "_on_ping", "cmd_result": "_on_cmd_result",
        "updates_status": "_on_updates_status", "save_measurement": "_on_save_measurement",
        "ip_addresses": "_on_ip_addresses"}
    # The only channels an agent may open: a job's streamed output (agent_port/commands.py).
    channel_opens: ClassVar[dict[str, str]] = {"stdout": "_on_stdout_open",
                                               "stderr": "_on_stderr_open"}

    @property
    def _session(self) -> AgentSession:
        return cast("AgentSession", self.get_owner())

    def _on_new_connection(self, payload: bytes) -> None:
        self._session.on_new_connection(payload)

    def _on_ping(self, payload: bytes) -> None:
        self._session.on_ping()

    def _on_cmd_result(self, payload: bytes) -> None:
        self._session.on_cmd_result(payload)

    def _on_updates_status(self, payload: bytes) -> None:
        self._session.on_updates_status(payload)

    def _on_save_measurement(self, payload: bytes) -> None:
        self._session.on_unsolicited("save_measurement", payload)

    def _on_ip_addresses(self, payload: bytes) -> None:
        self._session.on_unsolicited("ip_addresses", payload)

    def _on_stdout_open(self, payload: bytes) -> tuple[Any, Any]:
        return self._session.open_stream(self, "stdout", payload)

    def _on_stderr_open(self, payload: bytes) -> tuple[Any, Any]:
        return self._session.open_stream(self, "stderr", payload)

    def pause_writing(self) -> None:
        """The transport to the agent is full (asyncssh ignores this): stop reading every tunnel
        socket, so what waits for the agent is bounded by the transport's buffer."""
        self._session.pause_tunnels(True)

    def resume_writing(self) -> None:
        self._session.pause_tunnels(False)


class AgentSession(asyncssh.SSHServer):
    """The SSHServer for one agent connection (asyncssh calls the hooks below)."""

    def __init__(self, services: AgentServices, lifecycle: Lifecycle):
        self._services = services
        self.lifecycle = lifecycle
        self._address = lifecycle.peer
        self._peer = lifecycle.peer  # host:port once connected, as rport shows `address`
        self._password = ""  # held from login until the connection request is parsed
        self._updates_status = NewestOnly(self._save_updates_status, self._spawn)
        # Set by the listener: read at most N more bytes from the agent (None: no limit).
        self.limit_reading: Callable[[int | None], None] = lambda budget: None
        self._conn: SSHServerConnection | None = None
        self.credential: ClientCredential | None = None
        self.record: ClientRecord | None = None
        self.tunnels: dict[str, Tunnel] = {}
        self._next_tunnel_id = 1
        self._paused = False  # the connection to the agent cannot take more data
        self._tasks: set[asyncio.Task[None]] = set()
        self._timeout: asyncio.TimerHandle | None = None
        self._cleaned = asyncio.Event()
        self._runs_scripts = False
        # The tenant the upgrade's Host names ([api] tenant_domain); set by the listener.
        self.host_tenant: str | None = None

    # ------------------------------------------------------------------ asyncssh hooks
    def connection_made(self, conn: SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self._peer = join_host_port(str(peer[0]), peer[1])

    def begin_auth(self, username: str) -> bool:
        """Called at the first auth request, right after the key exchange; True: authentication
        is required (always)."""
        self.lifecycle.key_exchange_done()
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        """Awaitable; the username is the client auth id. False on any doubt."""
        auth = self._services.client_auth
        credential = (await auth.authenticate(username, password, self._address,
                                              self.host_tenant) if auth else None)
        if credential is None:
            log.info("agent %s: authentication failed for %r", self._address, username)
            return False
        if not self._services.config.server.multi_tenancy:
            credential = ClientCredential(credential.id, "")
        self.credential = credential
        self._password = password  # the newest client repeats it in its connection request
        return True

    def auth_completed(self) -> None:
        """Called synchronously once login succeeded, before the agent's next packet is read:
        from here a request up to max_request_bytes_client fits in one packet."""
        allow_packets(self._require_conn(), self._services.config.server.max_request_bytes_client)
        self.lifecycle.advance(State.AUTHENTICATED)
        loop = asyncio.get_running_loop()
        self._timeout = loop.call_later(REGISTRATION_TIMEOUT, self._registration_overdue)

    def connection_lost(self, exc: Exception | None) -> None:
        """Only marks the connection closing: the owner task runs `cleanup()`."""
        if self._timeout:
            self._timeout.cancel()
        self.lifecycle.close()

    # ------------------------------------------------------------------ rport-v1 requests
    def on_new_connection(self, payload: bytes) -> None:
        if not self.lifecycle.accepting_work:
            return  # the connection is going away; nobody waits for this answer
        if self.lifecycle.state is not State.AUTHENTICATED:
            self._reply(False, "client already sent its connection request")
            return
        password, self._password = self._password, ""
        try:
            request = parse_connection_request(
                payload, limit=self._services.config.server.max_request_bytes_client,
                address=self._peer, ports=self._services.ports, password=password)
        except InvalidRequest as refusal:
            log.info("agent %s: %s", self._address, refusal)
            self._refuse(str(refusal))
            return
        self.lifecycle.advance(State.REGISTERING)
        self._runs_scripts = commands.runs_scripts(payload)
        client_id = request.client_id or self._default_client_id(request.details)
        # asyncssh queues what arrives while new_connection is unanswered, and the client sends
        # nothing meanwhile: more than a little would only pile up, so it is not read.
        self.limit_reading(REGISTERING_READ_BUDGET)
        self._spawn(self._register_or_refuse(client_id, request.details, request.remotes))

    def on_ping(self) -> None:
        if self.record is None:
            self._reply(False, "expecting connection request")
        else:
            self._reply(True)

    def on_cmd_result(self, payload: bytes) -> None:
        """want_reply is false: nothing goes back. Only a job started here counts."""
        jobs = self._services.jobs
        if jobs is not None and self.record is not None:
            jobs.on_result(self, self.record.id, payload)
        else:
            log.info("agent %s: cmd_result before registration ignored", self._address)
        reply_global(self._require_conn(), True)

    def on_updates_status(self, payload: bytes) -> None:
        """openrport's report of pending OS updates (no reply wanted), kept on the client."""
        if self.record is None:
            self._reply(False, "expecting connection request")
            return
        try:
            status = parse_updates_status(
                payload, self._services.config.server.max_request_bytes_client)
        except InvalidReport as exc:
            log.info("agent %s: ignoring updates_status: %s", self._address, exc)
            self._reply(False, f"invalid updates_status: {exc}")
            return
        self._reply(True)
        self._updates_status.offer(status)

    async def _save_updates_status(self, status: dict[str, Any]) -> None:
        assert self.record is not None
        await self._services.registry.update_details(self.record, {"updates_status": status})

    def on_unsolicited(self, kind: str, payload: bytes) -> None:
        """save_measurement / ip_addresses: never asked for (no put_capabilities), so dropped
        unread; a failure text if a reply is wanted (the client wants none)."""
        log.debug("agent %s: dropping an unsolicited %s (%d bytes)", self._address, kind,
                  len(payload))
        self._reply(False, UNSOLICITED[kind])

    def open_stream(self, conn: SSHServerConnection, stream: str,
                    payload: bytes) -> tuple[Any, Any]:
        return commands.open_stream(conn, self._services.jobs, self, stream, payload)

    async def run_job(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._require_open()
        return await commands.run_cmd(self._require_conn(), job, timeout)

    def supports_scripts(self) -> bool:
        return self._runs_scripts

    def _reply(self, ok: bool, text: str = "", payload: bytes | None = None) -> None:
        reply_global(self._require_conn(), ok, payload if payload is not None else text.encode())

    def _refuse(self, text: str) -> None:
        """Fail the connection request with rport's text, then hang up."""
        self.lifecycle.advance(State.AUTHENTICATED)  # from REGISTERING; a no-op otherwise
        self._reply(False, text)
        self._require_conn().close()

    def _require_conn(self) -> SSHServerConnection:
        assert self._conn is not None
        return self._conn

    def _registration_overdue(self) -> None:
        if self.lifecycle.state is State.AUTHENTICATED:
            log.info("agent %s: no connection request within %ss; closing", self._address,
                     REGISTRATION_TIMEOUT)
            self.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A task owned by this session (cleanup waits for it) and listed for shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        for owner in (self._tasks, self._services.tasks):
            owner.add(task)
            task.add_done_callback(owner.discard)

    # ------------------------------------------------------------------ registration
    async def _register_or_refuse(self, client_id: str, details: dict[str, Any],
                                  remotes: list[Remote]) -> None:
        """The agent waits for an answer to new_connection. A server-side failure gets the text
        the client retries on, never one it would exit on for good."""
        try:
            await self._register(client_id, details, remotes)
        except _Refusal as refusal:
            log.info("agent %s: %s", self._address, refusal)
            self._refuse_if_open(str(refusal))
        except _TryLater as exc:
            log.warning("agent %s: %s; telling the client to retry", self._address, exc)
            self._refuse_if_open(_try_later_text(client_id))
        except Exception:
            log.exception("agent %s: registration failed; telling the client to retry",
                          self._address)
            self._refuse_if_open(_try_later_text(client_id))
        finally:
            self.limit_reading(None)

    def _refuse_if_open(self, text: str) -> None:
        if self.lifecycle.accepting_work:
            self._refuse(text)

    async def _register(self, client_id: str, details: dict[str, Any],
                        remotes: list[Remote]) -> None:
        assert self.credential is not None
        record = await self._connect(client_id, details)
        self.record = record  # from here on cleanup() records the disconnect
        self._next_tunnel_id = record.next_tunnel_id
        if not self.lifecycle.accepting_work:
            return
        try:
            tunnels = await self._establish(remotes, record)
        except _TryLater:
            raise
        except RportdError as exc:
            raise _Refusal(f"can't create tunnel: {exc.detail or exc}") from None
        if not self.lifecycle.advance(State.REGISTERED):
            return  # closed meanwhile
        self._log_connected(record)
        self._reply(True, payload=json.dumps([t.to_json() for t in tunnels]).encode())

    async def _connect(self, client_id: str, details: dict[str, Any]) -> ClientRecord:
        assert self.credential is not None
        credential, server = self.credential, self._services.config.server
        registry, quotas = self._services.registry, self._services.quotas
        try:  # the quota's places: connected clients but this id (a reconnect replaces itself)
            async with (quotas.hold(credential.tenant, "clients", lambda: registry.connected_count(
                    credential.tenant, client_id)) if quotas else contextlib.nullcontext()):
                return await self._retrying(lambda: registry.connect(
                    credential.tenant, client_id, credential.id, details, self,
                    server.auth_multiuse_creds))
        except (IdTaken, AlreadyConnected) as exc:
            raise _Refusal(exc.detail) from None
        except QuotaExceeded as exc:
            raise _Refusal(_try_later_text(client_id, exc.detail)) from None

    def _log_connected(self, record: ClientRecord) -> None:
        assert self.credential is not None
        if self._services.config.server.multi_tenancy and not record.tenant:
            log.warning("client %s connected with credential %r, which has no tenant: it is "
                        "orphaned, invisible to every API user; give the credential a tenant",
                        record.id, self.credential.id)
        else:
            log.info("client %s connected (tenant %r, auth id %r) from %s", record.id,
                     record.tenant, self.credential.id, self._address)

    async def _retrying(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a registry write, retrying store errors for up to STORE_RETRY_SECONDS while the
        connection lasts; then _TryLater."""
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + STORE_RETRY_SECONDS, 0.5
        while True:
            try:
                return await operation()
            except StoreError as exc:
                if not self.lifecycle.accepting_work or loop.time() + delay > deadline:
                    raise _TryLater(f"the database is unavailable: {exc}") from exc
                log.warning("agent %s: the database is unavailable (%s); retrying in %.1fs",
                            self._address, exc, delay)
            await self._sleep_unless_closing(delay)
            delay = min(delay * 2, 4.0)

    async def _sleep_unless_closing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.lifecycle.wait_closing(), seconds)

    def _default_client_id(self, details: dict[str, Any]) -> str:
        assert self.credential is not None
        server = self._services.config.server
        if server.equate_clientauthid_clientid and not server.auth_multiuse_creds:
            return self.credential.id
        # Stable across reconnects of the same machine, so its tunnels come back.
        seed = f"{self.credential.id}|{details.get('hostname', '')}|{details.get('name', '')}"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "rportd:" + seed))

    async def _establish(self, requested: list[Remote], record: ClientRecord) -> list[Tunnel]:
        """Set up the tunnels asked for now, then bring back the ones the client had before,
        each under its old id. A requested random-port tunnel that existed before gets its old
        port back if free. The record changes only once the list is persisted."""
        previous = [(str(t.get("id", "")), Remote.from_json(t)) for t in record.tunnels]
        made: list[Tunnel | None] = []
        for remote in requested:
            earlier = take_matching(previous, remote)
            if earlier is not None and not remote.lport:
                remote = dataclasses.replace(remote, lhost=earlier[1].lhost,
                                             lport=earlier[1].lport, lport_random=True)
            tunnel_id = earlier[0] if earlier is not None else self._new_tunnel_id()
            made.append(await self._add_live(tunnel_id, remote))
        for tunnel_id, remote in previous:
            made.append(await self._bring_back(record, tunnel_id, remote))
        tunnels = [t.to_json() for t in made if t is not None]
        await self._retrying(lambda: self._services.registry.set_tunnels(
            record, lambda _: tunnels, self._next_tunnel_id))
        return [t for t in made if t is not None]

    async def _bring_back(self, record: ClientRecord, tunnel_id: str,
                          remote: Remote) -> Tunnel | None:
        try:
            remote.check_local(self._services.ports)  # stored by an import, or rules changed
            return await self._add_live(tunnel_id or self._new_tunnel_id(), remote)
        except RportdError as exc:
            log.warning("client %s: tunnel %s:%s not re-established: %s", record.id,
                        remote.lhost, remote.lport, exc.detail)
            return None

    def _new_tunnel_id(self) -> str:
        """Ids count up per client and are persisted: never reused, even after a delete."""
        tunnel_id = self._next_tunnel_id
        self._next_tunnel_id += 1
        return str(tunnel_id)

    async def cleanup(self) -> None:
        """Run by the connection's owner task once it ends: wait for (then cancel) this
        session's tasks, close its tunnels, record the disconnect. Bounded in time."""
        self.lifecycle.close()
        if self._timeout:
            self._timeout.cancel()
        try:
            await self._finish_tasks()
            await self._release()
        finally:
            self._cleaned.set()

    async def _release(self) -> None:
        for tunnel in list(self.tunnels.values()):
            await self._close_tunnel(tunnel)
        self.tunnels.clear()
        if self._services.jobs is not None:
            self._services.jobs.session_closed(self)
        if self.record is not None:
            await self._services.registry.disconnect(self.record, self)
            log.info("client %s disconnected", self.record.id)

    async def wait_closed(self) -> None:
        await self._cleaned.wait()

    async def _finish_tasks(self) -> None:
        """A registration stops at its next check once closing; one stuck in I/O is cancelled."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=CLEANUP_WAIT)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CLEANUP_WAIT)

    # ------------------------------------------------------------------ internal interface
    def pause_tunnels(self, paused: bool) -> None:
        """Called when the agent's connection pauses or resumes writing."""
        self._paused = paused
        for tunnel in self.tunnels.values():
            tunnel.set_paused(paused)

    async def alive(self) -> bool:
        """Whether the agent answers a ping within LIVENESS_TIMEOUT (any answer will do: the Go
        client replies to `ping`, others refuse it, both prove the connection is alive)."""
        if not self.lifecycle.accepting_work or self._conn is None:
            return False
        try:
            await asyncio.wait_for(send_global_request(self._conn, "ping", b""), LIVENESS_TIMEOUT)
        except Exception as exc:  # timeout, or the connection went away meanwhile
            log.info("agent %s: no answer to a liveness check: %r", self._address, exc)
            return False
        return self.lifecycle.accepting_work

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
        except (ValueError, AttributeError, RecursionError):  # RecursionError: nested too deep
            return False, "the client sent an unreadable port check reply"

    async def open_tunnel(self, remote: Remote, *, check: bool) -> dict[str, Any]:
        return (await self.add_tunnel(remote, check=check)).to_json()

    async def add_tunnel(self, remote: Remote, *, check: bool = True) -> Tunnel:
        """An API tunnel: listen for `remote`, forward accepted connections to the agent, and
        persist it (a failed write closes it again)."""
        self._require_open()
        remote.check_local(self._services.ports)
        remote = dataclasses.replace(remote, rhost=remote.rhost or "127.0.0.1")
        if check:
            await self._check_reachable(remote)
        tunnel = await self._add_live(self._new_tunnel_id(), remote)
        try:
            await self._persist_tunnels(lambda current: [*current, tunnel.to_json()])
        except BaseException:
            await self._drop_live(tunnel.id)
            raise
        return tunnel

    async def _check_reachable(self, remote: Remote) -> None:
        is_open, why = await self.check_port(remote.target)
        if not is_open:
            raise BadRequest(f"remote {remote.target} is not reachable from the client: {why}",
                             code="ERR_CODE_REMOTE_PORT_CLOSED")

    async def _persist_tunnels(self, edit: Callable[[list[dict[str, Any]]],
                                                    list[dict[str, Any]]]) -> None:
        assert self.record is not None
        self._require_open()
        await self._services.registry.set_tunnels(self.record, edit, self._next_tunnel_id)

    def _require_open(self) -> None:
        if not self.lifecycle.accepting_work or self.record is None:
            raise BadRequest("the client is not connected", code="ERR_CODE_CLIENT_NOT_CONNECTED")

    async def _add_live(self, tunnel_id: str, remote: Remote) -> Tunnel:
        """Listen for `remote` as tunnel `tunnel_id`; refused once the connection is closing."""
        self._require_accepting()
        remote = dataclasses.replace(remote, rhost=remote.rhost or "127.0.0.1")
        tunnel = await self._listen(tunnel_id, remote)
        self.tunnels[tunnel.id] = tunnel
        tunnel.set_paused(self._paused)
        self._services.ports_in_use.add(int(tunnel.remote.lport))
        if not self.lifecycle.accepting_work:  # closed while we listened
            await self._drop_live(tunnel.id)
            self._require_accepting()
        return tunnel

    def _require_accepting(self) -> None:
        if not self.lifecycle.accepting_work:
            raise BadRequest("the client is not connected", code="ERR_CODE_CLIENT_NOT_CONNECTED")

    async def _listen(self, tunnel_id: str, remote: Remote) -> Tunnel:
        for taken in self.tunnels.values():
            if remote.lport and taken.remote.lport == remote.lport:
                raise TunnelError(f"local port {remote.lport} is already used by tunnel {taken.id}",
                                  code="ERR_CODE_LOCAL_PORT_IN_USE")
        if remote.lport and not remote.lport_random:
            tunnel = self._tunnel(tunnel_id, remote)
            await tunnel.listen(self.open_channel)
            return tunnel
        return await self._listen_random(tunnel_id, remote)

    async def _listen_random(self, tunnel_id: str, remote: Remote) -> Tunnel:
        remote = dataclasses.replace(remote, lhost=remote.lhost or "0.0.0.0", lport_random=True)
        candidates = self._services.ports.candidates(self._services.ports_in_use)[:50]
        if remote.lport:  # a random port this client had before: keep it if still free
            candidates.insert(0, int(remote.lport))
        for port in candidates:
            tunnel = self._tunnel(tunnel_id, dataclasses.replace(remote, lport=str(port)))
            try:
                await tunnel.listen(self.open_channel)
                return tunnel
            except TunnelError:
                continue  # busy: try another
        raise TunnelError("no free port left in used_ports", code="ERR_CODE_NO_FREE_PORT")

    def _tunnel(self, tunnel_id: str, remote: Remote) -> Tunnel:
        return Tunnel(tunnel_id, remote, meter=self._services.traffic,
                      write_deadline=self._services.config.server.tunnel_write_timeout)

    async def remove_tunnel(self, tunnel_id: str) -> bool:
        """Close a live tunnel at once (its streams are aborted), then persist its removal."""
        if tunnel_id not in self.tunnels:
            return False
        await self._drop_live(tunnel_id)
        if self.record is not None:
            await self._services.registry.set_tunnels(
                self.record, lambda current: [t for t in current if t.get("id") != tunnel_id])
        return True

    async def _drop_live(self, tunnel_id: str) -> None:
        tunnel = self.tunnels.pop(tunnel_id, None)
        if tunnel is not None:
            await self._close_tunnel(tunnel)

    async def _close_tunnel(self, tunnel: Tunnel) -> None:
        self._services.ports_in_use.discard(int(tunnel.remote.lport))
        await tunnel.close()

    async def open_channel(self, target: str, pipe: Pipe) -> None:
        """A stream for a tunnel; refused once the connection is closing."""
        if not self.lifecycle.accepting_work:
            raise ConnectionError("the agent connection is closing")
        await open_rport_channel(self._require_conn(), target, pipe.channel_session())

    def close(self) -> None:
        self.lifecycle.close()
        if self._conn is not None:
            self._conn.close()


class _Refusal(Exception):
    """A connection request answered with a failure text (its message), then hung up."""


class _TryLater(Exception):
    """The server cannot register the client now (its database is down): answer with the one
    failure text every rport client generation retries on, then hang up."""


def _try_later_text(client_id: str, why: str = "the server's database is unavailable") -> str:
    """rport clients before openrport's comm.WithRetry exit for good on any failure text and
    on a connection lost before the reply; all of them back off and retry on this prefix (also
    used over the tenant's client quota: the agent gets in once a place is free)."""
    return f'client is already connected: "{client_id}" cannot be registered now ({why}); retry later'

