"""Running jobs: run_cmd to one agent or to many in turn or at once, the agent's cmd_result
under a deadline, and what becomes of a job whose agent never reports, hangs up, or outlives
rportd. Persist, then publish: a job's row is written before anyone hears of it.

A cmd_result counts only for a job this process started on that very connection (the jid is
looked up among the pending jobs, then the session compared); anything else is logged and
dropped. A job's lock orders its writes: the row is inserted before run_cmd goes out, and a
result arriving meanwhile waits until the start is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import ServerConfig
from ..errors import BadRequest, Conflict, RportdError, StoreError
from ..quotas import QuotaService
from ..registry import ClientRecord, ClientSession
from ..store import Store
from .model import (
    Job,
    JobSpec,
    finished,
    merge_report,
    new_job,
    new_multi_job,
    truncate_utf8,
)
from .store import JobStore

__all__ = ["JobService", "JobListener", "RUN_CMD_TIMEOUT", "MAX_TARGETS",
           "MAX_RUNNING_PER_CLIENT", "MAX_MULTI_PER_TENANT"]

log = logging.getLogger("rportd.jobs")

MAX_RUNNING_PER_CLIENT = 100
MAX_MULTI_PER_TENANT = 50  # multi-client jobs in progress at once
RUN_CMD_TIMEOUT = 30.0  # the 2021 client answers a multi-job's run_cmd once its previous job ends
MAX_TARGETS = 1000  # clients in one multi-client job


class JobListener(Protocol):
    """Told of a job's progress (the /ws/commands connection that started it). Never awaits."""

    def job_done(self, job: Job) -> None: ...

    def all_done(self) -> None: ...

    def output(self, jid: str, stream: str, text: str) -> None: ...


@dataclass(eq=False)
class _Pending:
    tenant: str
    session: ClientSession | None
    job: Job
    listener: JobListener | None
    done: asyncio.Future[Job]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.TimerHandle | None = None
    streamed: int = 0
    streams: set[str] = field(default_factory=set)  # stdout/stderr channels opened
    reported: bool = False  # a cmd_result was taken: it waits for the lock, later ones are not


