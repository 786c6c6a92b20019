"""rport's JSON of a job (one command on one client) and of a multi-client job, and how an
agent's report is folded into a job rportd started."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import Conflict, RportdError

__all__ = ["Job", "JobSpec", "CommandRefused", "NoAnswer", "FINAL_STATUSES", "new_jid", "now_iso",
           "new_job", "new_multi_job", "job_summary", "multi_summary", "finished",
           "merge_report", "truncate_utf8", "MAX_ERROR_BYTES"]

Job = dict[str, Any]
FINAL_STATUSES = ("successful", "failed", "unknown")
MAX_ERROR_BYTES = 4096  # an agent's error text, stored and shown


class CommandRefused(Conflict):
    """The agent answered run_cmd with a failure text (shown as the agent sent it)."""

    code = "ERR_CODE_COMMAND_REFUSED"


class NoAnswer(RportdError):
    """The agent did not answer run_cmd in time."""

    status = 504
    code = "ERR_CODE_CLIENT_TIMEOUT"
    title = "Client timeout"


@dataclass(frozen=True)
class JobSpec:
    """What the API asked to run, the same for every client of a multi-client job."""

    command: str
    timeout_sec: int
    shell: str = ""
    cwd: str = ""
    interpreter: str = ""
    is_sudo: bool = False
    is_script: bool = False
    stream_result: bool = False


def new_jid() -> str:
    return str(uuid.uuid4())


def now_iso() -> str:
    """UTC with microseconds: sortable as text, like the Go client's RFC 3339 times."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_job(spec: JobSpec, client_id: str, client_name: str, created_by: str,
            multi_job_id: str | None) -> Job:
    """A job as sent in run_cmd: rport's 2021 keys, then the newest client's (the 2021 client
    ignores keys it does not know)."""
    return {
        "jid": new_jid(), "status": "running", "finished_at": None, "client_id": client_id,
        "client_name": client_name, "command": spec.command, "shell": spec.shell,
        "cwd": spec.cwd, "interpreter": spec.interpreter, "pid": None, "started_at": now_iso(),
        "created_by": created_by, "timeout_sec": spec.timeout_sec, "multi_job_id": multi_job_id,
        "schedule_id": None, "error": "", "result": None, "is_sudo": spec.is_sudo,
        "is_script": spec.is_script, "stream_result": spec.stream_result,
    }


def new_multi_job(spec: JobSpec, client_ids: list[str], group_ids: list[str], created_by: str,
                  concurrent: bool, abort_on_err: bool) -> Job:
    return {
        "jid": new_jid(), "started_at": now_iso(), "created_by": created_by,
        "client_ids": client_ids, "group_ids": group_ids, "command": spec.command,
        "shell": spec.shell, "cwd": spec.cwd, "interpreter": spec.interpreter,
        "is_sudo": spec.is_sudo, "is_script": spec.is_script, "timeout_sec": spec.timeout_sec,
        "concurrent": concurrent, "abort_on_err": abort_on_err,
    }


def job_summary(job: Job) -> Job:
    return {"jid": job["jid"], "status": job["status"], "finished_at": job["finished_at"]}


def multi_summary(multi: Job) -> Job:
    return {"jid": multi["jid"], "started_at": multi["started_at"],
            "created_by": multi["created_by"]}


def finished(job: Job, status: str, error: str) -> Job:
    """`job` ended by rportd itself (refused, timed out, client gone, rportd restarted)."""
    return {**job, "status": status, "finished_at": now_iso(), "error": error}


def truncate_utf8(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` bytes of UTF-8, never cutting a character in half."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


def _text(value: Any, limit: int) -> tuple[str, bool]:
    return truncate_utf8(value if isinstance(value, str) else "", limit)


def _time(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 40 else None


def merge_report(job: Job, report: dict[str, Any], output_limit: int) -> Job:
    """The job after the agent's cmd_result. Only what the agent measured is taken from it
    (status, times, pid, error, output, each bounded); what rportd decided (command, client,
    creator, multi-job) stays rportd's."""
    status = report.get("status")
    result = report.get("result") if isinstance(report.get("result"), dict) else {}
    assert isinstance(result, dict)
    notes: list[str] = []
    kept: dict[str, str] = {}
    for stream in ("stdout", "stderr", "summary"):
        kept[stream], cut = _text(result.get(stream), output_limit)
        if cut:
            notes.append(f"{stream} cut by rportd to {output_limit} bytes")
    error, _ = _text(report.get("error"), MAX_ERROR_BYTES)
    pid = report.get("pid")
    shell = report.get("shell")  # the 2021 client reports the shell it used (/bin/sh)
    return {**job,
            "shell": shell if isinstance(shell, str) and len(shell) <= 256 else job["shell"],
            "status": status if status in FINAL_STATUSES else "unknown",
            "finished_at": _time(report.get("finished_at")) or now_iso(),
            "pid": pid if isinstance(pid, int) and not isinstance(pid, bool) else job["pid"],
            "error": ", ".join([e for e in (error, *notes) if e]),
            "result": kept}
