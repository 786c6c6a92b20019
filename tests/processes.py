"""Real rportd and rport processes for tests, with logs in files and bounded waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .helpers import free_port, write_config


def wait_for(condition: Callable[[], Any], timeout: float = 15.0,
             what: str | Callable[[], str] = "condition") -> Any:
    """Poll until condition() is truthy; fail with `what` (text or a callable giving it, so
    logs are read at failure time) after the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for "
                         f"{what() if callable(what) else what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RPORTD_")}


class Rportd:
    """A real rportd process on free 127.0.0.1 ports."""

    def __init__(self, tmp: Path, sections: dict[str, dict[str, object]], api: bool = True):
        self.tmp = tmp
        self.agent_port = free_port()
        self.api_port = free_port() if api else 0
        server = {"address": f"127.0.0.1:{self.agent_port}", "data_dir": str(tmp / "data"),
                  "allow_root": True}
        server.update(sections.get("server", {}))
        merged = {**sections, "server": server}
        merged.setdefault("logging", {"log_level": "info"})
        if api:
            merged["api"] = {"address": f"127.0.0.1:{self.api_port}", **sections.get("api", {})}
        self.config = write_config(tmp / "rportd.conf", merged)
        self.log = tmp / "rportd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.preexec: Callable[[], None] | None = None  # e.g. resource limits for the child

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.agent_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> Rportd:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "rportd.cli", "-c",
                                          str(self.config)], stdout=log, stderr=log, env=_env(),
                                         preexec_fn=self.preexec)
        wait_for(lambda: port_open(self.agent_port) or self._died(), what="rportd agent port")
        if self.api_port:
            wait_for(lambda: port_open(self.api_port) or self._died(), what="rportd API port")
        return self

    def _died(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"rportd exited {self.proc.returncode}:\n{self.log_text()}")
        return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Agent:
    """A real `rport` agent process."""

    def __init__(self, tmp: Path, server: str, auth: str, *args: str, name: str = "agent",
                 remotes: tuple[str, ...] = ()):
        self.log = tmp / f"{name}.log"
        self.args = ["--auth", auth, "--keepalive", "2s", "-v", "--allow-root", *args, server,
                     *remotes]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Agent:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "rportd.client.cli", *self.args],
                                         stdout=log, stderr=log, env=_env())
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, needle: str, count: int = 1, timeout: float = 15.0) -> None:
        wait_for(lambda: self.log_text().count(needle) >= count, timeout,
                 what=lambda: f"{needle!r} x{count} in agent log:\n{self.log_text()}")

    def wait_connected(self, count: int = 1) -> None:
        self.wait_log("client: Connected", count)

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class RportdCommand:
    """A real rportd process started from a command line (rport's flags, no config file)."""

    def __init__(self, tmp: Path, argv: list[str], wait_ports: tuple[int, ...],
                 env: dict[str, str] | None = None, name: str = "rportd-cmd"):
        self.argv, self.wait_ports, self.env = argv, wait_ports, {**_env(), **(env or {})}
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RportdCommand:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "rportd.cli", *self.argv],
                                         stdout=log, stderr=log, env=self.env)
        for port in self.wait_ports:
            wait_for(lambda port=port: port_open(port) or self._died(), what=f"rportd port {port}")
        return self

    def _died(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"rportd exited {self.proc.returncode}:\n{self.log_text()}")
        return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class AgentCommand(Agent):
    """A real `rport` started with exactly the given command line."""

    def __init__(self, tmp: Path, argv: list[str], name: str = "agent-cmd"):
        super().__init__(tmp, "", "", name=name)
        self.args = argv
