"""Runtime: owns every long-lived part of a running rportd and starts/stops them in order."""

from __future__ import annotations

import logging
from types import TracebackType

from aiohttp import web

from .config import Config
from .store import Store

__all__ = ["Runtime"]

log = logging.getLogger("rportd")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Runtime:
    """Registry, agent listener and API of one rportd process."""

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self._runners: list[web.AppRunner] = []

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _listen(self, app: web.Application, address: str, **kwargs: object) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        host, port = _split(address)
        site = web.TCPSite(runner, host, port, **kwargs)  # type: ignore[arg-type]
        await site.start()
        log.info("listening on %s", address)

    async def start(self) -> None:
        if self.config.api.address:
            from .api.app import build_api

            await self._listen(build_api(self), self.config.api.address)

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
