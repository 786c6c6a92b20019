"""The tenant archive format (checksum, version, counts) and the refusals around it, and moves
between single-tenant servers whose credentials live in auth files."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sqlite3
import stat
from pathlib import Path

import pytest

from rportd.cli import main
from rportd.errors import TransferRefused
from rportd.transfer.archive import Archive, decode_archive, encode_archive
from rportd.transfer.tables import BY_KIND, TABLES

from .api_world import World
from .helpers import free_port
from .processes import Agent, Rportd, port_open, wait_for
from .rport_data import RportClient, make_data_dir, tunnel_json, write_auth_files
from .transfer_world import bcrypt_hash, dump, target, tenant_cli


def _archive() -> Archive:
    return Archive("acme", {"credentials": [{"id": "c1", "password": "pw"}],
                            "clients": [{"id": "x", "client_auth_id": "c1", "details": "{}",
                                         "tunnels": "[]", "disconnected_at": None,
                                         "next_tunnel_id": 1}]},
                   {"host_key_fingerprint": "aa:bb"})


def test_every_declared_table_has_keys_or_is_the_tenant_record() -> None:
    assert all(t.keys or t.kind == "tenants" for t in TABLES)
    assert {t.kind for t in TABLES if t.global_keys} == {"credentials", "users", "api_tokens"}
    assert BY_KIND["credentials"].setting == "[server] auth_table"


def test_an_archive_decodes_to_what_was_encoded() -> None:
    data = encode_archive(_archive())
    decoded = decode_archive(data)
    assert decoded.rows["clients"] == _archive().rows["clients"]
    assert decoded.fingerprint == "aa:bb" and decoded.tenant == "acme"
    header = json.loads(data.split(b"\n", 1)[0])
    assert header["format"] == "rportd-tenant-archive" and header["version"] == 1
    assert "bcrypt" in header["secrets"]["credentials"]


@pytest.mark.parametrize("damage, reason", [
    (lambda d: d.replace(b'"pw"', b'"PW"'), "checksum does not match"),
    (lambda d: d[: len(d) // 2], "truncated"),
    (lambda d: d.rsplit(b"\n", 2)[0] + b"\n", "no trailer"),
    (lambda d: b"", "truncated"),
])
def test_a_damaged_archive_is_refused(damage: object, reason: str) -> None:
    data = damage(encode_archive(_archive()))  # type: ignore[operator]
    with pytest.raises(TransferRefused, match=reason):
        decode_archive(data)


def test_another_format_version_is_refused() -> None:
    data = encode_archive(_archive()).replace(b'"version":1', b'"version":2')
    content = data.rsplit(b"\n", 2)[0] + b"\n"
    rows = content.count(b"\n") - 1
    trailer = json.dumps({"rows": rows, "sha256": hashlib.sha256(content).hexdigest()})
    with pytest.raises(TransferRefused, match="format version 2"):
        decode_archive(content + trailer.encode() + b"\n")


def test_importing_a_damaged_archive_exits_1_and_changes_nothing(tmp_path: Path) -> None:
    source = target(tmp_path / "a", "sqlite")
    source.sql("INSERT INTO clients_auth (id, password, tenant) VALUES ('c1', 'pw', 'acme')")
    out = tmp_path / "acme.archive"
    assert tenant_cli(source, "export", "--tenant", "acme", "--out", str(out)).returncode == 0
    out.write_bytes(out.read_bytes().replace(b'"pw"', b'"PW"'))
    other = target(tmp_path / "b", "sqlite")
    before = dump(other)
    refused = tenant_cli(other, "import", "--tenant", "acme", "--from-export", str(out))
    assert refused.returncode == 1 and "checksum does not match" in refused.stderr
    assert dump(other) == before


def test_exporting_a_tenant_the_server_does_not_have_writes_nothing(tmp_path: Path) -> None:
    world = target(tmp_path, "sqlite")
    out = tmp_path / "typo.archive"
    refused = tenant_cli(world, "export", "--tenant", "acme-typo", "--out", str(out),
                         "--then-delete")
    assert refused.returncode == 1 and "nothing of tenant 'acme-typo'" in refused.stderr
    assert not out.exists()


def _single_tenant(tmp: Path, credentials: dict[str, str], users: list[dict[str, object]],
                   seed: str = "single-seed") -> Rportd:
    tmp.mkdir(parents=True, exist_ok=True)
    auth, api = write_auth_files(tmp, credentials, users)
    return Rportd(tmp, {"server": {"auth_file": str(auth), "key_seed": seed},
                        "api": {"auth_file": str(api)},
                        "database": {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}})


def _migrate(server: Rportd) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["migrate", "-c", str(server.config)]) == 0


def test_a_single_tenant_server_with_auth_files_moves_into_another(tmp_path: Path) -> None:
    """Both servers keep credentials and users in auth files: the archive carries them, the
    target's files gain them (mode 0600, written after the commit)."""
    hashed = bcrypt_hash("admin-pw")
    source = _single_tenant(tmp_path / "a", {"c1": "one"}, [{"username": "admin",
                                                            "password": hashed,
                                                            "groups": ["Administrators"]}])
    data_dir = make_data_dir(tmp_path / "rport", "0.1.24",
                             [RportClient("x", "c1", "hx", [tunnel_json("1", 20100, 22)])])
    _migrate(source)
    world = World(source, "sqlite", {"db_name": str(tmp_path / "a" / "rportd.db")}, [])
    loaded = tenant_cli(world, "import", "--tenant", "one", "--from-rport", str(data_dir),
                        "--accept-new-fingerprint")
    assert loaded.returncode == 0, loaded.stderr
    assert world.sql("SELECT tenant, id FROM clients") == [("", "x")]
    out = tmp_path / "one.archive"
    assert tenant_cli(world, "export", "--tenant", "one", "--out", str(out)).returncode == 0
    receiver = _single_tenant(tmp_path / "b", {"c0": "zero"}, [], seed="single-seed")
    _migrate(receiver)
    other = World(receiver, "sqlite", {"db_name": str(tmp_path / "b" / "rportd.db")}, [])
    done = tenant_cli(other, "import", "--tenant", "one", "--from-export", str(out))
    assert done.returncode == 0, done.stderr
    credentials = json.loads((tmp_path / "b" / "client-auth.json").read_text())
    assert credentials == {"c0": "zero", "c1": "one"}
    users = json.loads((tmp_path / "b" / "api-auth.json").read_text())
    assert users == [{"username": "admin", "password": hashed, "groups": ["Administrators"]}]
    assert stat.S_IMODE((tmp_path / "b" / "client-auth.json").stat().st_mode) == 0o600
    assert other.sql("SELECT tenant, id FROM clients") == [("", "x")]
    again = tenant_cli(other, "import", "--tenant", "one", "--from-export", str(out))
    assert again.returncode == 0 and "0 rows new" in again.stderr


