"""A small, real HTTP CONNECT proxy on 127.0.0.1 for tests: it dials the target, answers 200 and
relays bytes both ways, counting them; with `credentials` it answers 407 to anyone else."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from dataclasses import dataclass, field


@dataclass
class Tunnel:
    target: str
    headers: dict[str, str]
    up: int = 0  # bytes relayed client -> target
    down: int = 0  # bytes relayed target -> client


@dataclass
class ConnectProxy:
    credentials: str = ""  # "user:password" to require Proxy-Authorization
    tunnels: list[Tunnel] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    port: int = 0

    def start(self) -> ConnectProxy:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise AssertionError("the CONNECT proxy did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()  # its self-pipe sockets too

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip(): v.strip() for k, _, v in (line.partition(":")
                                                           for line in lines[1:] if line)}
            expected = "Basic " + base64.b64encode(self.credentials.encode()).decode()
            if method != "CONNECT" or (self.credentials and
                                       headers.get("Proxy-Authorization") != expected):
                self.refused.append(target)
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"test\"\r\n\r\n")
                await writer.drain()
                return
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            tunnel = Tunnel(target, headers)
            self.tunnels.append(tunnel)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(self._pipe(reader, up_writer, tunnel, "up"),
                                 self._pipe(up_reader, writer, tunnel, "down"))
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tunnel: Tunnel,
                    way: str) -> None:
        try:
            while data := await reader.read(65536):
                setattr(tunnel, way, getattr(tunnel, way) + len(data))
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()
