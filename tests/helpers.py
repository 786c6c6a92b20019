"""Shared test helpers: free ports, config files, running the real rportd process."""

from __future__ import annotations

import base64
import http.client as httpclient
import json
import os
import selectors
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    pending = b""
    deadline = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    # Raw reads: a buffered readline() may pull several lines into its buffer, and select() then
    # sees nothing more to read although lines are waiting.
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not done(lines) and time.monotonic() < deadline:
            if selector.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                *complete, pending = (pending + chunk).split(b"\n")
                lines += [line.decode(errors="replace") + "\n" for line in complete]
    return lines


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        return str(self.json()["errors"][0]["code"])


def http(port: int, method: str, path: str, *, basic: tuple[str, str] | None = None,
         token: str | None = None, body: bytes | None = None,
         headers: dict[str, str] | None = None, tls: bool = False) -> Response:
    """One real HTTP request to 127.0.0.1:port, as curl would send it."""
    if tls:
        context = ssl._create_unverified_context()
        conn: httpclient.HTTPConnection = httpclient.HTTPSConnection(
            "127.0.0.1", port, timeout=30, context=context)
    else:
        conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = dict(headers or {})
    if basic is not None:
        sent["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return Response(response.status, response.read(), dict(response.getheaders()))
    finally:
        conn.close()
