"""aiohttp's private pieces rportd uses, all in one place, each with why.

tests/test_library_contracts.py fails loudly when an aiohttp upgrade moves or changes them.

- `websocket_mask(mask, data)`: XORs a WebSocket masking key over a bytearray in place. Every
  byte an agent sends is masked (RFC 6455 5.3), so unmasking is on the tunnels' hot path: aiohttp's
  C version takes 1.3 us per 32 KiB, a pure-Python one 60 us (1.8 CPU-seconds per GiB). It lives
  in `aiohttp._websocket.helpers` from 3.11 and in `aiohttp.http_websocket` in 3.10; without
  either, the pure-Python fallback below keeps rportd correct, only slower.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["websocket_mask", "MASK_IMPLEMENTATION"]

Masker = Callable[[bytes, bytearray], None]


def _python_mask(mask: bytes, data: bytearray) -> None:
    size = len(data)
    if size:
        key = int.from_bytes((mask * ((size >> 2) + 1))[:size], "little")
        data[:] = (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


def _find() -> tuple[Masker, str]:
    try:
        from aiohttp._websocket.helpers import websocket_mask as found  # aiohttp >= 3.11
        return found, "aiohttp._websocket.helpers"
    except ImportError:
        pass
    try:
        from aiohttp.http_websocket import _websocket_mask as legacy  # type: ignore[attr-defined]
        return legacy, "aiohttp.http_websocket"  # aiohttp 3.10
    except ImportError:
        return _python_mask, "python"


websocket_mask, MASK_IMPLEMENTATION = _find()
