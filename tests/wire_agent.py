"""A real agent process speaking the 2021 client's wire for commands, for what our `rport` does
not do: `python -m tests.wire_agent SERVER AUTH ID MODE`.

It registers with the 2021 client's exact request keys (no ClientConfiguration, so rportd must
not send it scripts) and runs commands with the real CommandRunner. MODE `runs` reports results;
`silent` answers run_cmd but its results never leave (a client whose report is lost); `flood`
sends FLOOD large cmd_results for each job before it answers its run_cmd; `nested` answers
run_cmd and check_port with JSON nested too deep for Python's parser, and its cmd_results
too. Lines on
stdin drive what a hostile or confused agent might send:
`result JID` (a cmd_result for JID), `stream JID` (open a stdout channel for JID; prints
`stream accepted` or `stream refused`), `deepstream` (a stdout channel whose extra data is
JSON nested too deep), `session` (open a plain session channel).
Prints `registered` once connected.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import asyncssh

from rportd.client.commands import CommandPolicy, CommandRunner, result_sender
from rportd.client.connection import AgentSettings, open_ssh, register
from rportd.client.websocket import parse_server
from rportd.wire.asyncssh_internals import reply_global, send_global_notice


def request(client_id: str) -> bytes:
    return json.dumps({
        "Version": "0.0.0-src", "ID": client_id, "Name": f"{client_id}-2021",
        "OS": "Linux vm 6.1 x86_64 GNU/Linux", "OSArch": "amd64", "OSFamily": "debian",
        "OSKernel": "linux", "Hostname": "vm", "IPv4": ["192.0.2.2"], "IPv6": [], "Tags": [],
        "Remotes": None}, separators=(",", ":")).encode()


async def _open(conn: asyncssh.SSHClientConnection, kind: bytes, extra: bytes) -> str:
    chan = conn.create_tcp_channel()
    try:
        await chan._open_forward(asyncssh.SSHTCPSession, kind, extra)  # type: ignore[arg-type]
    except asyncssh.ChannelOpenError:
        return "refused"
    chan.write(b"chunk")
    chan.close()
    return "accepted"


class StreamingRunner(CommandRunner):
    """As the newest client with stream_result: a stdout channel (extra data: the Job JSON)
    carrying the output before the cmd_result."""

    def __init__(self, conn: asyncssh.SSHClientConnection, send: Any):
        super().__init__(CommandPolicy(), send)
        self._conn = conn

    async def start(self, payload: bytes) -> dict[str, Any]:
        if json.loads(payload).get("stream_result"):
            print(f"job stream {await _open(self._conn, b'stdout', payload)}", flush=True)
            print(f"second job stream {await _open(self._conn, b'stdout', payload)}",
                  flush=True)
        return await super().start(payload)


async def _command(conn: asyncssh.SSHClientConnection, line: str) -> None:
    verb, _, jid = line.strip().partition(" ")
    if verb == "result":
        send_global_notice(conn, "cmd_result", json.dumps({
            "jid": jid, "status": "successful", "client_id": "forged",
            "result": {"stdout": "forged", "stderr": ""}}).encode())
        print("result sent", flush=True)
    elif verb == "stream":
        print(f"stream {await _open(conn, b'stdout', json.dumps({'jid': jid}).encode())}",
              flush=True)
    elif verb == "deepstream":  # a stdout channel whose Job JSON is nested too deep
        print(f"deepstream {await _open(conn, b'stdout', NESTED)}", flush=True)
    elif verb == "session":
        print(f"session {await _open(conn, b'session', b'')}", flush=True)


FLOOD = 200
NESTED = b"[" * 100_000 + b"]" * 100_000


def _hostile_run_cmd(conn: asyncssh.SSHClientConnection, mode: str) -> Any:
    """How a `flood` or `nested` agent answers run_cmd (raw, on asyncssh's own path)."""
    def answer(payload: bytes) -> None:
        jid = json.loads(payload)["jid"]
        if mode == "flood":
            big = json.dumps({"jid": jid, "status": "successful",
                              "result": {"stdout": "x" * 480_000, "stderr": ""}}).encode()
            for _ in range(FLOOD):
                send_global_notice(conn, "cmd_result", big)
            reply_global(conn, True, b'{"Pid":1,"StartedAt":"2021-01-01T00:00:00Z"}')
        else:
            send_global_notice(conn, "cmd_result", b'{"jid":"' + jid.encode() + b'","x":'
                               + NESTED + b"}")
            reply_global(conn, True, NESTED)
        print(f"answered {jid}", flush=True)
    return answer


async def main(server: str, auth: str, client_id: str, mode: str) -> None:
    auth_id, _, password = auth.partition(":")
    settings = AgentSettings(parse_server(server), auth_id, password)
    conn = await open_ssh(settings)
    send = result_sender(conn) if mode == "runs" else (lambda payload: None)
    conn.runner = StreamingRunner(conn, send)  # type: ignore[attr-defined]
    if mode in ("flood", "nested"):
        conn._on_run_cmd = _hostile_run_cmd(conn, mode)  # type: ignore[method-assign]
    if mode == "nested":
        conn._on_check_port = (  # type: ignore[method-assign]
            lambda payload: reply_global(conn, True, NESTED))
    await register(conn, request(client_id))
    print("registered", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    closed = asyncio.ensure_future(conn.wait_closed())
    while not closed.done():
        line = asyncio.ensure_future(reader.readline())
        await asyncio.wait({line, closed}, return_when=asyncio.FIRST_COMPLETED)
        if not line.done():
            line.cancel()
            break
        if not line.result():
            break
        await _command(conn, line.result().decode())
    conn.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