def test_then_delete_is_refused_while_rportd_runs(tmp_path: Path) -> None:
    world = target(tmp_path, "sqlite")
    world.sql("INSERT INTO clients_auth (id, password, tenant) VALUES ('c1', 'pw', 'acme')")
    world.rportd.start()
    try:
        refused = tenant_cli(world, "export", "--tenant", "acme", "--out",
                             str(tmp_path / "a.archive"), "--then-delete")
        assert refused.returncode == 1, refused.stderr
        assert "stop it before deleting a tenant" in refused.stderr
        assert world.sql("SELECT id FROM clients_auth") == [("c1",)]
    finally:
        world.rportd.stop()


def test_every_table_with_a_tenant_column_is_declared(tmp_path: Path) -> None:
    """A migration that adds a tenant-owned table fails here until TABLES names it."""
    migrations = sorted((Path(__file__).resolve().parent.parent / "migrations" / "sqlite")
                        .glob("*.up.sql"))
    with sqlite3.connect(tmp_path / "schema.db") as conn:
        for migration in migrations:
            conn.executescript(migration.read_text())
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = "
                                             "'table'")]
        owned = {t for t in tables
                 if "tenant" in [c[1] for c in conn.execute(f'PRAGMA table_info("{t}")')]}
    declared = {t.table for t in TABLES if t.table} | {"clients_auth", "users", "groups"}
    assert owned - declared == set(), "tenant-owned tables missing from transfer/tables.py"
    assert "tenants" in declared


