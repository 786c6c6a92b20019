"""The newest rport client (openrport 0.9.13) against a real rportd with its default limits, on
SQLite and on MariaDB: its exact connection request over SSH in a WebSocket, framed as the Go
client frames it; every field it reports in the API; its password nowhere (database files, a
row dump, the debug log, any API answer); its later requests answered as they must be."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from rportd.client.connection import AgentSettings, RetryableError, connect_once, open_ssh, register
from rportd.client.websocket import parse_server
from rportd.wire.asyncssh_internals import send_global_notice, send_global_request

from .api_world import World, build_world, create_mysql_database, drop_mysql_database
from .api_world import _hash as bcrypt_hash
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, require_mysql
from .processes import Agent, wait_for

SAMPLE = (Path(__file__).parent / "samples" / "openrport-0.9.13-new_connection.json").read_bytes()
AUTH_ID, PASSWORD = "newc", "EXAMPLE-SECRET-pw"  # the credential inside the sample, in clear
TUNNEL_PASSWORD = "TUNNEL-PW-93f1"
SECRETS = (PASSWORD.encode(), TUNNEL_PASSWORD.encode())
LIMIT = 512 * 1024  # [server] max_request_bytes_client by default
# The client object of the multi-tenancy sample (seed 003), field by field, with its JSON types.
SEED_FIELDS = {"tenant": str, "id": str, "name": str, "os": str, "os_arch": str, "os_family": str,
               "os_kernel": str, "os_full_name": str, "os_version": str,
               "os_virtualization_system": str, "os_virtualization_role": str,
               "cpu_family": str, "cpu_model": str, "cpu_model_name": str, "cpu_vendor": str,
               "num_cpus": int, "mem_total": int, "timezone": str, "hostname": str,
               "ipv4": list, "ipv6": list, "tags": list, "version": str, "address": str,
               "tunnels": list}


def _seed() -> list[tuple[str, list[tuple[Any, ...]]]]:
    return [
        ("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
         [("alice", bcrypt_hash("alice-pw-1"), "J")]),
        ("INSERT INTO {groups} (username, {group}, tenant) VALUES (?, ?, ?)",
         [("alice", "Administrators", "J")]),
        ("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
         [(AUTH_ID, bcrypt_hash(PASSWORD), "J")]),
    ]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    """rportd with its default limits, multi-tenant, logging at debug; no agent yet."""
    tmp = tmp_path_factory.mktemp(f"newest-{request.param}")
    if request.param == "sqlite":
        database: dict[str, object] = {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    else:
        require_mysql().close()
        database = {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}",
                    "db_user": MYSQL_USER, "db_password": MYSQL_PASSWORD,
                    "db_name": create_mysql_database()}
    built = build_world(tmp, request.param, database, {"logging": {"log_level": "debug"}},
                        seed=_seed(), agents=())
    built.answers = []  # type: ignore[attr-defined]  # every API body this module read
    try:
        yield built
    finally:
        built.stop()
        if request.param == "mysql":
            drop_mysql_database(str(database["db_name"]))


def api(world: World, path: str) -> Any:
    response = world.request("GET", path, "alice")
    world.answers.append(response.body)  # type: ignore[attr-defined]
    assert response.status == 200, response.body
    return response.json()["data"]


def newest(world: World, payload: bytes = SAMPLE) -> AgentSettings:
    """Our agent sending `payload` as its connection request, framed and flow-controlled as the
    Go client is (a real WebSocket and SSH connection to the real rportd)."""
    return AgentSettings(parse_server(world.rportd.url), AUTH_ID, PASSWORD, keepalive=0,
                         wire_pattern="go", go_frames=True, raw_request=payload)


def sample_with(**changes: Any) -> bytes:
    request = json.loads(SAMPLE)
    request.update(changes)
    return json.dumps(request, separators=(",", ":")).encode()


def expected_configuration() -> dict[str, Any]:
    """The sample's ClientConfiguration without the credential, everything else kept."""
    config = copy.deepcopy(json.loads(SAMPLE)["ClientConfiguration"])
    for key in ("auth", "auth_user", "auth_pass"):
        del config["client"][key]
    return dict(config)


