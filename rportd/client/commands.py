"""Our agent's remote commands, as the rport client runs them: the `[remote-commands]` policy
(enabled, allow, deny, order, send_back_limit) with the client's defaults and refusal texts,
`/bin/sh -c` on unix, one command at a time, stdout/stderr cut at send_back_limit, and a
timeout that kills the command's process group and reports `unknown`. Scripts (`is_script`,
the newer client's) need `[remote-scripts] enabled`. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asyncssh.connection import SSHClientConnection

from ..wire.asyncssh_internals import reply_global, send_global_notice

__all__ = ["CommandPolicy", "CommandRunner", "CommandError", "DEFAULT_ALLOW", "DEFAULT_DENY",
           "policy_from", "answer_run_cmd", "result_sender"]

log = logging.getLogger("rport.client")

# rport client's defaults (cmd/rport/main.go SetViperConfigDefaults)
DEFAULT_ALLOW = ("^/usr/bin/.*", "^/usr/local/bin/.*", r"^C:\\Windows\\System32\\.*")
DEFAULT_DENY = (r"(\||<|>|;|,|\n|&)",)
DEFAULT_SEND_BACK_LIMIT = 2048
_READ_CHUNK = 65536


class CommandError(Exception):
    """run_cmd refused; the text goes back to the server as the client's failure reply."""


@dataclass(frozen=True)
class CommandPolicy:
    enabled: bool = True
    allow: tuple[str, ...] = DEFAULT_ALLOW
    deny: tuple[str, ...] = DEFAULT_DENY
    order: tuple[str, str] = ("allow", "deny")
    send_back_limit: int = DEFAULT_SEND_BACK_LIMIT
    scripts_enabled: bool = False
    _allow: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    _deny: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow", tuple(re.compile(p) for p in self.allow))
        object.__setattr__(self, "_deny", tuple(re.compile(p) for p in self.deny))

    def allows(self, command: str) -> bool:
        """The client's isAllowed: with allow,deny a command must match an allow pattern and
        no deny pattern; with deny,allow an allow match wins, else any deny match refuses."""
        allowed = any(p.search(command) for p in self._allow)
        denied = any(p.search(command) for p in self._deny)
        if self.order == ("allow", "deny"):
            return allowed and not denied
        return allowed or not denied


def policy_from(commands: dict[str, Any], scripts: dict[str, Any]) -> CommandPolicy:
    """`[remote-commands]` and `[remote-scripts]` of rport.conf; ValueError names a bad key."""
    order = tuple(commands.get("order", ["allow", "deny"]))
    if order not in (("allow", "deny"), ("deny", "allow")):
        raise ValueError("[remote-commands] order must be ['allow', 'deny'] or ['deny', 'allow']")
    limit = commands.get("send_back_limit", DEFAULT_SEND_BACK_LIMIT)
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"[remote-commands] send_back_limit can not be negative: {limit}")
    try:
        return CommandPolicy(
            enabled=bool(commands.get("enabled", True)),
            allow=tuple(str(p) for p in commands.get("allow", DEFAULT_ALLOW)),
            deny=tuple(str(p) for p in commands.get("deny", DEFAULT_DENY)),
            order=(order[0], order[1]), send_back_limit=limit,
            scripts_enabled=bool(scripts.get("enabled", False)))
    except re.error as exc:
        raise ValueError(f"[remote-commands] allow/deny: invalid regular expression: {exc}"
                         ) from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _Capture:
    """The first `limit` bytes of a stream; the rest is read and dropped (never blocks it)."""

    def __init__(self, limit: int):
        self.limit, self.data, self.overflow = limit, bytearray(), False

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            room = self.limit - len(self.data)
            self.data += chunk[:max(room, 0)]
            self.overflow = self.overflow or len(chunk) > room

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass
class _Running:
    job: dict[str, Any]
    process: asyncio.subprocess.Process
    started_at: str
    script: str | None = None


