"""The agent port: aiohttp accepts `rport-v1` WebSocket upgrades on any path and runs SSH inside.

Anything that is not an upgrade with `Sec-WebSocket-Protocol: rport-v1` gets 404 with an empty
body, as rport answers. A semaphore bounds concurrent SSH handshakes so a reconnect storm cannot
starve the API; agents beyond it wait in line, already upgraded.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
from collections.abc import Coroutine
from typing import Any

import asyncssh
from aiohttp import WSMsgType, web

from ..wire.websocket import WebSocketTransport
from .lifecycle import Lifecycle, State
from .session import AgentServices, AgentSession, RportServerConnection

__all__ = ["build_agent_app", "AGENT_SERVICES"]

log = logging.getLogger("rportd.agent_port")

AGENT_SERVICES: web.AppKey[AgentServices] = web.AppKey("agent_services")
_OPTIONS: web.AppKey[asyncssh.SSHServerConnectionOptions] = web.AppKey("ssh_options")
_HANDSHAKES: web.AppKey[asyncio.Semaphore] = web.AppKey("handshakes")
_LOGIN_TIMEOUT = 30.0


def _is_rport_upgrade(request: web.Request) -> bool:
    return (request.headers.get("Upgrade", "").strip().lower() == "websocket"
            and request.headers.get("Sec-WebSocket-Protocol", "") == "rport-v1")


async def handle_agent(request: web.Request) -> web.StreamResponse:
    if not _is_rport_upgrade(request):
        protocol = request.headers.get("Sec-WebSocket-Protocol", "")
        if protocol.startswith("rport-"):
            log.info("ignored client connection using protocol %r", protocol)
        return web.Response(status=404, body=b"")
    ws = web.WebSocketResponse(protocols=("rport-v1",), autoping=True, max_msg_size=0,
                               compress=False)
    if not ws.can_prepare(request).ok:
        return web.Response(status=404, body=b"")
    await ws.prepare(request)
    assert request.transport is not None
    _keepalive(request.transport.get_extra_info("socket"))
    peer = request.remote or ""
    transport = WebSocketTransport(request.transport, mask=False)
    await _run_ssh(request.app, ws, transport, peer)
    return ws


async def _run_ssh(app: web.Application, ws: web.WebSocketResponse,
                   transport: WebSocketTransport, peer: str) -> None:
    lifecycle = Lifecycle(peer)
    session = AgentSession(app[AGENT_SERVICES], lifecycle)
    options = copy.copy(app[_OPTIONS])  # shared settings; only the session factory differs
    options.protocol_factory = lambda: session
    reader: asyncio.Task[None] | None = None
    try:
        async with app[_HANDSHAKES]:
            lifecycle.advance(State.HANDSHAKING)
            conn = RportServerConnection(asyncio.get_running_loop(), options)
            transport.attach(conn)
            reader = asyncio.create_task(_pump(ws, transport))
            await _first(reader, session.auth_done.wait())
        await _first(reader, lifecycle.wait_closing())
    finally:
        if reader is not None:
            reader.cancel()
        lifecycle.close()
        transport.lost(None)
        try:
            await session.cleanup()
        finally:
            lifecycle.advance(State.CLOSED)


async def _first(task: asyncio.Task[None], other: Coroutine[Any, Any, Any]) -> None:
    """Wait until `task` ends or `other` completes, whichever is first."""
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _keepalive(sock: socket.socket | None) -> None:
    """rport-v1 has no server-side liveness check; TCP keepalive finds agents whose network
    vanished without a FIN (after about 2 minutes) so their tunnels and state are released."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)


async def _pump(ws: web.WebSocketResponse, transport: WebSocketTransport) -> None:
    """Feed every WebSocket message into SSH, ignoring boundaries; stop reading while SSH is
    paused, which lets aiohttp stop reading the socket (backpressure to the agent)."""
    while True:
        await transport.reading_allowed()
        msg = await ws.receive()
        if msg.type == WSMsgType.BINARY:
            transport.feed(msg.data)
        elif msg.type == WSMsgType.TEXT:
            transport.feed(msg.data.encode())
        else:  # CLOSE, CLOSED, ERROR (garbage after the upgrade lands here)
            return


def build_agent_app(services: AgentServices, host_key: asyncssh.SSHKey) -> web.Application:
    app = web.Application(client_max_size=services.config.server.max_request_bytes)
    app[AGENT_SERVICES] = services
    app[_OPTIONS] = asyncssh.SSHServerConnectionOptions(
        server_host_keys=[host_key], login_timeout=_LOGIN_TIMEOUT, keepalive_interval=0,
        allow_scp=False, agent_forwarding=False, x11_forwarding=False,
        server_factory=lambda: None)
    app[_HANDSHAKES] = asyncio.Semaphore(services.config.server.max_concurrent_handshakes)
    app.router.add_route("*", "/{tail:.*}", handle_agent)
    return app
