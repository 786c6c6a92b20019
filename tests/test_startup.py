"""Start-up failures after the config parses: each runs the real rportd process and proves exit 1,
one line on stderr naming the setting, no traceback, and that nothing was listening."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import free_port, write_config
from .processes import wait_for

# Like helpers._BIND_REPORTER, and more: at every bind it also tries to connect to the ports in
# STARTUP_PROBE_PORTS, so a test proves that none of them was listening when that bind ran.
_REPORTER = textwrap.dedent("""
    import os, socket, sys
    _probe = [int(p) for p in os.environ.get("STARTUP_PROBE_PORTS", "").split(",") if p]
    def _hook(event, args):
        if event != "socket.bind":
            return
        sys.stderr.write(f"AUDIT-BIND {args[1]!r}\\n")
        for port in _probe:
            probe = socket.socket()
            probe.settimeout(1)
            try:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    sys.stderr.write(f"AUDIT-LISTENING {port}\\n")
            finally:
                probe.close()
    sys.addaudithook(_hook)
    from rportd.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _sections(tmp_path: Path) -> dict[str, dict[str, object]]:
    return {
        "server": {"address": f"127.0.0.1:{free_port()}", "data_dir": str(tmp_path / "data"),
                   "allow_root": True, "auth": "client:secret-pw"},
        "api": {"address": f"127.0.0.1:{free_port()}", "auth": "admin:foobaz"},
        "logging": {"log_level": "error"},
    }


