"""Remote commands and scripts with a real rportd, real `rport` agents and a real 2021-wire agent,
on SQLite and on MariaDB: one client, many (in turn, at once, abort on error), scripts, refusals,
timeouts, a client that never reports, one that disconnects mid-job, results after a restart,
the WebSocket stream, and bad input for every endpoint."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .api_world import (
    CREDENTIALS,
    PASSWORDS,
    World,
    build_world,
    create_mysql_database,
    drop_mysql_database,
)
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, require_mysql
from .helpers import Response
from .processes import Agent, wait_for

SCRIPTS_ON = "[remote-scripts]\nenabled = true\n"
COMMANDS_OFF = "[remote-commands]\nenabled = false\n"
OUTPUT_CAP = 1000  # [server] max_job_output_bytes in these worlds


class WireAgent:
    """tests/wire_agent.py as a process: the 2021 client's wire, driven through stdin."""

    def __init__(self, world: World, auth_id: str, client_id: str, mode: str):
        self.log = world.rportd.tmp / f"wire-{client_id}.log"
        self.mode = mode
        auth = f"{auth_id}:{CREDENTIALS[auth_id][0]}"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.wire_agent", world.rportd.url, auth, client_id,
                 mode], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent)
        self.wait_output("registered")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, needle: str) -> None:
        wait_for(lambda: needle in self.output(), what=lambda: f"{needle!r} in {self.output()}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stdin is not None:
            self.proc.stdin.close()


def _database(kind: str, tmp: Path) -> dict[str, object]:
    if kind == "sqlite":
        return {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    require_mysql().close()
    return {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}", "db_user": MYSQL_USER,
            "db_password": MYSQL_PASSWORD, "db_name": create_mysql_database()}


def start_agent(world: World, auth_id: str, client_id: str, config: str = "") -> Agent:
    conf = world.rportd.tmp / f"rport-{client_id}-{auth_id}.conf"
    conf.write_text(config)
    agent = Agent(world.rportd.tmp, world.rportd.url, f"{auth_id}:{CREDENTIALS[auth_id][0]}",
                  "--id", client_id, "--name", f"{client_id}@{auth_id}", "-c", str(conf),
                  name=f"agent-{client_id}-{auth_id}").start()
    world.agents.append(agent)
    return agent


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"commands-{request.param}")
    database = _database(request.param, tmp)
    built = build_world(tmp, request.param, database, agents=(), extra={"server": {
        "cmd_result_grace": "1s", "max_job_output_bytes": OUTPUT_CAP, "jobs_max_results": 50},
        "api": {"access_log_file": str(tmp / "access.log")}})
    wire: list[WireAgent] = []
    try:
        for client_id, config in (("c1", SCRIPTS_ON), ("c2", SCRIPTS_ON), ("off", COMMANDS_OFF)):
            start_agent(built, "cj", client_id, config)
        start_agent(built, "cg", "c1", SCRIPTS_ON)
        for agent in built.agents:
            agent.wait_connected()
        wire += [WireAgent(built, "cj", "old", "runs"), WireAgent(built, "cj", "mute", "silent")]
        built.wire = wire  # type: ignore[attr-defined]
        yield built
    finally:
        for agent in wire:
            agent.stop()
        built.stop()
        if request.param == "mysql":
            drop_mysql_database(str(database["db_name"]))


def post(world: World, path: str, body: Any, user: str = "alice") -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return world.request("POST", path, user, body=raw)


def run(world: World, client: str, command: str, user: str = "alice", **fields: Any) -> str:
    answer = post(world, f"/api/v1/clients/{client}/commands", {"command": command, **fields},
                  user)
    assert answer.status == 200, answer.body
    return str(answer.json()["data"]["jid"])


def finished_job(world: World, client: str, jid: str, user: str = "alice",
                 timeout: float = 15) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = world.request("GET", f"/api/v1/clients/{client}/commands/{jid}", user).json()
        return job["data"] if job["data"]["status"] != "running" else None
    return dict(wait_for(done, timeout, what=f"job {jid} on {client} to end"))


