"""Does a tunnel keep its throughput while the API is under load?

    python bench/tunnel_under_api_load.py [--size-mib 1024] [--seconds-of-load auto]

rportd + our agent + one tunnel; the tunnel carries --size-mib (target -> user) once alone and
once while wrk (apt-get install wrk) hammers GET /api/v1/clients with a bearer token over 50
connections. Prints both throughputs, their ratio, and what the API served meanwhile.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, start_agent, start_rportd, stop, wait_port, workdir  # noqa: E402
from tunnel_throughput import CHUNK, Target, measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate", type=int, default=300,
                        help="[api] rate_while_tunnels_busy for this run (0 = no limit)")
    args = parser.parse_args()
    size = args.size_mib * CHUNK
    tmp = workdir()
    agent_port, api_port = free_port(), free_port()
    rportd = start_rportd(f"""
[server]
address = "127.0.0.1:{agent_port}"
data_dir = "{tmp}/data"
auth = "bench:bench"
allow_root = true
[api]
address = "127.0.0.1:{api_port}"
auth = "admin:bench-admin"
rate_while_tunnels_busy = {args.rate}
[logging]
log_level = "error"
""", tmp)
    target = Target("down", size)
    lport = free_port()
    agent = start_agent(agent_port, "t", f"127.0.0.1:{lport}:127.0.0.1:{target.port}")
    try:
        wait_port(api_port)
        wait_port(lport)
        basic = "Basic " + base64.b64encode(b"admin:bench-admin").decode()
        login = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/v1/login",
                                       headers={"Authorization": basic})
        token = json.load(urllib.request.urlopen(login))["data"]["token"]
        measure(lport, "down", size // 8)  # warm-up: first stream, first allocations
        alone = size / measure(lport, "down", size) / 1e6
        wrk_out: list[str] = []
        load = threading.Thread(target=lambda: wrk_out.append(subprocess.run(
            ["wrk", "-t1", "-c50", "-d30s", "--latency", "-H", f"Authorization: Bearer {token}",
             f"http://127.0.0.1:{api_port}/api/v1/clients"],
            capture_output=True, text=True).stdout))
        load.start()
        import time

        time.sleep(2)  # let the load reach steady state
        loaded = size / measure(lport, "down", size) / 1e6
        load.join()
        rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk_out[0])
        p99 = re.search(r"\s99%\s+(\S+)", wrk_out[0])
        print(f"rate_while_tunnels_busy = {args.rate}")
        print(f"tunnel {args.size_mib} MiB target -> user: alone {alone:.1f} MB/s, with the API "
              f"under load {loaded:.1f} MB/s ({loaded / alone * 100:.0f}%)")
        print(f"API meanwhile (30 s of wrk -c50): {float(rps.group(1)) if rps else 0:.0f} req/s, "
              f"p99 {p99.group(1) if p99 else '?'}")
    finally:
        stop(agent)
        stop(rportd)
        target.sock.close()


if __name__ == "__main__":
    main()
