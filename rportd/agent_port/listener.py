"""The agent port: accepts sockets itself, admits them, and runs one owner task per connection.

The owner task walks the connection through its lifecycle (lifecycle.py) with a deadline at each
step: the upgrade and the agent's SSH version line, a handshake slot, the key exchange, the login.
Its `finally` always runs the session's cleanup. Accepting pauses, instead of spinning and logging,
while the process is out of file descriptors or at its own connection budget.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import logging
import resource
import socket
import time
from collections.abc import Awaitable
from typing import Any

import asyncssh

from ..tenants import tenant_for_host
from ..wire.asyncssh_internals import SERVER_VERSION
from .admission import Admission, Busy, Limits
from .lifecycle import Lifecycle, State
from .session import AgentServices, AgentSession, RportServerConnection
from .transport import AgentSocket

__all__ = ["AgentPort", "limits_from_config"]

log = logging.getLogger("rportd.agent_port")

_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_RETRY_ACCEPT = 0.5
_LOG_EVERY = 10.0
_FD_RESERVE = 128  # descriptors kept for the database, the API, tunnels and log files


def limits_from_config(services: AgentServices) -> Limits:
    server = services.config.server
    return Limits(server.upgrade_timeout, server.handshake_timeout, server.login_timeout,
                  server.max_concurrent_handshakes, server.max_handshakes_waiting,
                  server.max_unauthenticated, server.max_unauthenticated_per_address)


def _raise_fd_limit() -> int:
    """Use the hard limit on open files (agents are sockets); return the soft limit now set."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class _Throttled:
    """Logs one line per interval for a recurring event, with the count since the last line."""

    def __init__(self, message: str):
        self._message = message
        self._last = 0.0
        self._count = 0

    def __call__(self, *args: Any) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= _LOG_EVERY:
            log.warning(self._message + " (%d times)", *args, self._count)
            self._last, self._count = now, 0


