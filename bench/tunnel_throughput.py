"""Tunnel throughput, one stream: rportd + our agent, compared in the same run with OpenSSH
`ssh -R` using the same cipher when sshd is installed (apt-get install openssh-server).

    python bench/tunnel_throughput.py [--size-mib 1024] [--cipher aes128-gcm@openssh.com]

Prints MB/s (10^6 bytes per second) for each direction and the ratio to OpenSSH.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, start_agent, start_rportd, stop, wait_port, workdir  # noqa: E402

CHUNK = 1 << 20


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


def run_rportd(size: int, cipher: str, tmp: Path) -> dict[str, float]:
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
        for mode in ("down", "up"):
            target = Target(mode, size)
            lport = free_port()
            agent = start_agent(agent_port, mode, f"127.0.0.1:{lport}:127.0.0.1:{target.port}")
            try:
                wait_port(lport)
                results[mode] = size / measure(lport, mode, size) / 1e6
            finally:
                stop(agent)
                target.sock.close()
    finally:
        stop(rportd)
    return results


def run_openssh(size: int, cipher: str, tmp: Path) -> dict[str, float] | None:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        print("openssh: sshd not installed (apt-get install openssh-server); skipped")
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
        wait_port(port)
        for mode in ("down", "up"):
            target = Target(mode, size)
            rport = free_port()
            client = subprocess.Popen([
                "ssh", "-N", "-p", str(port), "-i", str(tmp / "user"), "-c", cipher,
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
                "-R", f"127.0.0.1:{rport}:127.0.0.1:{target.port}", "root@127.0.0.1"])
            try:
                wait_port(rport)
                results[mode] = size / measure(rport, mode, size) / 1e6
            finally:
                stop(client)
                target.sock.close()
    finally:
        stop(server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--cipher", default="aes128-gcm@openssh.com")
    args = parser.parse_args()
    size = args.size_mib * CHUNK
    tmp = workdir()
    print(f"tunnel throughput, one stream, {args.size_mib} MiB each way, cipher {args.cipher}")
    ours = run_rportd(size, args.cipher, tmp)
    openssh = run_openssh(size, args.cipher, tmp)
    for mode, label in (("down", "target -> agent -> rportd -> user"),
                        ("up", "user -> rportd -> agent -> target")):
        line = f"  {mode:4} ({label}): rportd {ours[mode]:7.1f} MB/s"
        if openssh:
            line += (f" | openssh -R {openssh[mode]:7.1f} MB/s"
                     f" | ratio {ours[mode] / openssh[mode]:.2f}")
        line += f" | vs Go rport 216 MB/s: {ours[mode] / 216:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