def test_identical_audit_entries_stay_two_and_a_second_import_adds_none(tmp_path: Path) -> None:
    source = target(tmp_path / "a", "sqlite")
    for _ in range(2):
        source.sql("INSERT INTO audit_log (tenant, username, action, target, result, source, at, "
                   "details) VALUES ('acme', 'al', 'clients.delete', 'x', 'ok', '', "
                   "'2026-01-01T00:00:00Z', '{}')")
    out = tmp_path / "acme.archive"
    assert tenant_cli(source, "export", "--tenant", "acme", "--out", str(out)).returncode == 0
    other = target(tmp_path / "b", "sqlite")
    for expected in ("2 rows new", "0 rows new, 2 unchanged"):
        done = tenant_cli(other, "import", "--tenant", "acme", "--from-export", str(out))
        assert done.returncode == 0 and expected in done.stderr, done.stderr
        assert other.sql("SELECT COUNT(*) FROM audit_log WHERE tenant = 'acme'") == [(2,)]


def test_a_client_row_rportd_could_not_load_is_refused(tmp_path: Path) -> None:
    """The checksum proves integrity, not good intent: a well-formed archive with a broken
    tunnel list is refused before it could stop rportd from starting."""
    bad = _archive()
    bad.rows["clients"][0]["tunnels"] = json.dumps([{"lport": "99999"}])
    out = tmp_path / "bad.archive"
    out.write_bytes(encode_archive(bad))
    world = target(tmp_path / "t", "sqlite", key_seed="")
    before = dump(world)
    refused = tenant_cli(world, "import", "--tenant", "acme", "--from-export", str(out),
                         "--accept-new-fingerprint")
    assert refused.returncode == 1 and "client 'x' cannot be imported" in refused.stderr
    assert dump(world) == before


def test_a_blank_tenant_name_is_refused(tmp_path: Path) -> None:
    world = target(tmp_path, "sqlite")
    refused = tenant_cli(world, "export", "--tenant", "  ", "--out", str(tmp_path / "x"))
    assert refused.returncode == 1 and "--tenant needs a name" in refused.stderr


