"""Our agent's CommandRunner with real processes: a job it cannot decode is refused with the
client's text, as the Go client's JSON decoding refuses it, and never wedges the runner."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rportd.client.commands import CommandError, CommandPolicy, CommandRunner


def _job(**fields: Any) -> bytes:
    return json.dumps({"jid": "j1", "command": "/usr/bin/printf ok", **fields}).encode()


async def _result(results: list[bytes]) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while not results:
            await asyncio.sleep(0.02)
    report = json.loads(results[-1])
    assert isinstance(report, dict)
    return report


@pytest.mark.parametrize("timeout", ["ten", 10 ** 400, 2.5, True, [1]])
async def test_a_timeout_that_is_not_a_whole_number_is_refused(timeout: Any) -> None:
    results: list[bytes] = []
    runner = CommandRunner(CommandPolicy(), results.append)
    with pytest.raises(CommandError, match="^failed to decode requested job: timeout_sec"):
        await runner.start(_job(timeout_sec=timeout))
    await runner.start(_job(timeout_sec=5))  # the runner is free: nothing was started
    assert (await _result(results))["result"]["stdout"] == "ok"
