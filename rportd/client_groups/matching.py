"""rport's group matching: which clients a group's parameter patterns select.

Case-insensitive as Go's strings.ToLower, `*` the only wildcard, every other character literal,
every parameter given must match (one of a client's values, one of the patterns), and a group
without params selects nobody. Pure functions over plain data: they run in a thread for big
tenants.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ..registry import ClientRecord

__all__ = ["PARAM_NAMES", "ClientGroup", "Member", "Index", "fold", "pattern_matches",
           "belongs", "members_of", "in_any"]

# rport's client properties a group can select on, and where the registry keeps each.
PARAM_NAMES = ("client_id", "name", "os", "os_arch", "os_family", "os_kernel", "hostname",
               "ipv4", "ipv6", "tag", "version", "address", "client_auth_id")
_MULTI_VALUED = {"ipv4": "ipv4", "ipv6": "ipv6", "tag": "tags"}
_RECENT = 32  # parameter answers an index keeps (each a set of up to all clients)


def fold(text: str) -> str:
    """Go's strings.ToLower: rune by rune, so no final-sigma context and U+0130 becomes 'i'
    (Python's str.lower() differs on exactly those)."""
    if text.isascii():
        return text.lower()
    return "".join("i" if ch == "\u0130" else ch.lower() for ch in text)


def _glob(pattern: str) -> str:
    """A folded pattern as a regular expression for `fullmatch`: the text before the first
    `*` at the start, each piece between stars at its leftmost place after the previous one
    (atomic, so it is never tried again: linear time, no backtracking blow-up), the text after
    the last `*` at the end. `?`, `[` and every other character are literal, as in rport."""
    first, *middle, last = pattern.split("*")
    found = "".join(f"(?>.*?{re.escape(piece)})" for piece in middle)
    return f"{re.escape(first)}{found}.*{re.escape(last)}"


class _Matcher:
    """One parameter's patterns, folded, sorted by shape so most are a C-level string test:
    exact values in a set, `abc*` and `*abc` as tuples for startswith/endswith, `*abc*` as
    substrings; the rest in one expression."""

    def __init__(self, patterns: tuple[str, ...]):
        self.exact = frozenset(p for p in patterns if "*" not in p)
        self.everything = False
        prefixes, suffixes, inner, globs, needles = [], [], [], [], []
        for pattern in dict.fromkeys(p for p in patterns if "*" in p):
            first, *middle, last = pattern.split("*")
            middle = [piece for piece in middle if piece]
            if not (first or middle or last):
                self.everything = True
            elif not middle and not last:
                prefixes.append(first)
            elif not middle and not first:
                suffixes.append(last)
            elif len(middle) == 1 and not first and not last:
                inner.append(middle[0])
            else:
                globs.append(_glob(pattern))
                # a value without the pattern's longest piece cannot match: a cheap test first
                needles.append(max((first, *middle, last), key=len))
        self._prefixes, self._suffixes, self._inner = tuple(prefixes), tuple(suffixes), inner
        self._needles = needles
        self._globs = re.compile("|".join(globs), re.DOTALL) if globs else None

    def __call__(self, value: str) -> bool:
        return (self.everything or value in self.exact
                or (bool(self._prefixes) and value.startswith(self._prefixes))
                or (bool(self._suffixes) and value.endswith(self._suffixes))
                or any(piece in value for piece in self._inner)
                or (self._globs is not None and any(n in value for n in self._needles)
                    and self._globs.fullmatch(value) is not None))


@functools.lru_cache(maxsize=4096)
def compiled_matcher(patterns: tuple[str, ...]) -> _Matcher:
    return _Matcher(patterns)


def pattern_matches(pattern: str, value: str) -> bool:
    """One rport group pattern against one client value, ignoring case."""
    return compiled_matcher((fold(pattern),))(fold(value))


def _values(record: ClientRecord, name: str) -> tuple[str, ...]:
    """The client's value(s) of one group parameter, as strings."""
    if name == "client_id":
        return (record.id,)
    if name == "client_auth_id":
        return (record.client_auth_id,)
    raw = record.details.get(_MULTI_VALUED.get(name, name))
    if name in _MULTI_VALUED:
        items = raw if isinstance(raw, list) else ([] if raw in (None, "") else [raw])
        return tuple(str(v) for v in items)
    return ("" if raw is None else str(raw),)


@dataclass(frozen=True)
class Member:
    """A client as group matching sees it: its folded values, read once per request (plain
    data, so matching can run in a thread)."""

    id: str
    connected: bool
    values: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, record: ClientRecord) -> Member:
        return cls(record.id, record.connected,
                   {name: tuple(fold(v) for v in _values(record, name)) for name in PARAM_NAMES})