class CommandRunner:
    """One per connection: answers run_cmd, then sends cmd_result through `send_result`."""

    def __init__(self, policy: CommandPolicy, send_result: Callable[[bytes], None]):
        self._policy = policy
        self._send_result = send_result
        self._running: _Running | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, payload: bytes) -> dict[str, Any]:
        """Start the job in `payload`; the success reply. CommandError with the client's text."""
        job = self._check(payload)
        running = await self._spawn(job)
        self._running = running
        task = asyncio.get_running_loop().create_task(self._watch(running))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"Pid": running.process.pid, "StartedAt": running.started_at}

    def _check(self, payload: bytes) -> dict[str, Any]:
        if not self._policy.enabled:
            raise CommandError("remote commands execution is disabled")
        try:
            job = json.loads(payload)
            if not isinstance(job, dict) or not isinstance(job.get("command"), str):
                raise ValueError("not a job")
        except ValueError as exc:
            raise CommandError(f"failed to decode requested job: {exc}") from None
        _check_timeout(job.get("timeout_sec"))
        if self._running is not None:
            raise CommandError(f"a previous command execution with PID "
                               f"{self._running.process.pid} is still running")
        if job.get("is_script") and not self._policy.scripts_enabled:
            raise CommandError("remote scripts are disabled")
        if job.get("shell"):
            raise CommandError(f"for unix clients a command shell should not be specified, "
                               f"got: {json.dumps(job['shell'])}")
        if not job.get("is_script") and not self._policy.allows(job["command"]):
            raise CommandError(f"command is not allowed: {job['command']}")
        return job

    async def _spawn(self, job: dict[str, Any]) -> _Running:
        script = await asyncio.to_thread(_write_script, job["command"]) if job.get(
            "is_script") else None
        argv = ([str(job.get("interpreter") or "/bin/sh"), script] if script
                else ["/bin/sh", "-c", job["command"]])
        if job.get("is_sudo"):
            argv = ["sudo", "-n", *argv]
        started_at = _now()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=str(job.get("cwd") or "") or None, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
        except (OSError, ValueError) as exc:
            if script:
                await asyncio.to_thread(_remove, script)
            raise CommandError(f"failed to start a command: {exc}") from None
        return _Running(job, process, started_at, script)

    async def _watch(self, running: _Running) -> None:
        """Wait for the end or the timeout, then report. The slot frees once it is over."""
        limit = self._policy.send_back_limit
        out, err = _Capture(limit), _Capture(limit)
        process = running.process
        assert process.stdout is not None and process.stderr is not None
        drains = asyncio.gather(out.drain(process.stdout), err.drain(process.stderr))
        status, error = "unknown", ""
        try:
            async with asyncio.timeout(max(1, int(running.job.get("timeout_sec") or 60))):
                await drains
                code = await process.wait()
            status = "successful" if code == 0 else "failed"
            error = "" if code == 0 else f"exit status {code}"
        except TimeoutError:
            _kill_group(process)
            drains.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drains
        finally:
            if self._running is running:
                self._running = None
            if running.script:
                await asyncio.to_thread(_remove, running.script)
        self._report(running, status, _with_overflow(error, out, err, limit), out, err)

    def _report(self, running: _Running, status: str, error: str, out: _Capture,
                err: _Capture) -> None:
        job = {**running.job, "status": status, "finished_at": _now(),
               "pid": running.process.pid, "started_at": running.started_at,
               "shell": "/bin/sh", "error": error,
               "result": {"stdout": out.text(), "stderr": err.text()}}
        try:
            self._send_result(json.dumps(job, separators=(",", ":")).encode())
        except Exception as exc:  # the connection went away: nobody can hear the result now
            log.error("failed to send command result to server[jid=%r]: %s", job.get("jid"), exc)


async def answer_run_cmd(conn: SSHClientConnection, runner: CommandRunner | None,
                         payload: bytes) -> None:
    """run_cmd from the server: the client's success reply or its failure text."""
    if runner is None:
        reply_global(conn, False, b"remote commands execution is disabled")
        return
    try:
        reply = await runner.start(payload)
    except CommandError as exc:
        log.info("run_cmd refused: %s", exc)
        reply_global(conn, False, str(exc).encode())
        return
    reply_global(conn, True, json.dumps(reply, separators=(",", ":")).encode())


def result_sender(conn: SSHClientConnection) -> Callable[[bytes], None]:
    return lambda payload: send_global_notice(conn, "cmd_result", payload)


def _with_overflow(error: str, out: _Capture, err: _Capture, limit: int) -> str:
    parts = [error] if error else []
    for name, capture in (("stdOut", out), ("stdErr", err)):
        if capture.overflow:
            parts.append(f"overflow of {name} buffer: maximum send_back_limit of {limit} bytes "
                         "exceeded")
    return ", ".join(parts)


def _check_timeout(value: Any) -> None:
    """The Go client decodes timeout_sec into an int64: anything else is refused before a
    process starts (a bad value would otherwise escape the watch with the process unbounded)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)
                         and -(1 << 63) <= value < 1 << 63):
        return
    raise CommandError(f"failed to decode requested job: timeout_sec must be a whole number "
                       f"of seconds, got {json.dumps(value)[:64]}")


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _write_script(text: str) -> str:
    """Blocking: the script in a private temporary file (removed after the run)."""
    handle, path = tempfile.mkstemp(prefix="rport-script-", suffix=".sh")
    with os.fdopen(handle, "w", encoding="utf-8") as script:
        script.write(text)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