def _run(tmp_path: Path, sections: dict[str, dict[str, object]],
         probe: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    path = write_config(tmp_path / "rportd.conf", sections)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPORTD_")}
    env["STARTUP_PROBE_PORTS"] = ",".join(str(p) for p in probe)
    return subprocess.run([sys.executable, "-c", _REPORTER, "-c", str(path)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)


def _assert_refused(result: subprocess.CompletedProcess[str], *needles: str,
                    bound: bool = False) -> str:
    """Exit 1, exactly one line that is not the audit hook's, naming the setting."""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("AUDIT-")]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rportd: config error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "AUDIT-LISTENING" not in result.stderr, "a port listened before the refusal"
    if not bound:
        assert "AUDIT-BIND" not in result.stderr, "a port was bound before the refusal"
    return lines[0]


def _port(sections: dict[str, dict[str, object]], section: str) -> int:
    return int(str(sections[section]["address"]).rpartition(":")[2])


@pytest.fixture
def occupied() -> Iterator[socket.socket]:
    """A port someone else is listening on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def test_agent_port_in_use_is_one_line(tmp_path: Path, occupied: socket.socket) -> None:
    sections = _sections(tmp_path)
    sections["server"]["address"] = f"127.0.0.1:{occupied.getsockname()[1]}"
    _assert_refused(_run(tmp_path, sections, probe=(_port(sections, "api"),)),
                    "[server] address", "already in use", bound=True)


def test_api_port_in_use_leaves_the_agent_port_unopened(tmp_path: Path,
                                                        occupied: socket.socket) -> None:
    sections = _sections(tmp_path)
    sections["api"]["address"] = f"127.0.0.1:{occupied.getsockname()[1]}"
    agent_port = _port(sections, "server")
    result = _run(tmp_path, sections, probe=(agent_port,))
    _assert_refused(result, "[api] address", "already in use", bound=True)
    assert f"AUDIT-BIND ('127.0.0.1', {agent_port})" in result.stderr  # probed after its bind
    with socket.create_server(("127.0.0.1", agent_port)):
        pass  # and released at exit


@pytest.mark.parametrize("section", ["server", "api"])
def test_unresolvable_address_is_one_line(tmp_path: Path, section: str) -> None:
    sections = _sections(tmp_path)
    other = _port(sections, "api" if section == "server" else "server")
    sections[section]["address"] = "no-such-host.invalid:8080"
    _assert_refused(_run(tmp_path, sections, probe=(other,)),
                    f"[{section}] address", "cannot resolve", "no-such-host.invalid",
                    bound=section == "api")


def test_address_not_on_this_machine_is_one_line(tmp_path: Path) -> None:
    sections = _sections(tmp_path)
    sections["api"]["address"] = "192.0.2.1:8080"  # TEST-NET-1: never a local address
    _assert_refused(_run(tmp_path, sections, probe=(_port(sections, "server"),)),
                    "[api] address", "not an address of this machine", bound=True)


def test_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    # root writes anywhere; a data_dir below a regular file is unwritable for root as well
    (tmp_path / "plain-file").write_text("")
    sections = _sections(tmp_path)
    sections["server"]["data_dir"] = str(tmp_path / "plain-file" / "data")
    _assert_refused(_run(tmp_path, sections), "[server] data_dir", "plain-file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_read_only_data_dir_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o500)
    sections = _sections(tmp_path)
    _assert_refused(_run(tmp_path, sections), "[server] data_dir", "not a writable directory")


def test_corrupt_host_key_is_one_line(tmp_path: Path) -> None:
    sections = _sections(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rportd_host_key").write_text("not a key")
    _assert_refused(_run(tmp_path, sections), "[server] data_dir", "host key")


def test_unwritable_log_file_is_one_line(tmp_path: Path) -> None:
    sections = _sections(tmp_path)
    sections["logging"]["log_file"] = str(tmp_path)  # a directory
    _assert_refused(_run(tmp_path, sections), "[logging] log_file", "cannot write")


def test_missing_log_file_directory_is_one_line(tmp_path: Path) -> None:
    sections = _sections(tmp_path)
    sections["logging"]["log_file"] = str(tmp_path / "no-such-dir" / "rportd.log")
    _assert_refused(_run(tmp_path, sections), "[logging] log_file", "no-such-dir")


def test_unwritable_access_log_file_is_one_line(tmp_path: Path) -> None:
    sections = _sections(tmp_path)
    sections["api"]["access_log_file"] = str(tmp_path)  # a directory
    _assert_refused(_run(tmp_path, sections), "[api] access_log_file", "cannot write")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("which", ["cert_file", "key_file"])
def test_unreadable_tls_file_names_it(tmp_path: Path, which: str) -> None:
    cert, key = _self_signed(tmp_path)
    sections = _sections(tmp_path)
    sections["api"].update(cert_file=str(cert), key_file=str(key))
    sections["api"][which] = str(tmp_path / "missing.pem")
    _assert_refused(_run(tmp_path, sections), f"[api] {which}", "cannot read", "missing.pem")


def test_invalid_tls_pair_is_one_line(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    sections = _sections(tmp_path)
    sections["api"].update(cert_file=str(cert), key_file=str(key))
    line = _assert_refused(_run(tmp_path, sections), "[api] cert_file", "TLS")
    assert re.search(r"cannot load", line), line


def test_port_zero_listens_on_the_socket_it_bound(tmp_path: Path) -> None:
    """The servers listen on the sockets checked at start-up, not on a second bind."""
    sections = _sections(tmp_path)
    sections["api"]["address"] = "127.0.0.1:0"
    log = tmp_path / "rportd.log"
    sections["logging"].update(log_level="info", log_file=str(log))
    path = write_config(tmp_path / "rportd.conf", sections)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPORTD_")}
    proc = subprocess.Popen([sys.executable, "-m", "rportd.cli", "-c", str(path)], cwd=tmp_path,
                            env=env)
    try:
        text = wait_for(lambda: log.exists() and log.read_text().count("listening on") >= 2
                        and log.read_text(), what="two 'listening on' lines")
        ports = re.findall(r"listening on \S+:(\d+)", text)
        api = [int(p) for p in ports if int(p) != _port(sections, "server")]
        assert api and api[0] != 0, text
        with socket.create_connection(("127.0.0.1", api[0]), timeout=5):
            pass
    finally:
        proc.terminate()
        proc.wait(10)