def finished_multi(world: World, jid: str, count: int, user: str = "alice") -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        multi = world.request("GET", f"/api/v1/commands/{jid}", user).json()["data"]
        jobs = multi["jobs"]
        return multi if len(jobs) == count and all(j["status"] != "running" for j in jobs) \
            else None
    return dict(wait_for(done, 20, what=f"multi-job {jid} with {count} ended jobs"))


def error(answer: Response) -> tuple[int, str, str]:
    first = answer.json()["errors"][0]
    return answer.status, first["code"], first["detail"]


# ---------------------------------------------------------------- one client


def test_command_on_one_client_reports_rports_job_json(world: World) -> None:
    jid = run(world, "c1", "/usr/bin/printf hello", timeout_sec=5)
    job = finished_job(world, "c1", jid)
    assert (job["status"], job["result"]["stdout"], job["error"]) == ("successful", "hello", "")
    assert (job["client_id"], job["created_by"], job["timeout_sec"]) == ("c1", "alice", 5)
    assert isinstance(job["pid"], int) and job["finished_at"] and job["multi_job_id"] is None
    assert job["client_name"] == "c1@cj" and job["shell"] == "/bin/sh"
    listed = world.request("GET", "/api/v1/clients/c1/commands", "alice").json()["data"]
    assert {"jid": jid, "status": "successful", "finished_at": job["finished_at"]} in listed


def test_failed_command_and_cwd(world: World) -> None:
    job = finished_job(world, "c1", run(world, "c1", "/usr/bin/false"))
    assert (job["status"], job["error"]) == ("failed", "exit status 1")
    job = finished_job(world, "c2", run(world, "c2", "/usr/bin/env", cwd="/tmp"))
    assert job["status"] == "successful" and "PWD" not in job["error"]


def test_refusals_carry_the_clients_text_and_keep_nothing(world: World) -> None:
    refused = post(world, "/api/v1/clients/c1/commands", {"command": "/bin/echo hi; ls"})
    assert error(refused) == (409, "ERR_CODE_COMMAND_REFUSED", "command is not allowed: "
                                                               "/bin/echo hi; ls")
    disabled = post(world, "/api/v1/clients/off/commands", {"command": "/usr/bin/printf x"})
    assert error(disabled) == (409, "ERR_CODE_COMMAND_REFUSED",
                               "remote commands execution is disabled")
    shell = post(world, "/api/v1/clients/old/commands", {"command": "/usr/bin/id",
                                                         "shell": "powershell"})
    assert error(shell)[2] == 'for unix clients a command shell should not be specified, ' \
                              'got: "powershell"'
    assert world.request("GET", "/api/v1/clients/off/commands", "alice").json() == {"data": []}


def test_a_second_command_while_one_runs_is_refused(world: World) -> None:
    jid = run(world, "c2", "/usr/bin/sleep 2", timeout_sec=10)
    busy = post(world, "/api/v1/clients/c2/commands", {"command": "/usr/bin/printf x"})
    status, code, detail = error(busy)
    assert (status, code) == (409, "ERR_CODE_COMMAND_REFUSED")
    assert detail.startswith("a previous command execution with PID ") and \
        detail.endswith(" is still running")
    assert finished_job(world, "c2", jid)["status"] == "successful"


def test_timeout_kills_the_command_and_reports_unknown(world: World) -> None:
    job = finished_job(world, "c1", run(world, "c1", "/usr/bin/sleep 30", timeout_sec=1))
    assert job["status"] == "unknown"
    pid = job["pid"]
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 5, what="the timed-out command killed")


def test_a_job_that_never_reports_becomes_unknown(world: World) -> None:
    job = finished_job(world, "mute", run(world, "mute", "/usr/bin/printf x", timeout_sec=1))
    assert job["status"] == "unknown"
    assert "reported no result within 1s" in job["error"]


def test_output_is_bounded_by_the_agent_and_by_rportd(world: World) -> None:
    job = finished_job(world, "c1", run(world, "c1", "/usr/bin/seq 1 3000"))
    assert len(job["result"]["stdout"].encode()) == OUTPUT_CAP  # agent sent 2048, rportd kept 1000
    assert "overflow of stdOut buffer: maximum send_back_limit of 2048 bytes exceeded" in \
        job["error"]
    assert f"stdout cut by rportd to {OUTPUT_CAP} bytes" in job["error"]


