"""`--service install|uninstall` for rportd and our agent write a hardened systemd unit that
`systemd-analyze verify` accepts (into a temporary unit directory; nothing is started)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rportd.service import example_units

from .helpers import free_port, run_rportd, write_config

ROOT = Path(__file__).resolve().parent.parent
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectControlGroups=yes",
             "RestrictSUIDSGID=yes", "SystemCallFilter=@system-service", "LockPersonality=yes")


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing in CI: apt-get install -y systemd")
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return tool


def verify(unit: Path) -> None:
    result = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout and not result.stderr, (
        result.stdout + result.stderr)


def exposure(unit: Path) -> float:
    """systemd's own score of the hardening (0 = fully sandboxed, 10 = none), read offline."""
    result = subprocess.run([systemd_analyze(), "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def server_config(tmp_path: Path, port: int | None = None) -> Path:
    return write_config(tmp_path / "rportd.conf", {
        "server": {"address": f"127.0.0.1:{port or free_port()}", "auth": "c1:pw",
                   "data_dir": str(tmp_path / "data")},
        "api": {"address": f"127.0.0.1:{free_port()}", "auth": "admin:pw"},
        "logging": {"log_file": str(tmp_path / "logs" / "rportd.log")}})


def test_rportd_installs_a_hardened_unit_that_systemd_verifies(tmp_path: Path) -> None:
    units, config = tmp_path / "units", server_config(tmp_path)
    result = run_rportd(["--service", "install", "-c", str(config), "--service-user", "rportsvc",
                         "--service-unit-dir", str(units)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Service installed: {units / 'rportd.service'}" in result.stdout
    assert "hidden from the service" in result.stderr  # a config under /tmp: PrivateTmp
    text = (units / "rportd.service").read_text()
    lines = text.splitlines()
    assert "User=rportsvc" in lines and "Group=rportsvc" in lines
    assert any(line.startswith("ExecStart=") and line.endswith(f" -c {config}") for line in lines)
    for line in (*HARDENING, "CapabilityBoundingSet=", f"ReadWritePaths={tmp_path / 'data'}",
                 f"ReadWritePaths={tmp_path / 'logs'}", "WantedBy=multi-user.target"):
        assert line in lines, line
    verify(units / "rportd.service")
    removed = run_rportd(["--service", "uninstall", "-c", str(config),
                          "--service-unit-dir", str(units)], cwd=tmp_path)
    assert removed.returncode == 0 and "Service uninstalled" in removed.stdout
    assert not (units / "rportd.service").exists()


def test_a_low_port_keeps_only_the_bind_capability(tmp_path: Path) -> None:
    units = tmp_path / "units"
    result = run_rportd(["--service", "install", "-c", str(server_config(tmp_path, port=443))],
                        cwd=tmp_path, env={"RPORTD_SERVICE_UNIT_DIR": str(units)})
    assert result.returncode == 0, result.stderr
    lines = (units / "rportd.service").read_text().splitlines()
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in lines
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in lines and "User=rport" in lines
    verify(units / "rportd.service")


def test_an_invalid_config_is_not_installed(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.conf", {"server": {"auth": "a:b", "auth_file": "/x"}})
    result = run_rportd(["--service", "install", "-c", str(config), "--service-unit-dir",
                         str(tmp_path / "units")], cwd=tmp_path)
    assert result.returncode == 1 and "set only one client auth source" in result.stderr
    assert not (tmp_path / "units").exists()
    no_config = run_rportd(["--service", "install", "--service-unit-dir", str(tmp_path)],
                           cwd=tmp_path)
    assert no_config.returncode == 1
    assert no_config.stderr.strip() == ("rportd: service: --service needs -c FILE: the unit runs "
                                        "rportd with that config")


def test_the_agent_installs_a_unit_that_systemd_verifies(tmp_path: Path) -> None:
    units = tmp_path / "units"
    config = write_config(tmp_path / "rport.conf", {
        "client": {"server": "127.0.0.1:8080", "auth": "c1:pw"},
        "logging": {"log_file": str(tmp_path / "agent-logs" / "rport.log")}})
    result = subprocess.run([sys.executable, "-m", "rportd.client.cli", "--service", "install",
                             "-c", str(config), "--service-unit-dir", str(units)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = (units / "rport.service").read_text().splitlines()
    assert "User=rport" in lines and f"ReadWritePaths={tmp_path / 'agent-logs'}" in lines
    assert "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK" in lines
    assert all(line in lines for line in HARDENING)
    verify(units / "rport.service")


def test_contrib_units_are_the_generated_ones_and_verify(tmp_path: Path) -> None:
    for name, text in example_units().items():
        shipped = (ROOT / "contrib" / "systemd" / name).read_text()
        assert shipped == text, "regenerate: python -m rportd.service contrib/systemd"
        # verify needs the program to exist: point it at ours, keep everything else
        script = Path(sys.executable).parent / name.removesuffix(".service")
        local = tmp_path / name
        local.write_text(text.replace(f"/usr/local/bin/{name.removesuffix('.service')}",
                                      str(script)))
        verify(local)
        assert exposure(local) <= 1.5  # measured 1.3 ("OK") for both


def test_the_agent_refuses_to_install_a_config_it_cannot_run_on(tmp_path: Path) -> None:
    config = write_config(tmp_path / "rport.conf", {"client": {"server": "127.0.0.1:8080"}})
    result = subprocess.run([sys.executable, "-m", "rportd.client.cli", "--service", "install",
                             "-c", str(config), "--service-unit-dir", str(tmp_path / "units")],
                            capture_output=True, text=True, timeout=30,
                            env={k: v for k, v in os.environ.items() if k != "RPORT_AUTH"})
    assert result.returncode == 1 and "--auth" in result.stderr
    assert not (tmp_path / "units").exists()


def test_a_system_install_creates_missing_directories_and_leaves_existing_ones(
        tmp_path: Path) -> None:
    import pwd

    from rportd.service import Unit, _prepare_dirs

    me = pwd.getpwuid(os.getuid()).pw_name
    existing = tmp_path / "var-log"
    existing.mkdir(mode=0o755)
    unit = Unit("rportd", "test", ("/bin/true",), me,
                writable=(str(tmp_path / "data" / "rportd"), str(existing)))
    assert _prepare_dirs(unit) == []
    created = tmp_path / "data" / "rportd"
    assert created.is_dir() and created.stat().st_mode & 0o777 == 0o750
    assert existing.stat().st_mode & 0o777 == 0o755  # the operator's, untouched


@pytest.mark.parametrize("command", ["start", "stop"])
def test_start_and_stop_with_a_unit_directory_of_ones_own_run_no_systemctl(
        tmp_path: Path, command: str) -> None:
    result = run_rportd(["--service", command, "-c", str(server_config(tmp_path)),
                         "--service-unit-dir", str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"rportd: service: {command} runs systemctl on the installed unit; with a unit "
        f"directory of your own, run: systemctl {command} rportd")


def test_a_sqlite_database_outside_data_dir_is_writable_for_the_service(tmp_path: Path) -> None:
    """ProtectSystem=strict makes everything read-only but ReadWritePaths: SQLite writes its
    file, journal and WAL beside db_name, so that directory must be one of them."""
    units = tmp_path / "units"
    config = write_config(tmp_path / "rportd.conf", {
        "server": {"address": f"127.0.0.1:{free_port()}", "auth": "c1:pw",
                   "data_dir": str(tmp_path / "data")},
        "database": {"db_type": "sqlite", "db_name": str(tmp_path / "db" / "rportd.db")}})
    result = run_rportd(["--service", "install", "-c", str(config), "--service-unit-dir",
                         str(units)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = (units / "rportd.service").read_text().splitlines()
    assert f"ReadWritePaths={tmp_path / 'db'}" in lines, lines
    assert f"ReadWritePaths={tmp_path / 'data'}" in lines
    verify(units / "rportd.service")
