"""The jobs tables through rportd's own store, on a real SQLite file and a real MariaDB:
retention per client and per tenant, tenants compared exactly, running jobs recovered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rportd.config import DatabaseConfig, build_config
from rportd.errors import NotFound
from rportd.jobs import JobService, JobSpec
from rportd.jobs.model import new_job, new_multi_job
from rportd.store import Store, open_store
from rportd.store.migrate import migrate_up
from rportd.tenancy import Scope

from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER

SPEC = JobSpec(command="/usr/bin/id", timeout_sec=5)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        config = DatabaseConfig("sqlite", "", "", "", str(tmp_path / "jobs.db"))
    else:
        name = request.getfixturevalue("mysql_db")
        config = DatabaseConfig("mysql", f"{MYSQL_HOST}:{MYSQL_PORT}", MYSQL_USER,
                                MYSQL_PASSWORD, name)
    opened = await open_store(config)
    await migrate_up(opened)
    try:
        yield opened
    finally:
        await opened.close()


def service(store: Store, keep: int = 3) -> JobService:
    config = build_config({"server": {"jobs_max_results": keep, "allow_root": True}})
    return JobService(store, config.server)


async def test_retention_keeps_the_newest_finished_jobs_per_client(store: Store) -> None:
    jobs = service(store).store
    made = []
    for number in range(6):
        job = {**new_job(SPEC, "c1", "", "alice", None), "status": "successful",
               "started_at": f"2026-01-01T00:00:0{number}.000000Z"}
        made.append(job["jid"])
        await jobs.insert_job("J", job)
    running = {**new_job(SPEC, "c1", "", "alice", None), "started_at": "2025-01-01T00:00:00Z"}
    await jobs.insert_job("J", running)
    other = new_job(SPEC, "c1", "", "gina", None)
    await jobs.insert_job("j", {**other, "status": "failed"})
    assert await jobs.prune_client("J", "c1", 3) == 3
    left = {j["jid"] for j in await jobs.client_jobs(Scope("J"), "c1")}
    assert left == {*made[3:], running["jid"]}  # a running job is never deleted
    assert [j["jid"] for j in await jobs.client_jobs(Scope("j"), "c1")] == [other["jid"]]


async def test_reads_are_scoped_and_tenants_compared_exactly(store: Store) -> None:
    jobs = service(store).store
    job = new_job(SPEC, "c1", "", "alice", None)
    await jobs.insert_job("J", job)
    assert (await jobs.job(Scope("J"), "c1", job["jid"]))["jid"] == job["jid"]
    with pytest.raises(NotFound):  # MariaDB's utf8mb4_bin pads: 'c1 ' = 'c1' without care
        await jobs.job(Scope("J"), "c1 ", job["jid"])
    assert await jobs.client_jobs(Scope("J"), "c1 ") == []
    for scope in (Scope("j"), Scope(""), Scope("J ")):
        with pytest.raises(NotFound) as missing:
            await jobs.job(scope, "c1", job["jid"])
        assert missing.value.detail == "job not found"
        assert await jobs.client_jobs(scope, "c1") == []
    multi = new_multi_job(SPEC, ["c1", "c2"], [], "alice", False, True)
    await jobs.insert_multi_job("J", multi)
    assert [m["jid"] for m in await jobs.multi_jobs(Scope("J"))] == [multi["jid"]]
    assert await jobs.multi_jobs(Scope("j")) == []
    for _ in range(4):
        await jobs.insert_multi_job("J", new_multi_job(SPEC, ["c1"], [], "a", False, True))
    assert await jobs.prune_multi_jobs("J", 2) == 3


async def test_recover_ends_jobs_left_running(store: Store) -> None:
    jobs = service(store)
    job = new_job(SPEC, "c1", "", "alice", None)
    await jobs.store.insert_job("J", job)
    assert await jobs.recover() == 1
    recovered = await jobs.store.job(Scope("J"), "c1", job["jid"])
    assert recovered["status"] == "unknown" and recovered["finished_at"]
    assert recovered["error"] == "rportd restarted before the client reported the result"
    assert await jobs.recover() == 0