def test_a_client_that_disconnects_mid_job(world: World) -> None:
    agent = start_agent(world, "cj", "gone")
    agent.wait_connected()
    jid = run(world, "gone", "/usr/bin/sleep 3", timeout_sec=30)
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGKILL)
    job = finished_job(world, "gone", jid, timeout=10)
    assert (job["status"], job["error"]) == (
        "failed", "the client disconnected before it reported the result")


def test_a_result_for_a_job_not_started_on_that_connection_is_ignored(world: World) -> None:
    jid = run(world, "c2", "/usr/bin/sleep 1", timeout_sec=10)
    mute = world.wire[1]  # type: ignore[attr-defined]
    mute.send(f"result {jid}")
    mute.send("result 00000000-0000-0000-0000-000000000000")
    mute.wait_output("result sent")
    job = finished_job(world, "c2", jid)
    assert job["status"] == "successful" and "forged" not in json.dumps(job)
    wait_for(lambda: world.rportd.log_text().count("did not start on this connection") >= 2,
             what="both forged results logged")


def test_another_tenants_client_with_the_same_id_cannot_report_a_job(world: World) -> None:
    jid = run(world, "c2", "/usr/bin/sleep 1", timeout_sec=10)
    twin = WireAgent(world, "cg", "c2", "runs")  # tenant G's "c2", not J's
    try:
        twin.send(f"result {jid}")
        twin.wait_output("result sent")
        job = finished_job(world, "c2", jid)
        assert job["status"] == "successful" and "forged" not in json.dumps(job)
        assert world.request("GET", f"/api/v1/clients/c2/commands/{jid}", "gina").status == 404
    finally:
        twin.stop()


def test_agent_opened_channels_are_refused_unless_streaming_a_job_of_theirs(world: World) -> None:
    jid = run(world, "c1", "/usr/bin/sleep 1", timeout_sec=10)
    old = world.wire[0]  # type: ignore[attr-defined]
    old.send(f"stream {jid}")
    old.send("session")
    old.wait_output("session refused")
    assert "stream refused" in old.output()
    finished_job(world, "c1", jid)


# ---------------------------------------------------------------- scripts


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_script_on_one_client(world: World) -> None:
    answer = post(world, "/api/v1/clients/c1/scripts", {
        "script": _b64("#!/bin/sh\necho \"from script $((40 + 2))\"\npwd\n"), "cwd": "/tmp",
        "timeout_sec": 5})
    assert answer.status == 200, answer.body
    job = finished_job(world, "c1", answer.json()["data"]["jid"])
    assert job["status"] == "successful" and job["is_script"] is True
    assert job["result"]["stdout"] == "from script 42\n/tmp\n"


def test_script_refused_by_client_and_impossible_on_the_2021_client(world: World) -> None:
    off = post(world, "/api/v1/clients/off/scripts", {"script": _b64("echo x")})
    assert error(off) == (409, "ERR_CODE_COMMAND_REFUSED", "remote commands execution is disabled")
    old = post(world, "/api/v1/clients/old/scripts", {"script": _b64("echo x")})
    status, code, detail = error(old)
    assert (status, code) == (400, "ERR_CODE_SCRIPTS_NOT_SUPPORTED") and "0.0.0-src" in detail
    many = post(world, "/api/v1/scripts", {"script": _b64("echo x"), "client_ids": ["c1", "old"]})
    assert error(many)[:2] == (400, "ERR_CODE_SCRIPTS_NOT_SUPPORTED")


def test_script_on_many_clients(world: World) -> None:
    answer = post(world, "/api/v1/scripts", {"script": _b64("echo many"),
                                             "client_ids": ["c1", "c2"]})
    assert answer.status == 200, answer.body
    multi = finished_multi(world, answer.json()["data"]["jid"], 2)
    assert [j["result"]["stdout"] for j in multi["jobs"]] == ["many\n", "many\n"]


