"""Agent-port password guessing against a real rportd: the guessing address is banned after
`max_failed_login` failures (openrport's rule), other addresses and tenants keep logging in, and
agent guessers cannot starve API password checks (separate pools)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from rportd.auth.passwords import PasswordPool, hash_password
from rportd.client.connection import (
    CIPHERS,
    KEX_ALGS,
    MACS,
    AgentSettings,
    RportClientConnection,
    _AgentSSHClient,
    open_ssh,
)
from rportd.client.websocket import WebSocketTransport, _ClientProtocol, parse_server

from .api_world import World, build_world

CREDENTIALS = {"cj": ("cj-secret", "J"), "cg": ("cg-secret", "G")}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    seed = [("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
             [(auth_id, secret, tenant) for auth_id, (secret, tenant) in CREDENTIALS.items()])]
    built = build_world(tmp_path, "sqlite", {"db_type": "sqlite",
                                             "db_name": str(tmp_path / "rportd.db")},
                        seed=seed, agents=())
    yield built
    built.stop()


class Guesser(_AgentSSHClient):
    """Offers one password after another on one SSH connection, as a guesser would."""

    def __init__(self, passwords: list[str]):
        super().__init__("")
        self._passwords = iter(passwords)
        self.tried = 0

    def password_auth_supported(self) -> bool:
        return True

    def password_auth_requested(self) -> str | None:
        password = next(self._passwords, None)
        self.tried += password is not None
        return password


async def websocket_from(world: World, source: str) -> WebSocketTransport:
    """The rport-v1 upgrade from a chosen source address (127.0.0.2: another client host)."""
    loop = asyncio.get_running_loop()
    server = parse_server(world.rportd.url)
    _, protocol = await loop.create_connection(
        lambda: _ClientProtocol(server, "guesser"), "127.0.0.1", world.rportd.agent_port,
        local_addr=(source, 0))
    return await asyncio.wait_for(protocol.upgraded, 10)


async def guess(world: World, source: str, auth_id: str, passwords: list[str]) -> bool:
    """True when one of the passwords logged in."""
    client = Guesser(passwords)
    options = asyncssh.SSHClientConnectionOptions(
        username=auth_id, known_hosts=([], [], []), client_keys=None, agent_path=None,
        kex_algs=KEX_ALGS, encryption_algs=CIPHERS, mac_algs=MACS, compression_algs=["none"],
        server_host_key_algs=["ecdsa-sha2-nistp256"], preferred_auth="password",
        client_factory=lambda: client, keepalive_interval=0, login_timeout=60)
    loop = asyncio.get_running_loop()
    options.waiter = loop.create_future()
    conn = RportClientConnection(loop, options, wait="auth")
    try:  # once the address is banned, the agent port drops it at accept
        transport = await websocket_from(world, source)
    except ConnectionError:
        return False
    transport.attach(conn)
    try:
        await asyncio.wait_for(options.waiter, 60)
    except (asyncssh.PermissionDenied, asyncssh.ConnectionLost, ConnectionError):
        return False
    finally:
        conn.close()
    return True


async def test_a_thousand_wrong_passwords_ban_the_address_not_the_others(world: World) -> None:
    batches = [[f"wrong-{n}-{i}" for i in range(50)] for n in range(20)]  # 1,000 guesses
    results = await asyncio.gather(*(guess(world, "127.0.0.2", "cj", b) for b in batches))
    assert not any(results)
    # banned: even the right password of another tenant's credential fails from there
    assert not await guess(world, "127.0.0.2", "cg", [CREDENTIALS["cg"][0]])
    started = time.monotonic()
    settings = AgentSettings(parse_server(world.rportd.url), "cg", CREDENTIALS["cg"][0],
                             keepalive=0)
    conn = await asyncio.wait_for(open_ssh(settings), 10)
    conn.close()
    assert time.monotonic() - started < 2.0
    log = world.rportd.log_text()
    assert log.count("address '127.0.0.2' banned for 3600s") == 1, log[-2000:]
    assert "'127.0.0.1' banned" not in log


async def test_agent_guessers_do_not_starve_api_password_checks() -> None:
    """The agent pool full of cost-12 checks; an API check on its own pool is not behind them."""
    agent, api = PasswordPool("agent-test", workers=1, queue=32), PasswordPool("api-test",
                                                                               workers=1)
    try:
        slow = await asyncio.to_thread(hash_password, "agent-pw", 12)
        quick = await asyncio.to_thread(hash_password, "api-pw", 4)
        backlog = [asyncio.ensure_future(agent.verify("guess", slow)) for _ in range(12)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await api.verify("api-pw", quick)
        assert time.monotonic() - started < 0.5  # not 12 x 0.2 s behind the agent backlog
        for task in backlog:
            task.cancel()
        await asyncio.gather(*backlog, return_exceptions=True)
    finally:
        agent.close()
        api.close()