async def test_the_exact_request_registers_and_every_field_is_in_the_api(world: World) -> None:
    assert len(SAMPLE) == 2392 and PASSWORD.encode() in SAMPLE  # over rport's old 2,048 bytes
    conn, tunnels = await connect_once(newest(world))
    try:
        assert tunnels == []
        client = api(world, "/api/v1/clients/new-1")
        local_port = conn.get_extra_info("sockname")[1]
        sample = json.loads(SAMPLE)
        assert client == {
            "id": "new-1", "name": "Newest client", "os": sample["OS"], "os_arch": "amd64",
            "os_family": "debian", "os_kernel": "linux", "os_full_name": "Debian 12.11",
            "os_version": "12.11", "os_virtualization_system": "KVM",
            "os_virtualization_role": "guest", "cpu_family": "25", "cpu_model": "17",
            "cpu_model_name": "AMD EPYC", "cpu_vendor": "AuthenticAMD", "num_cpus": 2,
            "mem_total": 25276502016, "timezone": "UTC (UTC+00:00)", "hostname": "vm",
            "ipv4": ["192.0.2.2"], "ipv6": ["fd00::2", "fe80::fc:ff:fe00:1"], "tags": ["edge"],
            "labels": {}, "version": "0.9.13-10-gc3214387",
            "address": f"127.0.0.1:{local_port}",  # host and port, as rport shows it
            "session_id": "60a14ceb-4f0b-462a-80f0-9b187e6054ca", "updates_status": None,
            "client_configuration": expected_configuration(), "tunnels": [],
            "disconnected_at": None, "connection_state": "connected", "client_auth_id": AUTH_ID,
            "tenant": "J"}
        for field, kind in SEED_FIELDS.items():
            assert isinstance(client[field], kind), field
    finally:
        conn.close()
    await conn.wait_closed()


@pytest.mark.parametrize("query, found", [
    ("filter[os_full_name]=Debian*", True), ("filter[os_version]=12.11", True),
    ("filter[os_virtualization_system]=KVM", True), ("filter[cpu_vendor]=AuthenticAMD", True),
    ("filter[cpu_model_name]=AMD*", True), ("filter[num_cpus]=2", True),
    ("filter[mem_total]=25276502016", True), ("filter[timezone]=UTC*", True),
    ("filter[session_id]=60a14ceb-*", True), ("filter[ipv6]=fd00::*", True),
    ("filter[labels]=city:*", False), ("filter[num_cpus]=16", False),
    ("filter[os_virtualization_role]=host", False)])
def test_the_new_fields_filter_like_the_others(world: World, query: str, found: bool) -> None:
    listed = [c["id"] for c in api(world, f"/api/v1/clients?{query}")]
    assert ("new-1" in listed) is found


async def test_labels_are_kept_and_filterable(world: World) -> None:
    conn, _ = await connect_once(newest(world, sample_with(ID="labelled",
                                                           Labels={"city": "Berlin"})))
    try:
        assert api(world, "/api/v1/clients/labelled")["labels"] == {"city": "Berlin"}
        listed = [c["id"] for c in api(world, "/api/v1/clients?filter[labels]=city:%20Berl*")]
        assert listed == ["labelled"]
    finally:
        conn.close()


async def test_later_requests_get_the_answers_the_newest_client_expects(world: World) -> None:
    conn, _ = await connect_once(newest(world, sample_with(ID="reports")))
    try:
        status = {"refreshed": "2026-12-01T10:00:00Z", "updates_available": 3,
                  "security_updates_available": 1, "reboot_pending": True,
                  "update_summaries": [{"title": "libc6", "description": "2.36-9+deb12u9",
                                        "reboot_required": True, "is_security_update": True}]}
        send_global_notice(conn, "updates_status", json.dumps(status).encode())  # as Go: no reply
        shown = wait_for(lambda: api(world, "/api/v1/clients/reports")["updates_status"],
                         what="updates_status stored")
        assert shown == {**status, "error": "", "hint": ""}
        # never solicited (rportd sends no put_capabilities): refused with a text when a reply
        # is wanted, dropped when not; anything unknown that wants a reply gets a failure
        ok, text = await send_global_request(conn, "save_measurement", b'{"cpu_usage_percent":1}')
        assert not ok and b"monitoring was not requested" in text
        send_global_notice(conn, "ip_addresses", b'{"IPv4":"198.51.100.7"}')
        ok, text = await asyncio.wait_for(send_global_request(conn, "no_such_request", b"x"), 5)
        assert not ok
        ok, text = await send_global_request(conn, "updates_status", b'{"updates_available":"3"}')
        assert not ok and b"invalid updates_status: updates_available" in text
        ok, _ = await asyncio.wait_for(send_global_request(conn, "ping", b""), 5)
        assert ok  # still connected and answering
        assert api(world, "/api/v1/clients/reports")["updates_status"]["updates_available"] == 3
    finally:
        conn.close()


