"""A JSON file that is re-read (off the event loop) whenever its mtime changes; a broken edit
keeps the last good contents in service. Used by the `auth_file` sources.

The mtime is looked at most once a second: the check itself is a thread hop, and it sits on
every API request and agent login. An edit takes effect within a second."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..errors import ConfigError

__all__ = ["WatchedJsonFile"]

log = logging.getLogger("rportd.auth")
T = TypeVar("T")
_RECHECK = 1.0


class WatchedJsonFile(Generic[T]):
    def __init__(self, path: str, parse: Callable[[Any], T], setting: str, empty: T):
        self._path = Path(path)
        self._parse = parse
        self._setting = setting
        self._mtime = -1.0
        self._checked = float("-inf")  # loop time of the last stat
        self._value = empty
        self._empty = empty

    def _read(self) -> tuple[float, T]:
        mtime = os.stat(self._path).st_mtime
        if mtime == self._mtime:
            return mtime, self._value
        return mtime, self._parse(json.loads(self._path.read_text(encoding="utf-8")))

    async def load(self) -> T:
        """The current contents; ConfigError naming the setting when the file is unusable."""
        try:
            self._mtime, self._value = await asyncio.to_thread(self._read)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(self._setting, f"cannot read {str(self._path)!r}: {exc}") from None
        return self._value

    async def current(self) -> T:
        """Like load, but a broken edit keeps the last good contents (and is logged). A deleted
        file is empty: removing an auth file must stop its credentials, not freeze them."""
        now = asyncio.get_running_loop().time()
        if now - self._checked < _RECHECK:
            return self._value
        self._checked = now
        if not await asyncio.to_thread(self._path.exists):
            if self._mtime != -1.0:
                log.error("%s %r was removed; no credentials from it are valid until it is back",
                          self._setting, str(self._path))
            self._mtime, self._value = -1.0, self._empty
            return self._value
        try:
            return await self.load()
        except ConfigError as exc:
            log.error("%s; still using its previous contents", exc)
            return self._value
