"""Shared test helpers: free ports, config files, running the real rportd process."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

# Runs the real CLI with an audit hook that reports every socket bind, so a test can prove that a
# refused start opened no port.
_BIND_REPORTER = textwrap.dedent("""
    import sys
    def _hook(event, args):
        if event == "socket.bind":
            sys.stderr.write(f"AUDIT-BIND {args[1]!r}\\n")
    sys.addaudithook(_hook)
    from rportd.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_rportd(args: list[str], cwd: Path, env: dict[str, str] | None = None,
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RPORTD_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", _BIND_REPORTER, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def read_lines(proc: subprocess.Popen[str], done: Callable[[list[str]], bool],
               timeout: float = 20) -> list[str]:
    """Read a child's stderr lines until `done(lines)` or the deadline; never blocks past it."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while not done(lines) and time.monotonic() < deadline:
            if selector.select(max(0.0, deadline - time.monotonic())):
                line = proc.stderr.readline()
                if not line:
                    break
                lines.append(line)
    return lines