# ---------------------------------------------------------------- many clients


def test_multi_client_command_in_turn(world: World) -> None:
    answer = post(world, "/api/v1/commands", {"command": "/usr/bin/printf seq",
                                              "client_ids": ["c1", "c2", "old"]})
    assert answer.status == 200, answer.body
    multi = finished_multi(world, answer.json()["data"]["jid"], 3)
    assert [j["client_id"] for j in multi["jobs"]] == ["c1", "c2", "old"]
    assert {j["status"] for j in multi["jobs"]} == {"successful"}
    assert (multi["concurrent"], multi["abort_on_err"], multi["created_by"]) == (
        False, True, "alice")
    # in turn: each job started after the one before ended
    jobs = multi["jobs"]
    assert jobs[0]["finished_at"] <= jobs[1]["started_at"] <= jobs[1]["finished_at"]
    assert multi["jid"] in [m["jid"] for m in world.request("GET", "/api/v1/commands",
                                                             "alice").json()["data"]]


def test_multi_client_command_at_once(world: World) -> None:
    answer = post(world, "/api/v1/commands", {"command": "/usr/bin/sleep 1",
                                              "client_ids": ["c1", "c2"],
                                              "execute_concurrently": True})
    multi = finished_multi(world, answer.json()["data"]["jid"], 2)
    first, second = multi["jobs"]
    assert {first["status"], second["status"]} == {"successful"}
    assert second["started_at"] < first["finished_at"]  # overlapping


def test_abort_on_error_stops_the_sequence(world: World) -> None:
    aborted = post(world, "/api/v1/commands", {"command": "/usr/bin/printf x",
                                               "client_ids": ["off", "c1"]})
    jid = aborted.json()["data"]["jid"]
    multi = finished_multi(world, jid, 1)
    assert multi["jobs"][0]["error"] == "remote commands execution is disabled"
    assert multi["jobs"][0]["status"] == "failed"
    carried_on = post(world, "/api/v1/commands", {"command": "/usr/bin/false",
                                                  "client_ids": ["c1", "c2"],
                                                  "abort_on_error": False})
    multi = finished_multi(world, carried_on.json()["data"]["jid"], 2)
    assert [j["status"] for j in multi["jobs"]] == ["failed", "failed"]
    failed_first = post(world, "/api/v1/commands", {"command": "/usr/bin/false",
                                                    "client_ids": ["c1", "c2"]})
    assert len(finished_multi(world, failed_first.json()["data"]["jid"], 1)["jobs"]) == 1


def test_a_group_as_target(world: World) -> None:
    made = post(world, "/api/v1/client-groups", {"id": "cs", "params": {"client_id": ["c*"]}})
    assert made.status == 201, made.body
    answer = post(world, "/api/v1/commands", {"command": "/usr/bin/printf g",
                                              "group_ids": ["cs"], "client_ids": ["old"],
                                              "execute_concurrently": True})
    assert answer.status == 200, answer.body
    multi = finished_multi(world, answer.json()["data"]["jid"], 3)
    assert sorted(j["client_id"] for j in multi["jobs"]) == ["c1", "c2", "old"]
    assert multi["group_ids"] == ["cs"] and multi["client_ids"] == ["old"]
    # gina's tenant has a c1 too, but J's group is not hers: as if it did not exist
    theirs = post(world, "/api/v1/commands", {"command": "/usr/bin/id", "group_ids": ["cs"]},
                  "gina")
    missing = post(world, "/api/v1/commands", {"command": "/usr/bin/id", "group_ids": ["nope"]},
                   "gina")
    assert theirs.status == missing.status == 404 and theirs.body == missing.body
    empty = post(world, "/api/v1/client-groups", {"id": "none", "params": {"client_id": ["z*"]}})
    assert empty.status == 201
    nobody = post(world, "/api/v1/commands", {"command": "/usr/bin/id", "group_ids": ["none"]})
    assert error(nobody)[:2] == (400, "ERR_CODE_NO_CLIENTS_IN_GROUPS")


# ---------------------------------------------------------------- restart