async def test_newer_remote_keys_are_accepted_and_the_tunnel_password_is_not_kept(
        world: World) -> None:
    remote = {"name": "ssh", "protocol": "tcp", "lhost": "0.0.0.0", "lport": "", "lport_random":
              False, "owner": "", "rhost": "127.0.0.1", "rport": "22", "scheme": None, "acl": None,
              "idle_timeout_minutes": 0, "auto_close": 0, "http_proxy": False, "host_header": "",
              "auth_user": "tunnel-user", "auth_password": TUNNEL_PASSWORD, "tunnel_url": ""}
    conn, tunnels = await connect_once(newest(world, sample_with(ID="tunnelled", Remotes=[remote])))
    try:
        assert len(tunnels) == 1 and tunnels[0]["lport_random"] is True
        assert tunnels[0]["name"] == "ssh" and tunnels[0]["protocol"] == "tcp"
        shown = api(world, "/api/v1/clients/tunnelled")["tunnels"]
        assert [t["lport"] for t in shown] == [tunnels[0]["lport"]]
    finally:
        conn.close()
    udp = {**remote, "protocol": "udp", "auth_password": ""}
    with pytest.raises(Exception, match="protocol 'udp' is not supported: rportd tunnels are TCP"):
        await connect_once(newest(world, sample_with(ID="udp", Remotes=[udp])))


async def test_the_2021_clients_request_keeps_working(world: World) -> None:
    old = (b'{"Version":"0.0.0-src","ID":"old-1","Name":"dumpname","OS":"Linux vm","OSArch":'
           b'"amd64","OSFamily":"debian","OSKernel":"linux","Hostname":"vm","IPv4":["192.0.2.2"],'
           b'"IPv6":[],"Tags":["t1"],"Remotes":[{"lhost":"0.0.0.0","lport":"","rhost":"127.0.0.1",'
           b'"rport":"22","lport_random":false,"scheme":null,"acl":null}]}')
    conn, tunnels = await connect_once(newest(world, old))
    try:
        client = api(world, "/api/v1/clients/old-1")
        assert client["tags"] == ["t1"] and len(tunnels) == 1
        assert (client["num_cpus"], client["mem_total"], client["labels"], client["os_full_name"],
                client["client_configuration"], client["session_id"]) == (0, 0, {}, "", None, "")
    finally:
        conn.close()


async def test_requests_just_under_and_just_over_max_request_bytes_client(world: World) -> None:
    def padded(size: int, client_id: str) -> bytes:
        payload = sample_with(ID=client_id, Padding="")
        return sample_with(ID=client_id, Padding="x" * (size - len(payload)))

    at_limit = padded(LIMIT, "at-limit")
    assert len(at_limit) == LIMIT
    conn, _ = await connect_once(newest(world, at_limit))  # one 512 KiB SSH packet, Go-framed
    conn.close()
    assert api(world, "/api/v1/clients/at-limit")["name"] == "Newest client"
    over = padded(LIMIT + 1, "over-limit")
    with pytest.raises(Exception, match=f"invalid connection request: larger than {LIMIT} bytes"):
        await connect_once(newest(world, over))
    # beyond what one SSH packet may carry here: the connection is dropped, rportd serves on
    conn = await open_ssh(newest(world))
    with pytest.raises(RetryableError):
        await asyncio.wait_for(register(conn, padded(LIMIT + 4096, "far-over")), 10)
    conn, _ = await connect_once(newest(world, sample_with(ID="after-far-over")))
    conn.close()


@pytest.mark.parametrize("payload, reply", [
    (sample_with(NumCPUs="2"), "invalid connection request: NumCPUs must be a whole number"),
    (sample_with(MemoryTotal=-1), "invalid connection request: MemoryTotal must be a whole"),
    (sample_with(MemoryTotal=1.5), "invalid connection request: MemoryTotal must be a whole"),
    (sample_with(Labels=["a"]), "invalid connection request: Labels must be an object of"),
    (sample_with(Labels={"a": 1}), "invalid connection request: Labels must be an object of"),
    (sample_with(OSFullName=12), "invalid connection request: OSFullName must be a string"),
    (sample_with(Tags=[""] * 1001), "invalid connection request: Tags has more than 1000"),
    (sample_with(ClientConfiguration=[]), "invalid connection request: ClientConfiguration must"),
    (sample_with(ClientConfiguration={"x": [0] * 20_000}),
     "invalid connection request: ClientConfiguration has more than 10000 values"),
    (b"[" * 900 + b"]" * 900, "invalid connection request: "),
    (sample_with(Remotes=[{"rport": "53", "protocol": "udp"}]),
     "can't create tunnel: protocol 'udp' is not supported: rportd tunnels are TCP only"),
    (sample_with(Remotes=[{"rport": "80", "http_proxy": True}]),
     "can't create tunnel: http_proxy is not supported by rportd"),
    (sample_with(Remotes=[{"rport": "80", "idle_timeout_minutes": 5}]),
     "can't create tunnel: idle_timeout_minutes is not supported by rportd"),
    (sample_with(Remotes=[{"rport": "80", "protocol": "sctp"}]),
     "invalid connection request: protocol 'sctp' is not one of tcp, udp, tcp+udp"),
    (sample_with(Remotes=[{"rport": "80", "protocol": "u" * 900}]),
     "invalid connection request: protocol 'uuuu"),
])
async def test_malformed_fields_of_the_full_request_are_refused_with_a_text(
        world: World, payload: bytes, reply: str) -> None:
    conn = await open_ssh(newest(world))
    ok, text = await asyncio.wait_for(send_global_request(conn, "new_connection", payload), 10)
    assert not ok and text.decode().startswith(reply) and len(text) < 400, text[:400]
    await asyncio.wait_for(conn.wait_closed(), 5)


