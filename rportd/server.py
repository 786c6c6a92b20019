"""The composition root: checks the database, then builds and runs the registry, the agent port
and the API. The only module that imports both the API and the agent port."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

from aiohttp import web

from .agent_port.listener import AgentPort
from .agent_port.session import AgentServices
from .api.app import build_api
from .api.auth import Authenticator
from .api.context import ApiContext
from .api.http_server import ApiRunner
from .api.tenants import TenantServices
from .auth.clients import FileClientAuth, client_auth_from_config
from .auth.personal_tokens import PersonalTokens
from .auth.tokens import TokenIssuer, load_or_create_secret
from .auth.users import FileUsers, users_from_config
from .bootstrap import create_first_credentials
from .client_groups import ClientGroups
from .config import Config
from .errors import ConfigError, RportdError, StoreError
from .jobs import JobService
from .logs import COMBINED_LOG_FORMAT, access_logger, tls_context
from .preflight import Listeners, bind_listeners, check_files
from .quotas import QuotaService
from .registry import Registry
from .store import Store, open_store
from .store.migrate import migrate_up, status
from .tenancy import check_tenancy_schema
from .tenants import TenantTables
from .tunnel_spec import PortPool
from .wire.hostkey import derive_key_from_seed, fingerprint, load_or_create_host_key

__all__ = ["serve", "prepare_database", "Runtime"]

log = logging.getLogger("rportd")
REVOCATION_PRUNE_INTERVAL = 600.0


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
    """Run rportd until SIGINT/SIGTERM. Every file, the database and every bind are checked
    before anything listens; each failure is a ConfigError or StoreError naming the setting."""
    check_files(config)
    store = await open_store(config.own_database)
    try:
        await prepare_database(config, store)
        async with Runtime(config, store) as runtime:
            await runtime.load()
            runtime.bind()
            if config.embedded:
                await create_first_credentials(config, store)
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


class Runtime:
    """Registry, agent listener and API of one rportd process."""

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self.listeners = Listeners([])
        self._api: web.Application | None = None
        self._runners: list[web.AppRunner] = []
        self._sites: list[web.BaseSite] = []
        self._tasks: set[asyncio.Task[None]] = set()
        server = config.server
        self.registry = Registry(store, server.keep_lost_clients)
        self.groups = ClientGroups(store, self.registry)
        self.host_key = (derive_key_from_seed(server.key_seed) if server.key_seed
                         else load_or_create_host_key(server.data_dir))
        self.fingerprint = fingerprint(self.host_key)
        # Things that can fail on a bad setting are loaded before anything listens.
        api = config.api
        self._api_tls = tls_context(api.cert_file, api.key_file) if api.address else None
        self._api_access_log = (access_logger(api.access_log_file)
                                if api.address and api.access_log_file else None)
        self.users = users_from_config(config, store)
        self._jwt_secret = (load_or_create_secret(api.jwt_secret, server.data_dir)
                            if api.address else b"")
        self.tenants = TenantTables(config, store)
        self.quotas = QuotaService(config, store, self.tenants)
        self.jobs = JobService(store, server, self.quotas)
        self.agents = AgentServices(config, self.registry, client_auth_from_config(config, store),
                                    PortPool(server.used_ports, server.excluded_ports),
                                    jobs=self.jobs, quotas=self.quotas)
        self.agent_port = AgentPort(self.agents, self.host_key)

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _listen(self, sockets: list[socket.socket], *,
                      ssl_context: ssl.SSLContext | None = None,
                      runner: web.AppRunner) -> None:
        """Serve on sockets bound at start-up (preflight.bind_listeners)."""
        await runner.setup()
        self._runners.append(runner)
        for sock in sockets:
            site = web.SockSite(runner, sock, ssl_context=ssl_context)
            await site.start()
            self._sites.append(site)
            log.info("listening on %s", site.name)

    async def load(self) -> None:
        """Everything that can refuse the start and is not a bind: auth files, the registry,
        the API's tokens."""
        await self._load_sources()
        if self.config.api.address:
            self._api = await self._build_api()

    def bind(self) -> None:
        """Bind both addresses (a ConfigError naming the one that fails); nothing listens yet."""
        self.listeners = bind_listeners(self.config)

    async def start(self) -> None:
        """Listen on the sockets bound by `bind`: the agent port, then the API."""
        self.agent_port.start(self.listeners.agent)
        log.info("agents: listening on %s", self.config.server.address)
        log.info("host key fingerprint %s", self.fingerprint)
        if self._api is not None:
            runner = ApiRunner(self._api, read_timeout=self.config.api.read_timeout,
                               access_log=self._api_access_log,
                               access_log_format=COMBINED_LOG_FORMAT)
            await self._listen(self.listeners.api, ssl_context=self._api_tls, runner=runner)
        self._spawn(self._expire_lost_clients())

    async def _load_sources(self) -> None:
        # auth files must be readable before anything listens (a ConfigError exits 1)
        for source in (self.agents.client_auth, self.users):
            if isinstance(source, FileClientAuth | FileUsers):
                await source.load()
        await self.registry.load()
        await self.jobs.recover()
        if self.agents.client_auth is None:
            log.warning("no client auth source is set ([server] auth, auth_file or auth_table): "
                        "no agent can log in")

    async def _build_api(self) -> web.Application:
        users = self.users
        if users is None:
            log.warning("no API user auth source is set ([api] auth, auth_file or "
                        "auth_user_table): every API request will be refused")
        tokens = TokenIssuer(self._jwt_secret, self.store)
        await tokens.load_revocations()
        self._spawn(self._prune_revocations(tokens))
        authenticator = Authenticator(users, tokens, self.config.server.multi_tenancy,
                                      PersonalTokens(self.store))
        return build_api(self._api_context(), authenticator, self.store,
                         TenantServices(self.tenants, self.quotas))

    def _api_context(self) -> ApiContext:
        return ApiContext(self.config, self.registry, self.agents.client_auth, self.agents.ports,
                          self.agents.traffic, self.fingerprint, self.connect_url, self.groups,
                          self.jobs)

    @property
    def connect_url(self) -> str:
        return self.config.server.url or f"http://{self.config.server.address}"

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire_lost_clients(self) -> None:
        interval = min(60.0, max(1.0, self.config.server.keep_lost_clients / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.registry.expire()
            except StoreError as exc:  # a database outage must not end expiry for good
                log.warning("expiring lost clients failed: %s; retrying in %.0fs", exc, interval)

    async def _prune_revocations(self, tokens: TokenIssuer) -> None:
        """Revoked tokens that expired anyway are forgotten, in memory and in the table."""
        while True:
            await asyncio.sleep(REVOCATION_PRUNE_INTERVAL)
            try:
                await tokens.prune()
            except RportdError as exc:
                log.error("pruning expired token revocations failed: %s", exc)

    async def stop(self) -> None:
        """Stop accepting, hang up on agents (recorded as disconnected), then close listeners."""
        self.agent_port.stop_accepting()
        for task in list(self._tasks):
            task.cancel()
        for site in self._sites:
            await site.stop()
        self._sites.clear()
        await self.jobs.stop()  # running jobs end unknown, not "client disconnected"
        await self.registry.disconnect_all()  # persisted before the store closes
        await self.agent_port.stop()
        await self.agents.wait_tasks()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        self.listeners.close()