def test_results_survive_a_restart_and_running_jobs_end_unknown(world: World) -> None:
    done = run(world, "c1", "/usr/bin/printf kept")
    finished_job(world, "c1", done)
    running = run(world, "c2", "/usr/bin/sleep 5", timeout_sec=30)
    world.rportd.stop()
    world.rportd.start()
    for agent in world.agents:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.wait_connected(2)
    kept = finished_job(world, "c1", done)
    assert kept["result"]["stdout"] == "kept"
    hidden = world.request("GET", f"/api/v1/clients/c1/commands/{done}", "gina")  # G's own c1
    missing = world.request("GET", "/api/v1/clients/c1/commands/none", "gina")
    assert hidden.status == 404 and hidden.body == missing.body
    lost = finished_job(world, "c2", running)
    assert (lost["status"], lost["error"]) == (
        "unknown", "rportd stopped before the client reported the result")
    crashed = run(world, "c2", "/usr/bin/sleep 5", timeout_sec=30)
    assert world.rportd.proc is not None
    world.rportd.proc.kill()  # no shutdown at all: the next start finds the job running
    world.rportd.proc.wait(10)
    world.rportd.start()
    lost = finished_job(world, "c2", crashed)
    assert (lost["status"], lost["error"]) == (
        "unknown", "rportd restarted before the client reported the result")
    for agent in world.agents:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.wait_connected(3)
    for agent in world.wire:  # type: ignore[attr-defined]
        agent.stop()
    world.wire[:] = [WireAgent(world, "cj", "old", "runs"),  # type: ignore[attr-defined]
                     WireAgent(world, "cj", "mute", "silent")]


# ---------------------------------------------------------------- WebSocket


async def _ws(world: World, request: Any, token: str | None = None,
              headers: dict[str, str] | None = None) -> list[Any]:
    url = f"{world.rportd.api}/api/v1/ws/commands"
    if token:
        url += f"?access_token={token}"
    received: list[Any] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
        await ws.send_str(request if isinstance(request, str) else json.dumps(request))
        async for message in ws:
            received.append(json.loads(message.data))
    return received


async def test_ws_streams_each_job_then_closes(world: World) -> None:
    token = world.token("alice")
    jobs = await _ws(world, {"command": "/usr/bin/printf ws", "client_ids": ["c1", "c2"],
                             "execute_concurrently": True}, token=token)
    assert sorted(j["client_id"] for j in jobs) == ["c1", "c2"]
    assert {j["result"]["stdout"] for j in jobs} == {"ws"}
    one = await _ws(world, {"command": "/usr/bin/printf one", "client_ids": ["c1"]},
                    headers={"Authorization": f"Bearer {token}"})
    assert [j["result"]["stdout"] for j in one] == ["one"]
    stored = finished_job(world, "c1", one[0]["jid"])
    assert stored["result"]["stdout"] == "one"
    access = world.rportd.tmp / "access.log"
    wait_for(lambda: "access_token=REDACTED" in access.read_text(), what="the access log")
    assert token not in world.rportd.log_text() and token not in access.read_text()


async def test_ws_forwards_a_streamed_job_output_before_its_result(world: World) -> None:
    messages = await _ws(world, {"command": "/usr/bin/printf streamed", "client_ids": ["old"],
                                 "stream_result": True}, token=world.token("alice"))
    chunk, job = messages
    assert chunk == {"jid": job["jid"], "stream": "stdout", "data": "chunk"}
    assert job["result"]["stdout"] == "streamed" and job["stream_result"] is True
    old = world.wire[0]  # type: ignore[attr-defined]
    assert "job stream accepted" in old.output()
    assert "second job stream refused" in old.output()  # one stdout channel per job