async def test_rportd_serves_on_after_malformed_requests(world: World) -> None:
    conn, _ = await connect_once(newest(world, sample_with(ID="good-after-bad")))
    conn.close()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _lock_the_registry(world: World) -> Callable[[], None]:
    """Hold rportd's client registry locked from another connection (a real outage of writes);
    returns the unlock."""
    if world.kind == "sqlite":
        locker = sqlite3.connect(str(world.database["db_name"]), isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")

        def release_sqlite() -> None:
            locker.execute("ROLLBACK")
            locker.close()

        return release_sqlite
    mysql = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                            password=MYSQL_PASSWORD, database=str(world.database["db_name"]))
    with mysql.cursor() as cursor:
        cursor.execute("LOCK TABLES `clients` WRITE")

    def release_mysql() -> None:
        with mysql.cursor() as cursor:
            cursor.execute("UNLOCK TABLES")
        mysql.close()

    return release_mysql


async def test_a_flood_while_registration_waits_is_not_read(world: World) -> None:
    """The client sends nothing until new_connection is answered; a peer that floods meanwhile
    (here: 24 packets of 512 KiB while the database is locked) is read for 64 KiB, no more."""
    assert world.rportd.proc is not None
    pid, log_lines = world.rportd.proc.pid, world.rportd.log_text().count("retrying in")
    conn = await open_ssh(newest(world))
    before = _rss(pid)
    unlock = _lock_the_registry(world)
    try:
        answer = asyncio.ensure_future(send_global_request(
            conn, "new_connection", sample_with(ID="flooder")))
        await asyncio.to_thread(
            wait_for, lambda: world.rportd.log_text().count("retrying in") > log_lines, 15.0,
            "a registration retrying on the locked database")
        for _ in range(24):
            send_global_notice(conn, "ping", b"x" * (LIMIT - 64))
        with pytest.raises(AssertionError, match="timed out"):  # 2 s of it: no growth
            await asyncio.to_thread(wait_for, lambda: _rss(pid) - before > 6 << 20, 2.0)
    finally:
        unlock()
    ok, _ = await asyncio.wait_for(answer, 15)
    assert ok, "registered once the database was back"
    ok, _ = await asyncio.wait_for(send_global_request(conn, "ping", b""), 10)
    assert ok, "the flood was read after the answer, and the agent is served"
    conn.close()


def test_our_agent_reports_the_newest_clients_fields(world: World) -> None:
    agent = Agent(world.rportd.tmp, world.rportd.url, f"{AUTH_ID}:{PASSWORD}", "--id", "ours",
                  name="ours").start()
    world.agents.append(agent)
    agent.wait_connected()
    client = api(world, "/api/v1/clients/ours")
    assert client["num_cpus"] == os.cpu_count() and client["mem_total"] > 0
    assert re.fullmatch(r".+ \(UTC[+-]\d\d:\d\d\)", client["timezone"])
    assert uuid.UUID(client["session_id"]) and client["os_full_name"]
    assert client["cpu_model_name"] or not Path("/proc/cpuinfo").exists()
    assert client["client_configuration"]["client"]["id"] == "ours"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", client["address"])


def _database_bytes(world: World) -> bytes:
    if world.kind == "sqlite":
        db = Path(str(world.database["db_name"]))
        return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    dump = []
    for (table,) in world.sql("SHOW TABLES"):
        dump.append(repr(world.sql(f"SELECT * FROM `{table}`")).encode())
    return b"\n".join(dump)


def test_the_password_is_nowhere(world: World) -> None:
    """Last in this module: every request above has been stored, logged and shown."""
    for path in ("/api/v1/clients", "/api/v1/clients-auth", "/api/v1/status", "/api/v1/me"):
        api(world, path)
    places = {"database": _database_bytes(world),
              "debug log": world.rportd.log.read_bytes(),
              "API answers": b"\n".join(world.answers)}  # type: ignore[attr-defined]
    assert b"new-1" in places["database"] and b"new-1" in places["API answers"]
    assert b"DEBUG" in places["debug log"] or b"debug" in places["debug log"].lower()
    for where, data in places.items():
        for secret in SECRETS:
            assert secret not in data, f"{secret!r} found in the {where}"