class JobService:
    """The one owner of running jobs."""

    def __init__(self, store: Store, server: ServerConfig, quotas: QuotaService | None = None):
        self.store = JobStore(store)
        self._quotas = quotas
        self._grace = server.cmd_result_grace
        self._keep = server.jobs_max_results
        self._output_limit = server.max_job_output_bytes
        self.default_timeout = server.run_remote_cmd_timeout_sec
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._running: dict[int, int] = {}  # id(session) -> its pending jobs
        self._multi_running: dict[str, int] = {}  # tenant -> multi-client jobs in progress
        self._multi_places: dict[str, int] = {}  # tenant -> commands its multi-jobs may run at once
        self._multi_tasks: dict[str, set[asyncio.Task[None]]] = {}  # tenant -> its multi-job runs

    # ------------------------------------------------------------------ life cycle
    async def recover(self) -> int:
        """Start-up: a job still marked running belongs to a process that is gone and can never
        hear its result; it becomes unknown, with the reason."""
        stale = await self.store.running_jobs()
        for tenant, job in stale:
            await self.store.update_job(tenant, finished(
                job, "unknown", "rportd restarted before the client reported the result"))
        if stale:
            log.warning("%d jobs were running when rportd stopped; marked unknown", len(stale))
        return len(stale)

    async def stop(self) -> None:
        """Shutdown, before the agents are hung up on: running jobs end unknown (their agents
        may still finish them, but nobody will hear it), multi-client runs are cancelled."""
        self._stopping = True
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        ending = [self._finish(jid, lambda job: finished(
            job, "unknown", "rportd stopped before the client reported the result"))
            for jid in list(self._pending)]
        if ending:
            _, late = await asyncio.wait([asyncio.ensure_future(e) for e in ending], timeout=5)
            for task in late:  # a start still waiting for its agent: left to the restart sweep
                task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def forget_tenant(self, tenant: str, timeout: float = 5.0) -> None:
        """The tenant is being removed (tenant_admin.py): its multi-client runs are cancelled
        (bounded wait) and its running jobs end here, failed, told to their listeners and
        written nowhere, so no part of them lands in the tables after the tenant's rows go."""
        runs = self._multi_tasks.pop(tenant, set())
        for task in runs:
            task.cancel()
        if runs:
            await asyncio.wait(runs, timeout=timeout)
        for jid, pending in list(self._pending.items()):
            if pending.tenant != tenant:
                continue
            if pending.timer is not None:
                pending.timer.cancel()
            self._drop(jid)
            pending.job = finished(pending.job, "failed", "the tenant was removed")
            self._publish(pending)

    # ------------------------------------------------------------------ starting jobs
    def running(self, tenant: str) -> int:
        """The tenant's commands running now, as its `commands` quota counts them: its jobs on
        one client, and the places its multi-client jobs in progress hold (all their clients
        when they run at once, one when they run in turn)."""
        alone = sum(1 for p in self._pending.values()
                    if p.tenant == tenant and not p.job.get("multi_job_id"))
        return alone + self._multi_places.get(tenant, 0)

    def _commands_quota(self, tenant: str, places: int) -> AbstractAsyncContextManager[None]:
        """Holds `places` of the tenant's `commands` quota while a start is decided (403
        ERR_CODE_QUOTA_EXCEEDED over it); once started, `running` counts them."""
        if self._quotas is None:
            return nullcontext()
        return self._quotas.hold(tenant, "commands", lambda: self.running(tenant), n=places)

    def check_runnable(self, records: list[ClientRecord], spec: JobSpec) -> None:
        """Before anything starts: every target connected, and able to run a script if it is
        one. BadRequest naming the first that is not (ids are the caller's own clients)."""
        for record in records:
            if record.session is None:
                raise BadRequest(f"client {record.id!r} is not connected",
                                 code="ERR_CODE_CLIENT_NOT_CONNECTED")
            if spec.is_script and not record.session.supports_scripts():
                raise _no_scripts(record)

    async def run_on_client(self, record: ClientRecord, spec: JobSpec, created_by: str,
                            listener: JobListener | None = None) -> Job:
        """One job; raises the agent's refusal (CommandRefused), NoAnswer or BadRequest, in
        which case nothing is kept (as rport)."""
        self.check_runnable([record], spec)
        async with self._commands_quota(record.tenant, 1):
            pending = await self._start(record, spec, created_by, None, listener)
        return pending.job

    async def start_multi(self, tenant: str, records: list[ClientRecord], spec: JobSpec,
                          created_by: str, targets: tuple[list[str], list[str]],
                          concurrent: bool, abort_on_err: bool,
                          listener: JobListener | None = None) -> Job:
        """Persist the multi-client job, then run it in the background; returns it at once."""
        self.check_runnable(records, spec)
        if self._multi_running.get(tenant, 0) >= MAX_MULTI_PER_TENANT:
            raise Conflict(f"{MAX_MULTI_PER_TENANT} multi-client jobs are still running; wait "
                           "for one to end", code="ERR_CODE_TOO_MANY_JOBS")
        multi = new_multi_job(spec, targets[0], targets[1], created_by, concurrent, abort_on_err)
        places = _places(multi, records)
        async with self._commands_quota(tenant, places):
            await self.store.insert_multi_job(tenant, multi)
            self._multi_running[tenant] = self._multi_running.get(tenant, 0) + 1
            self._multi_places[tenant] = self._multi_places.get(tenant, 0) + places
        task = self._spawn(self._run_multi(tenant, multi, records, spec, listener))
        runs = self._multi_tasks.setdefault(tenant, set())
        runs.add(task)
        task.add_done_callback(runs.discard)
        return multi

    async def _run_multi(self, tenant: str, multi: Job, records: list[ClientRecord],
                         spec: JobSpec, listener: JobListener | None) -> None:
        try:
            if multi["concurrent"]:
                await asyncio.gather(*(self._child(r, spec, multi, listener) for r in records))
            else:
                for record in records:
                    job = await self._child(record, spec, multi, listener)
                    if multi["abort_on_err"] and job["status"] == "failed":
                        log.info("multi-job %s: aborted after %s failed", multi["jid"], record.id)
                        break
            await self._prune(self.store.prune_multi_jobs(tenant, self._keep))
        finally:
            _release(self._multi_running, tenant, 1)
            _release(self._multi_places, tenant, _places(multi, records))
            if listener is not None:
                listener.all_done()

    async def _child(self, record: ClientRecord, spec: JobSpec, multi: Job,
                     listener: JobListener | None) -> Job:
        """One client's part of a multi-client job, to its end (never raises for the agent)."""
        try:
            pending = await self._start(record, spec, multi["created_by"], multi["jid"], listener)
        except StoreError as exc:
            log.error("multi-job %s: job on %s not recorded: %s", multi["jid"], record.id, exc)
            return {"status": "failed"}
        deadline = spec.timeout_sec + self._grace + RUN_CMD_TIMEOUT
        try:
            async with asyncio.timeout(deadline):
                return await asyncio.shield(pending.done)
        except TimeoutError:  # the overdue timer should have ended it long before
            return finished(pending.job, "unknown", "no result within the deadline")

    async def _start(self, record: ClientRecord, spec: JobSpec, created_by: str,
                     multi_jid: str | None, listener: JobListener | None) -> _Pending:
        session = record.session
        job = new_job(spec, record.id, str(record.details.get("name") or ""), created_by,
                      multi_jid)
        pending = _Pending(record.tenant, session, job, listener,
                           asyncio.get_running_loop().create_future())
        if session is None:  # gone since the check: only a multi-client job gets here
            await self._fail_at_start(pending, "the client is not connected")
            return pending
        if spec.is_script and not session.supports_scripts():
            # A part run in turn: the client reconnected as an older generation since the check.
            if multi_jid is None:
                raise _no_scripts(record)
            pending.session = None
            await self._fail_at_start(pending, _no_scripts(record).detail)
            return pending
        try:
            self._admit(pending, session)
        except Conflict as exc:
            if multi_jid is None:
                raise
            pending.session = None  # never sent: kept as a failed part of the multi-job
            await self._fail_at_start(pending, exc.detail)
            return pending
        async with pending.lock:
            try:
                await self.store.insert_job(record.tenant, job)
            except BaseException:
                self._drop(job["jid"])
                raise
            await self._send(pending, session, multi_jid is None)
        return pending

    def _admit(self, pending: _Pending, session: ClientSession) -> None:
        """A client runs at most MAX_RUNNING_PER_CLIENT jobs rportd waits for (the newest
        client runs commands side by side): what waits in memory stays bounded."""
        if self._running.get(id(session), 0) >= MAX_RUNNING_PER_CLIENT:
            raise Conflict(f"the client already runs {MAX_RUNNING_PER_CLIENT} jobs; wait for "
                           "one to end", code="ERR_CODE_TOO_MANY_JOBS")
        self._pending[pending.job["jid"]] = pending
        self._running[id(session)] = self._running.get(id(session), 0) + 1

    def _drop(self, jid: str) -> None:
        pending = self._pending.pop(jid, None)
        if pending is None or pending.session is None:
            return
        left = self._running.get(id(pending.session), 0) - 1
        if left > 0:
            self._running[id(pending.session)] = left
        else:
            self._running.pop(id(pending.session), None)

    async def _send(self, pending: _Pending, session: ClientSession, single: bool) -> None:
        job = pending.job
        try:
            reply = await session.run_job(job, RUN_CMD_TIMEOUT)
        except RportdError as exc:
            self._drop(job["jid"])
            if single:
                await self._forget(pending)
                raise
            await self._fail_at_start(pending, exc.detail or str(exc))
            return
        except BaseException:
            self._drop(job["jid"])
            raise
        started = reply.get("StartedAt")
        pid = reply.get("Pid")
        pending.job = {**job, "pid": pid if isinstance(pid, int) else None,
                       "started_at": started if isinstance(started, str) and len(started) <= 40
                       else job["started_at"]}
        await self._persist(pending)
        overdue = job["timeout_sec"] + self._grace
        pending.timer = asyncio.get_running_loop().call_later(
            overdue, lambda: self._spawn(self._finish(job["jid"], lambda j: finished(
                j, "unknown", f"the client reported no result within {job['timeout_sec']}s "
                              f"(+{self._grace:g}s)"))))

    async def _forget(self, pending: _Pending) -> None:
        try:
            await self.store.delete_job(pending.tenant, pending.job["jid"])
        except StoreError as exc:  # left running: the next start marks it unknown
            log.error("job %s: refused job not deleted: %s", pending.job["jid"], exc)

    async def _fail_at_start(self, pending: _Pending, error: str) -> None:
        """A multi-client job's part that did not start is kept, failed, with the reason."""
        pending.job = finished(pending.job, "failed", error)
        if pending.session is None:
            await self.store.insert_job(pending.tenant, pending.job)
        else:
            await self._persist(pending)
        self._publish(pending)

    # ------------------------------------------------------------------ ending jobs
    def on_result(self, session: ClientSession, client_id: str, payload: bytes) -> None:
        """A cmd_result from `session` (called by the agent port; never awaits)."""
        try:
            report = json.loads(payload)
            jid = report.get("jid") if isinstance(report, dict) else None
        except (ValueError, RecursionError):  # nested too deep for Python's parser
            report, jid = None, None
        pending = self._pending.get(jid) if isinstance(jid, str) else None
        if pending is None or pending.session is not session:
            shown = jid[:64] if isinstance(jid, str) else None
            log.warning("client %s: cmd_result for a job rportd did not start on this "
                        "connection ignored (jid %r, %d bytes)", client_id, shown, len(payload))
            return
        if pending.reported:  # only the first counts; a flood must not queue on the job's lock
            log.warning("client %s: a second cmd_result for job %s ignored", client_id, jid)
            return
        pending.reported = True
        assert isinstance(jid, str) and isinstance(report, dict)
        self._spawn(self._finish(jid, lambda job: merge_report(job, report, self._output_limit)))

    def session_closed(self, session: ClientSession) -> None:
        """The agent hung up: its running jobs can no longer report here."""
        if self._stopping:
            return  # rportd hung up, and stop() has said so
        for jid, pending in list(self._pending.items()):
            if pending.session is session:
                self._spawn(self._finish(jid, lambda job: finished(
                    job, "failed", "the client disconnected before it reported the result")))

    async def _finish(self, jid: str, edit: Callable[[Job], Job]) -> None:
        pending = self._pending.get(jid)
        if pending is None:
            return
        async with pending.lock:
            if self._pending.get(jid) is not pending:
                return  # ended meanwhile (a result and a timeout racing)
            pending.job = edit(pending.job)
            await self._persist(pending)
            self._drop(jid)
            if pending.timer is not None:
                pending.timer.cancel()
            self._publish(pending)
        await self._prune(self.store.prune_client(pending.tenant, pending.job["client_id"],
                                                  self._keep))

    def _publish(self, pending: _Pending) -> None:
        if not pending.done.done():
            pending.done.set_result(pending.job)
        if pending.listener is not None:
            pending.listener.job_done(pending.job)

    async def _persist(self, pending: _Pending) -> None:
        """A job's new state. A failed write is logged: who hears of the end must not depend on
        the database (the next start marks a job left running unknown)."""
        try:
            await self.store.update_job(pending.tenant, pending.job)
        except StoreError as exc:
            log.error("job %s: not persisted: %s", pending.job["jid"], exc)

    async def _prune(self, deletion: Coroutine[Any, Any, int]) -> None:
        try:
            await deletion
        except StoreError as exc:
            log.warning("old job results not deleted: %s", exc)

    # ------------------------------------------------------------------ streamed output
    def open_stream(self, session: ClientSession, jid: str, stream: str) -> bool:
        """Whether `session` may open its `stream` channel for `jid`: a job rportd started on
        that connection with stream_result, still running, each stream once."""
        pending = self._pending.get(jid)
        if (pending is None or pending.session is not session or stream in pending.streams
                or not pending.job.get("stream_result")):
            return False
        pending.streams.add(stream)
        return True

    def stream_output(self, jid: str, stream: str, data: bytes) -> None:
        """Streamed output goes to the job's listener, at most the stored cap in all."""
        pending = self._pending.get(jid)
        if pending is None or pending.listener is None:
            return
        room = self._output_limit - pending.streamed
        if room <= 0:
            return
        text, _ = truncate_utf8(data.decode("utf-8", "replace"), room)
        pending.streamed += len(text.encode("utf-8"))
        with contextlib.suppress(Exception):
            pending.listener.output(jid, stream, text)


def _no_scripts(record: ClientRecord) -> BadRequest:
    return BadRequest(f"client {record.id!r} cannot run scripts: its rport version "
                      f"({record.details.get('version') or 'unknown'}) only runs commands",
                      code="ERR_CODE_SCRIPTS_NOT_SUPPORTED")


def _places(multi: Job, records: list[ClientRecord]) -> int:
    """The commands a multi-client job runs at once."""
    return max(1, len(records)) if multi["concurrent"] else 1


def _release(counts: dict[str, int], tenant: str, n: int) -> None:
    left = counts.pop(tenant, n) - n
    if left > 0:
        counts[tenant] = left
