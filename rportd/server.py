"""The composition root: checks the database, wires registry, agent listener and API, runs them."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

from .bootstrap import create_first_credentials
from .config import Config
from .errors import ConfigError
from .store import Store, open_store
from .store.migrate import migrate_up, status
from .tenancy import check_tenancy_schema

__all__ = ["serve", "prepare_database"]

log = logging.getLogger("rportd")


async def prepare_database(config: Config, store: Store) -> None:
    """Bring rportd's own schema up to date (automatically only where rportd owns the file) and
    check the tenancy tables. Raises ConfigError with the fix before any port is opened."""
    if config.embedded or not config.database.configured:
        await migrate_up(store)
        await check_tenancy_schema(config, store)
        return
    await check_tenancy_schema(config, store)  # the more specific message first
    pending = [m for m, applied in await status(store) if not applied]
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise ConfigError("[database]", f"schema migrations pending ({names}); run "
                                        "`rportd migrate -c FILE` first")


async def serve(config: Config, on_ready: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run rportd until SIGINT/SIGTERM."""
    config.server.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(config.own_database)
    try:
        await prepare_database(config, store)
        if config.embedded:
            await create_first_credentials(config, store)
        from .app import Runtime  # after the checks: nothing listens before they pass

        async with Runtime(config, store) as runtime:
            await runtime.start()
            _tune_gc()
            if on_ready:
                await on_ready()
            await _wait_for_signal()
            log.info("shutting down")
            del runtime
    finally:
        await store.close()


def _tune_gc() -> None:
    """Thousands of agent connections mean millions of long-lived objects; with CPython's
    default thresholds full collections over them stall the loop for hundreds of ms. Objects
    alive after start-up are frozen out of collection, and young collections run less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