def test_export_never_writes_through_a_planted_temporary_file(tmp_path: Path) -> None:
    """The archive holds password hashes: a symlink planted where the export writes its
    temporary file (a shared directory) must not receive them, nor clobber its target."""
    world = target(tmp_path / "t", "sqlite")
    world.sql("INSERT INTO clients_auth (id, password, tenant) VALUES ('c1', 'pw', 'acme')")
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    out = tmp_path / "acme.archive"
    (tmp_path / "acme.archive.tmp").symlink_to(victim)
    done = tenant_cli(world, "export", "--tenant", "acme", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep me\n"
    assert not out.is_symlink() and decode_archive(out.read_bytes()).rows["credentials"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def _tunnel(tunnel_id: str, lport: int) -> dict[str, object]:
    return {"id": tunnel_id, "lhost": "127.0.0.1", "lport": str(lport), "rhost": "127.0.0.1",
            "rport": "22", "lport_random": False, "scheme": None, "acl": None, "name": "",
            "protocol": "tcp"}


def test_an_imported_tunnel_on_an_excluded_port_does_not_come_back(tmp_path: Path) -> None:
    """The rules of a tunnel's local side hold for tunnels brought back at a reconnect as for
    new ones: an archive (or an rport server with other excluded_ports) cannot open a port this
    server excludes."""
    allowed, excluded = free_port(), free_port()
    world = target(tmp_path / "t", "sqlite")
    config = world.rportd.config
    config.write_text(config.read_text().replace(
        "[server]\n", f'[server]\nexcluded_ports = ["1-1024", "{excluded}"]\n', 1))
    archive = _archive()
    archive.rows["clients"][0]["tunnels"] = json.dumps([_tunnel("1", excluded),
                                                        _tunnel("2", allowed)])
    archive.meta["host_key_fingerprint"] = ""
    out = tmp_path / "acme.archive"
    out.write_bytes(encode_archive(archive))
    done = tenant_cli(world, "import", "--tenant", "acme", "--from-export", str(out))
    assert done.returncode == 0, done.stderr
    world.rportd.start()
    agent = Agent(tmp_path, world.rportd.url, "c1:pw", "--id", "x", name="excluded-agent")
    try:
        agent.start().wait_connected()
        wait_for(lambda: port_open(allowed), what="the allowed tunnel back")
        assert not port_open(excluded), "a tunnel listens on an excluded port"
    finally:
        agent.stop()
        world.rportd.stop()


def test_setting_flags_before_tenant_apply_to_it(tmp_path: Path) -> None:
    """`rportd --db-name B tenant export -c FILE` reads database B, as flags beat the file for
    every other command; silently using the file's database would export (and with
    --then-delete, delete) from another database than the one named."""
    named, other = target(tmp_path / "named", "sqlite"), target(tmp_path / "file", "sqlite")
    named.sql("INSERT INTO clients_auth (id, password, tenant) VALUES ('in-b', 'pw', 'acme')")
    other.sql("INSERT INTO clients_auth (id, password, tenant) VALUES ('in-a', 'pw', 'acme')")
    out = tmp_path / "acme.archive"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--db-name", str(named.database["db_name"]), "tenant", "export", "-c",
                     str(other.rportd.config), "--tenant", "acme", "--out", str(out)])
    assert code == 0, err.getvalue()
    ids = [row["id"] for row in decode_archive(out.read_bytes()).rows["credentials"]]
    assert ids == ["in-b"]


@pytest.mark.parametrize("name", ["acme corp", "a" * 51, ".acme", "acme/../g"])
def test_an_import_takes_only_a_tenant_name_the_api_can_address(tmp_path: Path,
                                                                name: str) -> None:
    """The operator API (GET/PATCH/DELETE /tenants/{name}) refuses such names: a tenant
    imported under one could never be suspended or removed there (and 51 characters do not fit
    MySQL's tenant columns)."""
    out = tmp_path / "acme.archive"
    out.write_bytes(encode_archive(_archive()))
    world = target(tmp_path / "t", "sqlite")
    before = dump(world)
    refused = tenant_cli(world, "import", "--tenant", name, "--from-export", str(out),
                         "--accept-new-fingerprint")
    assert refused.returncode == 1 and "a tenant name is 1-50" in refused.stderr, refused.stderr
    assert dump(world) == before


@pytest.mark.parametrize("kind, row", [
    ("audit_log", {"at": ["2026"], "username": "u", "action": "a", "target": "", "result": "ok",
                   "source": "", "details": "{}"}),
    ("jobs", {"jid": "j1", "client_id": "x", "status": "successful", "started_at": "t",
              "created_by": "u", "details": {"result": 1}}),
])
def test_a_row_value_that_is_not_a_column_value_is_refused(tmp_path: Path, kind: str,
                                                           row: dict[str, object]) -> None:
    """Checksummed is not well-formed: a list or object where a column holds text or a number
    is refused as the archive's fault (exit 1, one reason), not a traceback."""
    out = tmp_path / "crafted.archive"
    out.write_bytes(encode_archive(Archive("acme", {kind: [row]})))
    world = target(tmp_path / "t", "sqlite")
    before = dump(world)
    refused = tenant_cli(world, "import", "--tenant", "acme", "--from-export", str(out),
                         process=True)
    assert refused.returncode == 1, refused.stderr
    assert "not a usable tenant archive" in refused.stderr and "Traceback" not in refused.stderr
    assert dump(world) == before
