"""A moved tenant's objects work on the new server, made and checked through the API: a client
group, a job and a multi-client job run by a real agent, a group's permissions, a personal token
and the audit log. Personal tokens are bound to the owner's account *and* the server's
`[api] jwt_secret`: they verify after a move exactly when the target has the source's secret,
and the import says so when it has not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .api_world import CREDENTIALS, World, build_world
from .processes import Agent
from .test_commands import finished_job, finished_multi, post
from .transfer_world import SEED, target, tenant_cli

JWT_SECRET = "moved-tenants-share-this-jwt-secret-0123456789"


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Tenant J made through the API on a SQLite rportd, then exported (the source stopped)."""
    tmp = tmp_path_factory.mktemp("objects")
    (tmp / "source").mkdir()
    database: dict[str, object] = {"db_type": "sqlite", "db_name": str(tmp / "source.db")}
    source = build_world(tmp / "source", "sqlite", database, agents=(("jonly", "cj"),),
                         extra={"server": {"key_seed": SEED, "keep_lost_clients": "168h"},
                                "api": {"jwt_secret": JWT_SECRET}})
    try:
        made = _make_objects(source)
        made["answers"] = _answers(source, made)
    finally:
        source.stop()
    archive = tmp / "J.rportd-tenant"
    done = tenant_cli(source, "export", "--tenant", "J", "--out", str(archive))
    assert done.returncode == 0, done.stderr
    made["archive"], made["tmp"] = archive, tmp
    yield made


def _make_objects(world: World) -> dict[str, Any]:
    group = post(world, "/api/v1/client-groups",
                 {"id": "web", "description": "web servers", "params": {"client_id": ["jonly"]}})
    assert group.status in (200, 201), group.body
    one = post(world, "/api/v1/clients/jonly/commands", {"command": "/usr/bin/printf moved"})
    assert one.status == 200, one.body
    jid = str(one.json()["data"]["jid"])
    assert finished_job(world, "jonly", jid)["status"] == "successful"
    many = post(world, "/api/v1/commands", {"command": "/usr/bin/printf many",
                                            "group_ids": ["web"]})
    assert many.status == 200, many.body
    multi = str(many.json()["data"]["jid"])
    finished_multi(world, multi, 1)
    grant = world.request("PUT", "/api/v1/user-groups/Auditors", "alice",
                          body=json.dumps({"permissions": ["clients:read"]}).encode())
    assert grant.status == 200, grant.body
    token = post(world, "/api/v1/me/tokens", {"name": "ci", "scopes": ["clients:read"]})
    assert token.status in (200, 201), token.body
    return {"jid": jid, "multi": multi, "token": str(token.json()["data"]["token"])}


def _answers(world: World, made: dict[str, Any]) -> dict[str, Any]:
    def get(path: str, **kw: Any) -> Any:
        answer = world.request("GET", path, "alice", **kw)
        assert answer.status == 200, (path, answer.body)
        return answer.json()["data"]

    audit = [{k: e[k] for k in ("action", "username", "result", "at")}
             for e in get("/api/v1/auditlog")]
    return {"group": get("/api/v1/client-groups/web"),
            "job": get(f"/api/v1/clients/jonly/commands/{made['jid']}"),
            "multi": get(f"/api/v1/commands/{made['multi']}"),
            "permissions": get("/api/v1/user-groups/Auditors"),
            "audit": sorted(audit, key=json.dumps)}


def _serve(world: World, tmp: Path) -> None:
    world.rportd.start()
    agent = Agent(tmp, world.rportd.url, f"cj:{CREDENTIALS['cj'][0]}", "--id", "jonly",
                  "--name", "jonly@cj", name="moved-jonly")
    world.agents.append(agent.start())
    agent.wait_connected()


def test_groups_jobs_permissions_audit_and_tokens_work_after_a_move(moved: dict[str, Any]
                                                                   ) -> None:
    own = target(moved["tmp"] / "same-secret", "sqlite")
    config = own.rportd.config
    config.write_text(config.read_text().replace("[api]\n", f'[api]\njwt_secret = "{JWT_SECRET}"\n'
                                                 , 1))
    done = tenant_cli(own, "import", "--tenant", "J", "--from-export", str(moved["archive"]))
    assert done.returncode == 0, done.stderr
    assert "jwt_secret" not in done.stderr, done.stderr
    _serve(own, moved["tmp"])
    try:
        answers = _answers(own, moved)
        assert {k: v for k, v in answers.items() if k != "audit"} == \
            {k: v for k, v in moved["answers"].items() if k != "audit"}
        assert all(entry in answers["audit"] for entry in moved["answers"]["audit"])
        listed = own.request("GET", "/api/v1/clients", token=moved["token"])
        assert listed.status == 200, listed.body
        assert [c["id"] for c in listed.json()["data"]] == ["jonly"]
    finally:
        own.stop()


def test_an_import_onto_another_jwt_secret_says_the_tokens_end(moved: dict[str, Any]) -> None:
    own = target(moved["tmp"] / "other-secret", "sqlite")
    done = tenant_cli(own, "import", "--tenant", "J", "--from-export", str(moved["archive"]))
    assert done.returncode == 0, done.stderr
    assert ("api_tokens: 1 personal token will not verify here: this server's [api] "
            "jwt_secret is not the source's") in done.stderr, done.stderr
    own.rportd.start()
    try:
        refused = own.request("GET", "/api/v1/clients", token=moved["token"])
        assert refused.status == 401, refused.body
    finally:
        own.stop()


def test_an_import_into_a_single_tenant_server_says_the_tokens_end(moved: dict[str, Any]
                                                                  ) -> None:
    own = target(moved["tmp"] / "single", "sqlite", multi=False)
    config = own.rportd.config
    config.write_text(config.read_text().replace("[api]\n", f'[api]\njwt_secret = "{JWT_SECRET}"\n'
                                                 , 1))
    done = tenant_cli(own, "import", "--tenant", "J", "--from-export", str(moved["archive"]))
    assert done.returncode == 0, done.stderr
    assert ("1 personal token will not verify here: a token is bound to its owner's tenant, "
            "and this server has no tenants") in done.stderr, done.stderr
    own.rportd.start()
    try:
        assert own.request("GET", "/api/v1/me", "alice").status == 200, "alice moved"
        refused = own.request("GET", "/api/v1/clients", token=moved["token"])
        assert refused.status == 401, refused.body
    finally:
        own.stop()
