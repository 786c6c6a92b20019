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


def start_agent(agent_port: int, client_id: str, remote: str,
                auth: str = "bench:bench") -> subprocess.Popen[bytes]:
    """Our `rport` agent with one tunnel, quiet."""
    return subprocess.Popen([sys.executable, "-m", "rportd.client.cli", "--auth", auth, "--id",
                             client_id, f"127.0.0.1:{agent_port}", remote],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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