class AgentPort:
    """The listening socket of `[server] address` and every connection on it."""

    def __init__(self, services: AgentServices, host_key: asyncssh.SSHKey):
        self.services = services
        self.admission = Admission(limits_from_config(services))
        limits = self.admission.limits
        self._options = asyncssh.SSHServerConnectionOptions(
            server_host_keys=[host_key], login_timeout=limits.login_timeout, keepalive_interval=0,
            allow_scp=False, agent_forwarding=False, x11_forwarding=False,
            server_factory=lambda: None)
        self._socks: list[socket.socket] = []
        self._accepting = False
        self._owners: set[asyncio.Task[None]] = set()
        self._sockets: set[AgentSocket] = set()
        self._budget = 0
        # connections not logged in, oldest first, with their socket once it is wrapped
        self._unauthenticated: dict[Lifecycle, AgentSocket | None] = {}
        self._log_evicted = _Throttled("agent port: at max_unauthenticated; closed the oldest "
                                       "connections not logged in to make room")
        self._log_refused = _Throttled("agent port: refused connections from banned addresses "
                                       "or over the unauthenticated limits")
        self._log_fds = _Throttled("agent port: out of file descriptors (%s); accepting paused")

    # ------------------------------------------------------------------ accepting
    def start(self, socks: list[socket.socket]) -> None:
        """Serve on sockets bound at start-up (one per address `[server] address` resolves to)."""
        self._budget = max(64, _raise_fd_limit() - _FD_RESERVE)
        for sock in socks:
            sock.setblocking(False)
            sock.listen(1024)
        self._socks = list(socks)
        self._resume_accepting()

    def _resume_accepting(self) -> None:
        if self._socks and not self._accepting and len(self._owners) < self._budget:
            loop = asyncio.get_running_loop()
            for sock in self._socks:
                loop.add_reader(sock.fileno(), self._accept_some, sock)
            self._accepting = True

    def _pause_accepting(self) -> None:
        if self._accepting:
            loop = asyncio.get_running_loop()
            for sock in self._socks:
                loop.remove_reader(sock.fileno())
            self._accepting = False

    def _accept_some(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._out_of_descriptors(exc)
                return  # ECONNABORTED and friends: that peer is gone already
            self._accepted(conn, str(address[0]))

    def _out_of_descriptors(self, exc: OSError) -> None:
        self._log_fds(exc.strerror)
        self._pause_accepting()
        asyncio.get_running_loop().call_later(_RETRY_ACCEPT, self._resume_accepting)

    def _accepted(self, conn: socket.socket, address: str) -> None:
        if not self._admit(address):
            self._log_refused()
            conn.close()
            return
        conn.setblocking(False)
        _keepalive(conn)
        lifecycle = Lifecycle(address, self._observe)
        self._unauthenticated[lifecycle] = None
        task = asyncio.get_running_loop().create_task(self._own(conn, lifecycle))
        self._owners.add(task)
        task.add_done_callback(self._owner_done)
        if len(self._owners) >= self._budget:
            self._pause_accepting()

    def _owner_done(self, task: asyncio.Task[None]) -> None:
        self._owners.discard(task)
        self._resume_accepting()

    def _admit(self, address: str) -> bool:
        """Refuse banned addresses and a source over its own cap. At the global cap, the oldest
        connection that has not logged in makes room: strangers holding idle sockets cannot
        keep an agent out, and a real agent needs the place for milliseconds only."""
        if self._banned(address) or self.admission.source_full(address):
            return False
        if self.admission.admit(address):
            return True
        oldest = next(iter(self._unauthenticated), None)
        if oldest is None:
            return False
        self._log_evicted()
        oldest.close()  # its observer frees its place; its owner hangs up
        return self.admission.admit(address)

    def _banned(self, address: str) -> bool:
        auth = self.services.client_auth
        return auth is not None and auth.gate.throttle.address_banned(address)

    # ------------------------------------------------------------------ one connection
    async def _own(self, conn: socket.socket, lifecycle: Lifecycle) -> None:
        """The owner of one connection, from accept to closed."""
        address = lifecycle.peer
        agent: AgentSocket | None = None
        session: AgentSession | None = None
        try:
            _, agent = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: AgentSocket(SERVER_VERSION + b"\r\n", lifecycle.close), conn)
            self._sockets.add(agent)
            if lifecycle in self._unauthenticated:
                self._unauthenticated[lifecycle] = agent
            session = await self._handshake(agent, lifecycle)
            await lifecycle.wait_closing()
        except (TimeoutError, Busy, ConnectionError, OSError) as exc:
            log.debug("agent %s: dropped while %s: %s", address, lifecycle.state.name.lower(),
                      exc or type(exc).__name__)
        finally:
            await self._finish(conn, agent, session, lifecycle)

    async def _handshake(self, agent: AgentSocket, lifecycle: Lifecycle) -> AgentSession:
        """Version lines and KEXINITs are cheap and need no slot; the key exchange's computing
        part waits for one, so connections that stall before it never hold a slot."""
        limits = self.admission.limits
        await self._step(agent.version_seen, lifecycle, limits.upgrade_timeout)
        lifecycle.advance(State.HANDSHAKING)
        session = self._start_ssh(agent, lifecycle)
        await self._step(agent.crypto_requested, lifecycle, limits.handshake_timeout)
        async with self.admission.handshake_slot(lifecycle.peer):
            agent.release_held()
            await self._step(lifecycle.wait_key_exchange(), lifecycle, limits.handshake_timeout)
        await self._step(lifecycle.wait_reached(State.AUTHENTICATED), lifecycle,
                         limits.login_timeout)
        return session

    async def _step(self, awaitable: Awaitable[Any], lifecycle: Lifecycle,
                    timeout: float) -> None:
        """Wait for one step, at most `timeout`; a connection that closes meanwhile ends it."""
        if not lifecycle.accepting_work:
            raise ConnectionResetError("closed")
        step = asyncio.ensure_future(awaitable)
        closing = asyncio.ensure_future(lifecycle.wait_closing())
        try:
            done, _ = await asyncio.wait({step, closing}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            step.cancel()
            closing.cancel()
        if not done:
            raise TimeoutError(f"no progress within {timeout:g}s")
        if step not in done:
            raise ConnectionResetError("closed")
        step.result()

    def _start_ssh(self, agent: AgentSocket, lifecycle: Lifecycle) -> AgentSession:
        assert agent.ssh is not None
        session = AgentSession(self.services, lifecycle)
        session.limit_reading = agent.budget_reading
        domain = self.services.config.api.tenant_domain
        session.host_tenant = tenant_for_host(agent.host, domain).tenant if domain else None
        options = copy.copy(self._options)  # shared settings; only the session differs
        options.protocol_factory = lambda: session
        conn = RportServerConnection(asyncio.get_running_loop(), options)
        conn.version_already_sent = True
        # asyncssh ignores a full transport; the session pauses its tunnels' sockets instead
        agent.gate.listeners.add(
            lambda room: conn.resume_writing() if room else conn.pause_writing())
        agent.ssh.attach(conn)
        return session

    async def _finish(self, conn: socket.socket, agent: AgentSocket | None,
                      session: AgentSession | None, lifecycle: Lifecycle) -> None:
        lifecycle.close()
        try:
            if agent is not None:
                self._hang_up(agent)
            else:
                conn.close()
            if session is not None:
                await session.cleanup()
        finally:
            lifecycle.advance(State.CLOSED)
            if agent is not None:
                self._sockets.discard(agent)

    def _hang_up(self, agent: AgentSocket) -> None:
        """Close politely; abort if the agent does not take the last bytes within a second."""
        if agent.ssh is not None and not agent.closed.done():
            agent.ssh.close()
        elif agent.raw is not None:
            agent.raw.close()
        if not agent.closed.done():
            asyncio.get_running_loop().call_later(1.0, agent.abort)

    def _observe(self, lifecycle: Lifecycle, old: State, new: State) -> None:
        """Called inside every transition. Leaving pre-authentication frees the place at once;
        logging in also lifts the frame limit before the agent's next frame is parsed (its
        connection request follows the login's answer without waiting for our owner task)."""
        if old < State.AUTHENTICATED <= new:
            self.admission.release(lifecycle.peer)
            agent = self._unauthenticated.pop(lifecycle, None)
            if agent is not None and new is State.AUTHENTICATED:
                agent.logged_in(self.services.config.server.max_request_bytes_client)

    # ------------------------------------------------------------------ shutdown
    def stop_accepting(self) -> None:
        """Close the listening socket: connections that arrive now are refused by the kernel
        (agents retry), never half-served by a process that is going away."""
        self._pause_accepting()
        for sock in self._socks:
            sock.close()
        self._socks = []

    async def stop(self) -> None:
        """Stop accepting, hang up on every connection, wait (bounded) for their cleanups."""
        self.stop_accepting()
        for agent in list(self._sockets):
            self._hang_up(agent)
        if self._owners:
            await asyncio.wait(set(self._owners), timeout=5)
        for task in list(self._owners):
            task.cancel()


def _keepalive(sock: socket.socket) -> None:
    """rport-v1 has no server-side liveness check; TCP keepalive finds agents whose network
    vanished without a FIN (after about 2 minutes) so their tunnels and state are released.
    TCP_NODELAY: window adjusts and small packets must not wait for Nagle's delayed ACK."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