async def test_ws_refuses_bad_requests_with_rports_error_payload(world: World) -> None:
    token = world.token("alice")
    for request, code in (("not json", "ERR_CODE_INVALID_JSON"),
                          ({"command": ""}, "ERR_CODE_MISSING_COMMAND"),
                          ({"command": "/usr/bin/id"}, "ERR_CODE_TOO_FEW_CLIENTS"),
                          ({"command": "/usr/bin/id", "client_ids": ["nope"]},
                           "ERR_CODE_CLIENT_NOT_FOUND")):
        answer = await _ws(world, request, token=token)
        assert answer[0]["errors"][0]["code"] == code, (request, answer)
    refused = await _ws(world, {"command": "/bin/ls; id", "client_ids": ["c1"]}, token=token)
    assert refused[0]["status"] == "failed" and refused[0]["error"].startswith(
        "command is not allowed")
    without = world.request("GET", "/api/v1/ws/commands", "alice")
    assert error(without)[:2] == (400, "ERR_CODE_NOT_WEBSOCKET")
    assert world.request("GET", "/api/v1/ws/commands?access_token=bad").status == 401


def test_ws_send_queue_is_bounded() -> None:
    from rportd.api.ws_commands import SEND_QUEUE, _Stream

    stream = _Stream(expected=10 * SEND_QUEUE)
    for number in range(10 * SEND_QUEUE):
        stream.job_done({"jid": str(number)})
        stream.output(str(number), "stdout", "x" * 100)
    assert stream.queue.qsize() == SEND_QUEUE and stream.overflowed


# ---------------------------------------------------------------- bad input


BAD_COMMANDS: list[tuple[Any, str]] = [
    (b"", "ERR_CODE_INVALID_JSON"), (b"{", "ERR_CODE_INVALID_JSON"),
    ([], "ERR_CODE_INVALID_JSON"), ({}, "ERR_CODE_MISSING_COMMAND"),
    ({"command": "  "}, "ERR_CODE_MISSING_COMMAND"), ({"command": 5}, "ERR_CODE_INVALID_FIELD"),
    ({"command": "/usr/bin/id", "bogus": 1}, "ERR_CODE_UNKNOWN_FIELD"),
    ({"command": "/usr/bin/id", "shell": "bash"}, "ERR_CODE_INVALID_SHELL"),
    ({"command": "/usr/bin/id", "timeout_sec": -1}, "ERR_CODE_INVALID_TIMEOUT"),
    ({"command": "/usr/bin/id", "timeout_sec": "5"}, "ERR_CODE_INVALID_TIMEOUT"),
    ({"command": "/usr/bin/id", "timeout_sec": 10 ** 9}, "ERR_CODE_INVALID_TIMEOUT"),
    ({"command": "/usr/bin/id", "is_sudo": "yes"}, "ERR_CODE_INVALID_FIELD"),
    ({"command": "/usr/bin/id", "cwd": ["x"]}, "ERR_CODE_INVALID_FIELD"),
]
BAD_MULTI: list[tuple[Any, str]] = [
    ({"command": "/usr/bin/id"}, "ERR_CODE_TOO_FEW_CLIENTS"),
    ({"command": "/usr/bin/id", "client_ids": ["c1"]}, "ERR_CODE_TOO_FEW_CLIENTS"),
    ({"command": "/usr/bin/id", "client_ids": "c1,c2"}, "ERR_CODE_INVALID_FIELD"),
    ({"command": "/usr/bin/id", "client_ids": ["c1", 2]}, "ERR_CODE_INVALID_FIELD"),
    ({"command": "/usr/bin/id", "client_ids": ["c1", "c2"], "execute_concurrently": 1},
     "ERR_CODE_INVALID_FIELD"),
    ({"command": "/usr/bin/id", "group_ids": ["bad id!"]}, "ERR_CODE_INVALID_CLIENT_GROUP_ID"),
    ({"command": "/usr/bin/id", "group_ids": "web"}, "ERR_CODE_INVALID_FIELD"),
]
BAD_SCRIPTS: list[tuple[Any, str]] = [
    ({}, "ERR_CODE_MISSING_SCRIPT"), ({"script": "%%%"}, "ERR_CODE_INVALID_SCRIPT"),
    ({"script": "ZWNobw"}, "ERR_CODE_INVALID_SCRIPT"),
    ({"script": "ZWNobw==", "command": "x"}, "ERR_CODE_UNKNOWN_FIELD"),
]


