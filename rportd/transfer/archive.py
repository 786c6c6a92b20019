"""The tenant archive: one self-describing, versioned, checksummed file (JSON lines).

Line 1 is the header: `{"format": "rportd-tenant-archive", "version": 1, "tenant", "created_at",
"rportd_version", "source", "host_key_fingerprint", "counts": {kind: n}, "secrets": {...}}`.
Then one line per row: `{"kind": KIND, "row": {column: value}}` (rows carry no tenant column: a
row belongs to the archive's tenant). The last line is the trailer `{"rows": N, "sha256": HEX}`,
HEX being the SHA-256 of every byte before the trailer. The file is created with mode 0600.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TransferRefused
from .places import Record, write_private_file
from .tables import BY_KIND, KINDS, TABLES

__all__ = ["FORMAT", "VERSION", "Archive", "encode_archive", "write_archive", "read_archive",
           "decode_archive"]

FORMAT = "rportd-tenant-archive"
VERSION = 1
MAX_ARCHIVE_BYTES = 4 << 30
_COLUMN_VALUE = (str, int, float, type(None))  # what a column gives back (bool is an int)


@dataclass
class Archive:
    """A tenant's rows by kind, and what the header says about them."""

    tenant: str
    rows: dict[str, list[Record]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("host_key_fingerprint") or "")

    def counts(self) -> dict[str, int]:
        return {kind: len(self.rows.get(kind, [])) for kind in KINDS}


def _line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode("utf-8") + b"\n"


def encode_archive(archive: Archive) -> bytes:
    header = {**archive.meta, "format": FORMAT, "version": VERSION, "tenant": archive.tenant,
              "counts": archive.counts(),
              "secrets": {t.kind: t.secret for t in TABLES if t.secret}}
    body = [_line(header)]
    body += [_line({"kind": kind, "row": row}) for kind in KINDS
             for row in archive.rows.get(kind, [])]
    content = b"".join(body)
    trailer = {"rows": len(body) - 1, "sha256": hashlib.sha256(content).hexdigest()}
    return content + _line(trailer)


def write_archive(path: Path, archive: Archive) -> str:
    """Write the archive (atomically, mode 0600); returns its content checksum."""
    data = encode_archive(archive)
    write_private_file(path, data)
    return str(json.loads(data.rsplit(b"\n", 2)[-2])["sha256"])


def _bad(path: str, why: str) -> TransferRefused:
    return TransferRefused(f"{path} is not a usable tenant archive: {why}; nothing was changed")


def _split(data: bytes, where: str) -> tuple[bytes, dict[str, Any]]:
    if not data.endswith(b"\n") or data.count(b"\n") < 2:
        raise _bad(where, "it is truncated")
    content, _, last = data[:-1].rpartition(b"\n")
    content += b"\n"
    try:
        trailer = json.loads(last)
    except ValueError:
        raise _bad(where, "it has no trailer (truncated?)") from None
    if not isinstance(trailer, dict) or "sha256" not in trailer:
        raise _bad(where, "it has no trailer (truncated?)")
    if hashlib.sha256(content).hexdigest() != trailer["sha256"]:
        raise _bad(where, "its SHA-256 checksum does not match its content (damaged or edited)")
    return content, trailer


def _header(line: bytes, where: str) -> dict[str, Any]:
    header = json.loads(line)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(where, f"its first line does not say format {FORMAT!r}")
    if header.get("version") != VERSION:
        raise _bad(where, f"format version {header.get('version')!r}; this rportd reads "
                          f"version {VERSION}")
    if not isinstance(header.get("tenant"), str):
        raise _bad(where, "its header names no tenant")
    return header


def _rows(lines: list[bytes], where: str) -> dict[str, list[Record]]:
    rows: dict[str, list[Record]] = {kind: [] for kind in KINDS}
    for line in lines:
        item = json.loads(line)
        kind = item.get("kind") if isinstance(item, dict) else None
        if kind not in BY_KIND or not isinstance(item.get("row"), dict):
            raise _bad(where, f"a row of unknown kind {kind!r}")
        odd = sorted(k for k, v in item["row"].items() if not isinstance(v, _COLUMN_VALUE))
        if odd:
            raise _bad(where, f"a {kind} row holds a list or object as {', '.join(odd)}, "
                              "where a column holds text, a number or null")
        rows[kind].append(item["row"])
    return rows


def decode_archive(data: bytes, where: str = "the archive") -> Archive:
    """Parse and verify (checksum, format, version, counts); TransferRefused when unusable."""
    content, trailer = _split(data, where)
    lines = content.splitlines()
    try:
        header = _header(lines[0], where)
        rows = _rows(lines[1:], where)
    except (ValueError, AttributeError) as exc:
        raise _bad(where, f"a line is not JSON ({exc})") from None
    archive = Archive(header["tenant"], rows, header, str(trailer["sha256"]))
    counts = {k: int(v) for k, v in (header.get("counts") or {}).items()}
    if trailer.get("rows") != len(lines) - 1 or counts != archive.counts():
        raise _bad(where, "its row counts do not match its header")
    return archive


def read_archive(path: Path) -> Archive:
    try:
        if path.stat().st_size > MAX_ARCHIVE_BYTES:
            raise _bad(str(path), "it is larger than 4 GiB")
        data = path.read_bytes()
    except OSError as exc:
        raise TransferRefused(f"cannot read {path}: {exc.strerror}") from None
    return decode_archive(data, str(path))
