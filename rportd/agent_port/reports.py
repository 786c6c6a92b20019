"""What a registered agent reports on its own, after its connection request: openrport's
`updates_status` (checked, kept and shown as the client's `updates_status`), and the reports
rportd never asks for (`save_measurement`, `ip_addresses`: the client sends them only after a
`put_capabilities`, which rportd does not send)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..errors import StoreError

__all__ = ["InvalidReport", "parse_updates_status", "UNSOLICITED", "MAX_UPDATE_SUMMARIES",
           "NewestOnly"]

log = logging.getLogger("rportd.agent_port")

MAX_UPDATE_SUMMARIES = 1000
# The answer when one of them arrives anyway and wants a reply (the client wants none).
UNSOLICITED = {
    "save_measurement": "monitoring was not requested: rportd does not collect measurements",
    "ip_addresses": "external addresses were not requested: rportd does not collect them",
}
_COUNTS = ("updates_available", "security_updates_available")
_TEXTS = ("refreshed", "error", "hint")
_SUMMARY_TEXTS = ("title", "description")
_SUMMARY_FLAGS = ("reboot_required", "is_security_update")


class NewestOnly:
    """Saves an agent's reports one at a time, keeping only the newest that arrives meanwhile:
    a chatty agent cannot queue writes. A store error is logged; the next report tries again."""

    def __init__(self, save: Callable[[dict[str, Any]], Awaitable[None]],
                 spawn: Callable[[Coroutine[Any, Any, None]], None]):
        self._save = save
        self._spawn = spawn
        self._pending: dict[str, Any] | None = None

    def offer(self, report: dict[str, Any]) -> None:
        writing, self._pending = self._pending is not None, report
        if not writing:
            self._spawn(self._drain())

    async def _drain(self) -> None:
        while self._pending is not None:
            report = self._pending
            try:
                await self._save(report)
            except StoreError as exc:
                log.warning("an agent's report was not saved: %s", exc)
            if self._pending is report:
                self._pending = None


class InvalidReport(ValueError):
    """A report that is not what the client sends: dropped, and logged."""


def parse_updates_status(payload: bytes, limit: int) -> dict[str, Any]:
    """openrport's UpdatesStatus with only its own keys, each of its own type."""
    if len(payload) > limit:
        raise InvalidReport(f"larger than {limit} bytes")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise InvalidReport("not JSON") from None
    if not isinstance(data, dict):
        raise InvalidReport("not a JSON object")
    status: dict[str, Any] = {key: _text(data, key) for key in _TEXTS}
    status.update({key: _count(data, key) for key in _COUNTS})
    status["reboot_pending"] = _flag(data, "reboot_pending")
    status["update_summaries"] = _summaries(data.get("update_summaries"))
    return status


def _summaries(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_UPDATE_SUMMARIES:
        raise InvalidReport(f"update_summaries must be a list of at most "
                            f"{MAX_UPDATE_SUMMARIES} objects")
    return [_summary(item) for item in value]


def _summary(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidReport("an update summary must be an object")
    summary: dict[str, Any] = {key: _text(item, key) for key in _SUMMARY_TEXTS}
    summary.update({key: _flag(item, key) for key in _SUMMARY_FLAGS})
    return summary


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key) or ""
    if not isinstance(value, str):
        raise InvalidReport(f"{key} must be a string")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidReport(f"{key} must be a whole number 0 or more")
    return value


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InvalidReport(f"{key} must be true or false")
    return value
