"""Commands on the agent connection: run_cmd out, the agent's reply under a deadline, and the
stdout/stderr channels the newest client opens for a job started with stream_result.

Facts (rport-v1.md 2.2, rport-newer-clients.md 5): run_cmd is a want-reply global request whose
payload is the Job JSON; success carries {"Pid", "StartedAt"}, failure the client's text
(`command is not allowed: ...`, `remote commands execution is disabled`, `a previous command
execution with PID N is still running`, ...). The 2021 client ignores Job keys it does not know,
but it would run a script's text as a command line: scripts go only to a client whose
connection request shows the newer generation (`ClientConfiguration`) or version 0.4 or later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import asyncssh
from asyncssh.connection import SSHServerConnection

from ..errors import BadRequest
from ..jobs import CommandRefused, JobService, NoAnswer
from ..wire.asyncssh_internals import MAX_PACKET, WINDOW, send_global_request

__all__ = ["run_cmd", "runs_scripts", "open_stream", "STREAM_TYPES", "MAX_RUN_CMD_BYTES"]

log = logging.getLogger("rportd.agent_port")

STREAM_TYPES = ("stdout", "stderr")
# An SSH packet over 256 KiB makes the client drop the whole connection (Go's x/crypto/ssh
# maxPacket; asyncssh's default receive limit): a larger run_cmd is never sent.
MAX_RUN_CMD_BYTES = 255 * 1024
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


async def run_cmd(conn: SSHServerConnection, job: dict[str, Any],
                  timeout: float) -> dict[str, Any]:
    """Send the job; the agent's success reply. CommandRefused with its text, NoAnswer."""
    payload = json.dumps(job, separators=(",", ":")).encode()
    if len(payload) > MAX_RUN_CMD_BYTES:
        raise BadRequest(f"the job is {len(payload)} bytes as JSON; an rport client accepts at "
                         f"most {MAX_RUN_CMD_BYTES}", code="ERR_CODE_JOB_TOO_LARGE")
    try:
        ok, reply = await asyncio.wait_for(send_global_request(conn, "run_cmd", payload),
                                           timeout)
    except TimeoutError:
        raise NoAnswer(f"the client did not answer the command request within {timeout:g}s"
                       ) from None
    except (asyncssh.Error, OSError) as exc:
        raise BadRequest("the client disconnected before it answered the command request",
                         code="ERR_CODE_CLIENT_NOT_CONNECTED") from exc
    if not ok and conn.is_closed():
        raise BadRequest("the client disconnected before it answered the command request",
                         code="ERR_CODE_CLIENT_NOT_CONNECTED")
    if not ok:
        text = reply.decode("utf-8", "replace")[:1024] or "the client refused the command"
        raise CommandRefused(text)
    try:
        answer = json.loads(reply)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        answer = None
    if not isinstance(answer, dict):
        raise CommandRefused("the client sent an unreadable answer to the command request")
    return answer


def runs_scripts(payload: bytes) -> bool:
    """Whether a connection request comes from a client generation that understands
    `is_script` (called once the request has been checked)."""
    try:
        request = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    if not isinstance(request, dict):
        return False
    if isinstance(request.get("ClientConfiguration"), dict):
        return True
    match = _VERSION.match(str(request.get("Version") or ""))
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (0, 4)


class _StreamSink(asyncssh.SSHTCPSession[bytes]):
    """Hands what the agent streams to the job's listener; never writes back."""

    def __init__(self, jobs: JobService, jid: str, stream: str):
        self._jobs, self._jid, self._stream = jobs, jid, stream

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._jobs.stream_output(self._jid, self._stream, data)


def open_stream(conn: SSHServerConnection, jobs: JobService | None, session: Any,
                stream: str, extra: bytes) -> tuple[Any, Any]:
    """An agent-opened `stdout`/`stderr` channel: accepted only for a job rportd started on
    this connection with stream_result (the extra data is the Job JSON). Raises
    ChannelOpenError otherwise; rportd never dials anything an agent names."""
    jid = _jid_of(extra)
    if jobs is None or jid is None or not jobs.open_stream(session, jid, stream):
        log.warning("refused an agent's %s channel: no job of this connection streams "
                    "(jid %r)", stream, jid[:64] if jid else None)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                        "channel not allowed")
    chan = conn.create_tcp_channel(window=WINDOW, max_pktsize=MAX_PACKET)
    return chan, _StreamSink(jobs, jid, stream)


def _jid_of(extra: bytes) -> str | None:
    try:
        job = json.loads(extra)
    except (ValueError, RecursionError):
        return None
    jid = job.get("jid") if isinstance(job, dict) else None
    return jid if isinstance(jid, str) else None
