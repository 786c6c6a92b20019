"""Shared bench helpers: free ports, starting rportd and agents, waiting on ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open within {timeout}s")


def start_rportd(config: str, workdir: Path, log_name: str = "rportd.log") -> subprocess.Popen[bytes]:
    path = workdir / "rportd.conf"
    path.write_text(config)
    log = (workdir / log_name).open("wb")
    return subprocess.Popen([sys.executable, "-m", "rportd.cli", "-c", str(path)],
                            stdout=log, stderr=log)


def start_agent(agent_port: int, client_id: str, remote: str, auth: str = "bench:bench",
                wire_pattern: str = "asyncssh") -> subprocess.Popen[bytes]:
    """Our `rport` agent with one tunnel, quiet; `wire_pattern="go"` makes its flow control
    look like the Go client's on the wire."""
    return subprocess.Popen([sys.executable, "-m", "rportd.client.cli", "--auth", auth, "--id",
                             client_id, "--allow-root", "--wire-pattern", wire_pattern,
                             f"127.0.0.1:{agent_port}", remote],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its live descendants."""
    total = 0.0
    for one in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="rportd-bench-"))


def env_without_rportd() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RPORTD_")}