def test_bad_input_for_every_endpoint(world: World) -> None:
    for body, code in BAD_COMMANDS:
        assert error(post(world, "/api/v1/clients/c1/commands", body))[:2] == (400, code), body
    for body, code in BAD_COMMANDS[:3] + BAD_MULTI:
        assert error(post(world, "/api/v1/commands", body))[:2] == (400, code), body
    for body, code in BAD_SCRIPTS:
        assert error(post(world, "/api/v1/clients/c1/scripts", body))[:2] == (400, code), body
        many = {**body, "client_ids": ["c1"]} if isinstance(body, dict) else body
        assert error(post(world, "/api/v1/scripts", many))[:2] == (400, code), body
    missing = post(world, "/api/v1/commands", {"command": "/usr/bin/id",
                                               "client_ids": ["c1", "nope"]})
    assert error(missing)[:2] == (404, "ERR_CODE_CLIENT_NOT_FOUND")
    unknown_group = post(world, "/api/v1/commands", {"command": "/usr/bin/id",
                                                     "group_ids": ["nope"]})
    assert error(unknown_group)[:2] == (404, "ERR_CODE_CLIENT_GROUP_NOT_FOUND")
    for path in ("/api/v1/clients/c1/commands/nope", "/api/v1/commands/nope"):
        assert error(world.request("GET", path, "alice"))[:2] == (404, "ERR_CODE_JOB_NOT_FOUND")
    assert "Traceback" not in world.rportd.log_text()


def test_jobs_waiting_for_one_client_are_bounded(world: World) -> None:
    """The mute agent answers every run_cmd and never reports: rportd waits for at most
    MAX_RUNNING_PER_CLIENT of its jobs (run last: its jobs stay pending until the end)."""
    from rportd.jobs.service import MAX_RUNNING_PER_CLIENT

    body = {"command": "/usr/bin/true", "timeout_sec": 120}
    for _ in range(MAX_RUNNING_PER_CLIENT):  # it runs one at a time: retried while busy
        wait_for(lambda: post(world, "/api/v1/clients/mute/commands", body).status == 200,
                 what="the mute agent to take a job")
    refused = post(world, "/api/v1/clients/mute/commands", {"command": "/usr/bin/true"})
    assert error(refused)[:2] == (409, "ERR_CODE_TOO_MANY_JOBS")
    many = post(world, "/api/v1/commands", {"command": "/usr/bin/true",
                                            "client_ids": ["mute", "c1"]})
    multi = finished_multi(world, many.json()["data"]["jid"], 1)
    assert multi["jobs"][0]["error"].startswith("the client already runs")


# ---------------------------------------------------------------- review: cross-site requests


async def test_a_page_of_another_site_cannot_use_the_browsers_basic_credentials(
        world: World) -> None:
    """A browser that once answered rportd's Basic prompt sends those credentials with any
    page's form POST (a `simple` request: no CORS preflight) and WebSocket handshake. rportd
    answers no CORS, so same-origin pages and non-browser clients (no Origin) are unaffected."""
    evil = {"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"}
    forged = json.dumps({"command": "/usr/bin/printf csrf", "client_ids": ["c1", "c2"]}).encode()
    refused = world.request("POST", "/api/v1/commands", "alice", body=forged, headers=evil)
    assert (refused.status, refused.error_code) == (403, "ERR_CODE_CROSS_SITE"), refused.body
    assert b"csrf" not in world.request("GET", "/api/v1/commands", "alice").body
    same = {"Origin": f"http://127.0.0.1:{world.rportd.api_port}"}
    assert world.request("GET", "/api/v1/clients", "alice", headers=same).status == 200
    proxied = {"Origin": "https://rport.example.com", "X-Forwarded-Host": "rport.example.com"}
    assert world.request("GET", "/api/v1/clients", "alice", headers=proxied).status == 200
    token = world.token("alice")  # a bearer token is never ambient: the page must know it
    assert world.request("GET", "/api/v1/clients", token=token,
                         headers={"Origin": "https://evil.example"}).status == 200
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await session.ws_connect(f"{world.rportd.api}/api/v1/ws/commands",
                                     headers={"Authorization": basic},
                                     origin="https://evil.example")
    assert handshake.value.status == 403
