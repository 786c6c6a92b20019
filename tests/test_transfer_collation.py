"""Importing tenant `j` next to tenant `J` on operators' MySQL tables made from rport's case-
insensitive DDL: the two stay two, and an archive's rows never reach the other tenant's users."""

from __future__ import annotations

from pathlib import Path

from rportd.transfer.archive import Archive, encode_archive

from .api_world import create_mysql_database, create_seed_tables, drop_mysql_database
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, require_mysql
from .transfer_world import add_tenant, bcrypt_hash, dump, target, tenant_cli


def test_tenant_j_imported_beside_J_stays_apart(tmp_path: Path) -> None:
    require_mysql().close()
    database: dict[str, object] = {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}",
                                   "db_user": MYSQL_USER, "db_password": MYSQL_PASSWORD,
                                   "db_name": create_mysql_database()}
    try:
        create_seed_tables(database)
        world = target(tmp_path, "mysql", database=database)
        add_tenant(world, "J", ("cj", "cj-secret"), ("alice", "alice-pw", "admins"))
        rows = {"credentials": [{"id": "cj2", "password": "pw"}],
                "users": [{"username": "jill", "password": bcrypt_hash("jill-pw")}],
                "user_groups": [{"username": "jill", "group": "admins"}],
                "group_permissions": [{"group": "admins", "permissions": '["*"]'}]}
        archive = tmp_path / "j.archive"
        archive.write_bytes(encode_archive(Archive("j", rows)))
        done = tenant_cli(world, "import", "--tenant", "j", "--from-export", str(archive))
        assert done.returncode == 0, done.stderr
        assert sorted(world.sql("SELECT username, tenant FROM users")) == [
            ("alice", "J"), ("jill", "j")]
        assert sorted(world.sql("SELECT tenant, `group` FROM group_permissions")) == [
            ("j", "admins")]
        again = tenant_cli(world, "import", "--tenant", "j", "--from-export", str(archive))
        assert again.returncode == 0 and "0 rows new" in again.stderr, again.stderr

        # a crafted archive naming J's user: refused or kept in j, never alice's groups
        before = dump(world)
        rows["user_groups"].append({"username": "alice", "group": "admins"})
        archive.write_bytes(encode_archive(Archive("j", rows)))
        crafted = tenant_cli(world, "import", "--tenant", "j", "--from-export", str(archive))
        assert crafted.returncode == 1, crafted.stderr
        assert len(crafted.stderr.strip().splitlines()) < 20 and "Traceback" not in crafted.stderr
        assert dump(world) == before
    finally:
        drop_mysql_database(str(database["db_name"]))
