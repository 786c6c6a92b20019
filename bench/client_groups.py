"""How long membership takes for a tenant's listing: 500 groups (the limit) over 1,000 clients,
for typical and hostile pattern shapes. Prints one line per shape.

    .venv/bin/python bench/client_groups.py
"""

from __future__ import annotations

import time

from rportd.client_groups import PARAM_NAMES, ClientGroup, Member
from rportd.client_groups.matching import fold, members_of

CLIENTS, GROUPS, PATTERNS = 1000, 500, 32


def member(i: int) -> Member:
    values = {name: (fold(f"{name}-{i % 37}"),) for name in PARAM_NAMES}
    values.update(client_id=(f"host-{i}",), name=(f"name-{i}-" + "x" * 50,), ipv6=(),
                  tag=("qa", f"rack-{i % 10}", "eu"), ipv4=(f"10.0.{i % 250}.{i % 200}",))
    return Member(f"host-{i}", True, values)


def shapes() -> dict[str, list[ClientGroup]]:
    def groups(params: object) -> list[ClientGroup]:
        return [ClientGroup(f"g{k}", "", params(k) if callable(params) else params)  # type: ignore[arg-type]
                for k in range(GROUPS)]

    return {
        "client_id=['*']": groups({"client_id": ("*",)}),
        "tag + os_kernel": groups({"tag": ("rack-3", "qa*"), "os_kernel": ("os_kernel-*",)}),
        "32 x '*k-j*' on name, distinct": groups(
            lambda k: {"name": tuple(f"*{k}-{j}*" for j in range(PATTERNS))}),
        "32 x 'n*k-j*a*' on name, distinct": groups(
            lambda k: {"name": tuple(f"n*{k}-{j}*a*" for j in range(PATTERNS))}),
        "32 x 13 params, distinct": groups(
            lambda k: {n: tuple(f"*{k}-{j}*" + "y" * 80 for j in range(PATTERNS))
                       for n in PARAM_NAMES}),
    }


def main() -> None:
    clients = [member(i) for i in range(CLIENTS)]
    for label, groups in shapes().items():
        started = time.perf_counter()
        members_of(groups, clients)
        print(f"{label:36s} {GROUPS} groups x {CLIENTS} clients: "
              f"{time.perf_counter() - started:6.2f} s")


if __name__ == "__main__":
    main()
