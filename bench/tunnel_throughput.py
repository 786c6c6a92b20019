"""Tunnel throughput and server CPU per GiB, one stream: rportd + our agent in each wire pattern,
compared in the same run with OpenSSH `ssh -R` using the same cipher when sshd is installed
(apt-get install openssh-server).

    python bench/tunnel_throughput.py [--size-mib 1024] [--cipher aes128-gcm@openssh.com]
                                      [--patterns asyncssh,go] [--no-openssh]

Wire patterns of the agent: "asyncssh" is our agent's own flow control (window adjusts batched);
"go" behaves like the real Go client (2 MiB window, 32 KiB packets, a WINDOW_ADJUST after every
data packet it consumes: about 32,000 small packets back per GiB). For each pattern and
direction it prints MB/s (10^6 bytes per second) and the server's CPU-seconds per GiB (utime +
stime of rportd, or of sshd and its session processes, read from /proc before and after), and
the ratios to OpenSSH. Every figure comes from this run.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    cpu_seconds,
    free_port,
    start_agent,
    start_rportd,
    stop,
    wait_port,
    workdir,
)

from rportd.client.connection import CIPHERS  # noqa: E402

CIPHER = CIPHERS[0]  # what our agent (as the Go client) negotiates with rportd
CHUNK = 1 << 20
GIB = 1 << 30
DIRECTIONS = (("down", "target -> agent -> server -> user"),
              ("up", "user -> server -> agent -> target"))


class Figures(NamedTuple):
    mb_per_s: float
    cpu_s_per_gib: float


class Target:
    """Behind the agent: 'down' streams `size` bytes to each connection, 'up' swallows them."""

    def __init__(self, mode: str, size: int):
        self.mode, self.size = mode, size
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        block = b"\x5a" * CHUNK
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn, block), daemon=True).start()

    def _one(self, conn: socket.socket, block: bytes) -> None:
        try:
            with conn:
                if self.mode == "down":
                    left = self.size
                    while left > 0:
                        conn.sendall(block[: min(CHUNK, left)])
                        left -= CHUNK
                    conn.recv(1)  # wait for the reader to finish and close
                else:
                    while conn.recv(CHUNK):
                        pass
        except OSError:
            pass  # the readiness probe hangs up early


def measure(port: int, mode: str, size: int) -> float:
    """Seconds to carry `size` bytes through 127.0.0.1:port in one direction."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        if mode == "down":
            got = 0
            buf = bytearray(CHUNK)
            while got < size:
                n = conn.recv_into(buf)
                if not n:
                    raise SystemExit(f"stream ended after {got} bytes")
                got += n
        else:
            block = b"\xa5" * CHUNK
            for _ in range(size // CHUNK):
                conn.sendall(block)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)
        return time.perf_counter() - start


def measure_server(port: int, mode: str, size: int, server_pid: int) -> Figures:
    """MB/s through 127.0.0.1:port, and the server's CPU-seconds per GiB meanwhile."""
    before = cpu_seconds(server_pid)
    seconds = measure(port, mode, size)
    used = cpu_seconds(server_pid) - before
    return Figures(size / seconds / 1e6, used / (size / GIB))


def run_rportd(size: int, tmp: Path, patterns: list[str]) -> dict[tuple[str, str], Figures]:
    agent_port = free_port()
    rportd = start_rportd(f"""
[server]
address = "127.0.0.1:{agent_port}"
data_dir = "{tmp}/data"
auth = "bench:bench"
allow_root = true
[logging]
log_level = "error"
""", tmp)
    results = {}
    try:
        wait_port(agent_port)
        for pattern in patterns:
            for mode, _ in DIRECTIONS:
                target = Target(mode, size)
                lport = free_port()
                agent = start_agent(agent_port, f"{pattern}-{mode}",
                                    f"127.0.0.1:{lport}:127.0.0.1:{target.port}",
                                    wire_pattern=pattern)
                try:
                    wait_port(lport)
                    results[pattern, mode] = measure_server(lport, mode, size, rportd.pid)
                finally:
                    stop(agent)
                    target.sock.close()
    finally:
        stop(rportd)
    return results


def run_openssh(size: int, cipher: str, tmp: Path) -> dict[str, Figures] | None:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        print("openssh: sshd not installed (apt-get install openssh-server); skipped")
        return None
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    except OSError as exc:
        print(f"openssh: cannot create /run/sshd ({exc.strerror}); skipped")
        return None
    port = free_port()
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(tmp / "host")],
                   check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "user")],
                   check=True)
    (tmp / "authorized_keys").write_text((tmp / "user.pub").read_text())
    (tmp / "authorized_keys").chmod(0o600)
    server = subprocess.Popen([
        sshd, "-D", "-e", "-p", str(port), "-o", "ListenAddress=127.0.0.1",
        "-o", f"HostKey={tmp}/host", "-o", f"AuthorizedKeysFile={tmp}/authorized_keys",
        "-o", "StrictModes=no", "-o", "PasswordAuthentication=no", "-o", "UsePAM=no",
        "-o", f"PidFile={tmp}/sshd.pid", "-o", "PermitRootLogin=yes"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "sshd.log").open("wb"))
    results = {}
    try:
        time.sleep(0.2)
        if server.poll() is not None:
            raise SystemExit(f"sshd exited: {(tmp / 'sshd.log').read_text().strip()}")
        wait_port(port)
        for mode, _ in DIRECTIONS:
            target = Target(mode, size)
            rport = free_port()
            client = subprocess.Popen([
                "ssh", "-N", "-p", str(port), "-i", str(tmp / "user"), "-c", cipher,
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
                "-R", f"127.0.0.1:{rport}:127.0.0.1:{target.port}", "root@127.0.0.1"])
            try:
                wait_port(rport)
                # sshd's per-connection processes are its children: counted with it
                results[mode] = measure_server(rport, mode, size, server.pid)
            finally:
                stop(client)
                target.sock.close()
    finally:
        stop(server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--cipher", default="aes128-gcm@openssh.com")
    parser.add_argument("--patterns", default="asyncssh,go",
                        help="agent wire patterns to run, comma-separated (asyncssh, go)")
    parser.add_argument("--no-openssh", action="store_true", help="skip the OpenSSH comparison")
    args = parser.parse_args()
    patterns = [p for p in args.patterns.split(",") if p]
    size = args.size_mib * CHUNK
    tmp = workdir()
    print(f"tunnel throughput, one stream, {args.size_mib} MiB each way; rportd's agent cipher "
          f"{CIPHER}, openssh -c {args.cipher}")
    ours = run_rportd(size, tmp, patterns)
    openssh = None if args.no_openssh else run_openssh(size, args.cipher, tmp)
    for mode, label in DIRECTIONS:
        print(f"  {mode} ({label}):")
        for pattern in patterns:
            print("    " + _line(f"rportd, {pattern} agent", ours[pattern, mode],
                              openssh[mode] if openssh else None))
        if openssh:
            print("    " + _line("openssh -R", openssh[mode], None))


def _line(label: str, got: Figures, reference: Figures | None) -> str:
    line = f"{label:22} {got.mb_per_s:8.1f} MB/s  {got.cpu_s_per_gib:6.2f} server CPU-s/GiB"
    if reference:
        line += (f"  | vs openssh: {got.mb_per_s / reference.mb_per_s:.2f}x MB/s, "
                 f"{got.cpu_s_per_gib / max(reference.cpu_s_per_gib, 1e-9):.2f}x CPU/GiB")
    return line


if __name__ == "__main__":
    main()
