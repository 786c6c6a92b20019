"""Remote commands against a hostile agent and at debug log level, with a real rportd (SQLite),
real 2021-wire agents (tests/wire_agent.py) and our `rport`: a cmd_result flood while run_cmd
is unanswered, JSON nested too deep for Python's parser, run_cmd requests that race on our
agent, a script part for a client that came back as an older generation, and no secret in a
debug log."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from .api_world import CREDENTIALS, World, build_world
from .processes import wait_for
from .test_commands import (
    SCRIPTS_ON,
    WireAgent,
    error,
    finished_job,
    finished_multi,
    post,
    run,
    start_agent,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("commands-hostile")
    built = build_world(tmp, "sqlite", {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")},
                        agents=(), extra={"logging": {"log_level": "debug"},
                                          "server": {"cmd_result_grace": "1s"},
                                          "api": {"max_request_bytes": 2 << 20}})
    wire: list[WireAgent] = []
    try:
        start_agent(built, "cj", "ours", SCRIPTS_ON).wait_connected()
        wire += [WireAgent(built, "cj", "flood", "flood"), WireAgent(built, "cj", "nested",
                                                                       "nested")]
        built.wire = wire  # type: ignore[attr-defined]
        yield built
    finally:
        for agent in wire:
            agent.stop()
        built.stop()


SECRET = "S3cret-Leak-Pw-9"  # a credential's password, created through the API


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_cmd_result_flood_before_the_run_cmd_answer_is_not_kept(world: World) -> None:
    """200 cmd_results of 480 KB for the agent's own job arrive while rportd still waits for
    the run_cmd answer (the job's lock is held): only the first may be kept for later."""
    assert world.rportd.proc is not None
    before = peak_rss_kib(world.rportd.proc.pid)
    jid = run(world, "flood", "/usr/bin/printf x", timeout_sec=5)
    job = finished_job(world, "flood", jid)
    assert job["status"] == "successful" and job["result"]["stdout"].startswith("xxx")
    growth = peak_rss_kib(world.rportd.proc.pid) - before
    assert growth < 40 * 1024, f"rportd's peak memory grew {growth} KiB"


def test_json_nested_too_deep_is_refused_and_leaves_no_job_running(world: World) -> None:
    answer = post(world, "/api/v1/clients/nested/commands", {"command": "/usr/bin/printf x"})
    assert error(answer) == (409, "ERR_CODE_COMMAND_REFUSED",
                             "the client sent an unreadable answer to the command request")
    assert world.sql("SELECT status FROM jobs WHERE client_id = ?", ("nested",)) == []
    nested = next(w for w in world.wire if w.mode == "nested")  # type: ignore[attr-defined]
    nested.send("deepstream")
    nested.wait_output("deepstream refused")
    tunnel = world.request("PUT", "/api/v1/clients/nested/tunnels?remote=127.0.0.1:22", "alice")
    assert error(tunnel) == (400, "ERR_CODE_REMOTE_PORT_CLOSED", "remote 127.0.0.1:22 is not "
                             "reachable from the client: the client sent an unreadable port "
                             "check reply")
    client = world.request("GET", "/api/v1/clients/nested", "alice").json()["data"]
    assert client["connection_state"] == "connected"
    assert "Traceback" not in world.rportd.log_text()


def test_our_agent_runs_one_command_at_a_time_even_when_requests_race(world: World) -> None:
    def start(_: int) -> tuple[int, str]:
        answer = post(world, "/api/v1/clients/ours/commands",
                      {"command": "/usr/bin/sleep 1", "timeout_sec": 10})
        return answer.status, answer.body.decode()

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(start, range(4)))
    started = [body for status, body in answers if status == 200]
    refused = [body for status, body in answers if status == 409]
    assert len(started) == 1 and len(refused) == 3, answers
    assert all("a previous command execution with PID" in body for body in refused)
    jid = json.loads(started[0])["data"]["jid"]
    assert finished_job(world, "ours", jid)["status"] == "successful"


def test_no_secret_in_a_debug_log(world: World) -> None:
    created = post(world, "/api/v1/clients-auth", {"id": "leak-check", "password": SECRET})
    assert created.status == 201, created.body
    stored = world.sql("SELECT password FROM clients_auth WHERE id LIKE ?", ("%leak-check",))
    jid = run(world, "ours", "/usr/bin/printf result-%s-7f3 text", timeout_sec=5)
    assert finished_job(world, "ours", jid)["result"]["stdout"] == "result-text-7f3"
    wait_for(lambda: "DEBUG" in world.rportd.log_text(), what="debug lines in the log")
    log = world.rportd.log_text()
    for secret in (SECRET, str(stored[0][0]), CREDENTIALS["cj"][0], "result-text-7f3"):
        assert secret not in log, secret


def test_a_script_part_is_not_sent_to_a_client_that_came_back_as_an_older_generation(
        world: World) -> None:
    """In turn: while the first client runs the script, the second reconnects under the same
    id as a 2021 client (which would run a script's text as a command line)."""
    turncoat = start_agent(world, "cj", "turncoat", SCRIPTS_ON)
    turncoat.wait_connected()
    script = base64.b64encode(b"sleep 4\necho done\n").decode()
    answer = post(world, "/api/v1/scripts", {"client_ids": ["ours", "turncoat"],
                                             "script": script, "abort_on_error": False})
    assert answer.status == 200, answer.body
    turncoat.stop()
    wait_for(lambda: world.request("GET", "/api/v1/clients/turncoat", "alice").json()["data"][
        "connection_state"] == "disconnected", what="turncoat disconnected")
    old = WireAgent(world, "cj", "turncoat", "runs")
    try:
        multi = finished_multi(world, answer.json()["data"]["jid"], 2)
    finally:
        old.stop()
    first, second = multi["jobs"]
    assert (first["client_id"], first["status"]) == ("ours", "successful")
    assert (second["client_id"], second["status"]) == ("turncoat", "failed")
    assert second["error"].startswith("client 'turncoat' cannot run scripts: its rport version "
                                      "(0.0.0-src) only runs commands"), second["error"]


def test_a_job_larger_than_a_client_accepts_is_refused_before_it_is_sent(world: World) -> None:
    """An SSH packet over 256 KiB makes the client (Go's x/crypto/ssh, and asyncssh) drop the
    whole connection, tunnels included: such a run_cmd is never sent (reachable once an
    operator raises [api] max_request_bytes for big scripts)."""
    script = base64.b64encode(b"# " + b"x" * 300_000 + b"\necho big\n").decode()
    answer = post(world, "/api/v1/clients/ours/scripts", {"script": script})
    status, code, detail = error(answer)
    assert (status, code) == (400, "ERR_CODE_JOB_TOO_LARGE"), detail
    client = world.request("GET", "/api/v1/clients/ours", "alice").json()["data"]
    assert client["connection_state"] == "connected"
    assert world.sql("SELECT jid FROM jobs WHERE client_id = ? AND status = ?",
                     ("ours", "running")) == []
    jid = run(world, "ours", "/usr/bin/printf still-here", timeout_sec=5)
    assert finished_job(world, "ours", jid)["result"]["stdout"] == "still-here"