@dataclass(frozen=True)
class ClientGroup:
    """A group as stored: `params` holds only the parameters given (None = unset)."""

    id: str
    description: str
    params: dict[str, tuple[str, ...]]

    @property
    def key(self) -> Hashable:
        """Everything membership depends on, hashable."""
        return (self.id, tuple(sorted(self.params.items())))

    def folded(self) -> dict[str, tuple[str, ...]]:
        return {name: tuple(fold(p) for p in patterns) for name, patterns in self.params.items()}

    def params_json(self) -> dict[str, list[str] | None]:
        """rport's shape: every parameter, null when not set."""
        return {name: list(self.params[name]) if name in self.params else None
                for name in PARAM_NAMES}

    def to_json(self, members: Sequence[Member]) -> dict[str, Any]:
        """rport's group JSON; client_ids are its members, connected or not (as rport), and
        openrport's counts."""
        return {"id": self.id, "description": self.description, "params": self.params_json(),
                "client_ids": sorted(m.id for m in members), "num_clients": len(members),
                "num_clients_connected": sum(1 for m in members if m.connected)}


class Index:
    """The clients of one request by folded value, per parameter: a pattern is tried once per
    distinct value (most clients share their os, kernel, version, tags ...), not per client."""

    def __init__(self, clients: Sequence[Member]):
        self.clients = clients
        self._by_value: dict[str, dict[str, set[int]]] = {}
        self._recent: dict[tuple[str, tuple[str, ...]], set[int]] = {}

    def _values(self, name: str) -> dict[str, set[int]]:
        index = self._by_value.get(name)
        if index is None:
            index = self._by_value[name] = {}
            for at, client in enumerate(self.clients):
                for value in client.values[name]:
                    index.setdefault(value, set()).add(at)
        return index

    def _without_values(self, name: str) -> set[int]:
        return {at for at, c in enumerate(self.clients) if not c.values[name]}

    def matching(self, name: str, patterns: tuple[str, ...]) -> set[int]:
        """rport's MatchesOneOf: a client matches when one of its values matches one of the
        patterns; an empty list matches only clients without any value (never a client for
        the single-valued properties). The last few answers are kept: groups often share a
        parameter."""
        key = (name, patterns)
        if key in self._recent:
            return self._recent[key]
        found = self._matching(name, patterns)
        self._recent[key] = found
        if len(self._recent) > _RECENT:
            del self._recent[next(iter(self._recent))]
        return found

    def _matching(self, name: str, patterns: tuple[str, ...]) -> set[int]:
        if not patterns:
            return self._without_values(name)
        test = compiled_matcher(patterns)
        found: set[int] = set()
        for value, clients in self._values(name).items():
            if test(value):
                found |= clients
        return found

    def positions(self, params: dict[str, tuple[str, ...]]) -> set[int]:
        """Where the clients matching every parameter given are; none without params."""
        chosen: set[int] | None = None
        for name, patterns in params.items():
            found = self.matching(name, patterns)
            chosen = found if chosen is None else chosen & found
            if not chosen:
                return set()
        return chosen or set()

    def members(self, params: dict[str, tuple[str, ...]]) -> list[Member]:
        return [self.clients[at] for at in sorted(self.positions(params))]


def belongs(group: ClientGroup, record: ClientRecord) -> bool:
    """Whether the client is a member of the group (rport's BelongsTo)."""
    return bool(Index([Member.of(record)]).members(group.folded()))


def members_of(groups: Sequence[ClientGroup], clients: Sequence[Member]) -> list[list[Member]]:
    """Each group's members, in group order (pure: runs in a thread for big tenants)."""
    index = Index(clients)
    return [index.members(group.folded()) for group in groups]


def in_any(groups: Sequence[ClientGroup], clients: Sequence[Member]) -> list[int]:
    """Positions of the clients that belong to at least one of the groups, in order."""
    index = Index(clients)
    return sorted(set().union(*(index.positions(group.folded()) for group in groups)))

