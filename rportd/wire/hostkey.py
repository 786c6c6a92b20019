"""The SSH host key: derived from `key_seed` exactly as rport does, or generated once and kept.

rport (share/ssh.go GenerateKey, share/determ_rand.go) strengthens the seed by chaining SHA-512
2048 times, then reads the second half of each further digest as its random stream; Go 1.19's
ecdsa.GenerateKey takes 40 bytes of it and uses d = int mod (N-1) + 1 on P-256. Same seed, same
key, so agents that pinned rport's fingerprint keep working.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["derive_key_from_seed", "load_or_create_host_key", "fingerprint"]

log = logging.getLogger("rportd.hostkey")

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ITERATIONS = 2048


def _determ_rand(seed: bytes, length: int) -> bytes:
    following = seed
    for _ in range(_ITERATIONS):
        following = hashlib.sha512(following).digest()[:32]
    out = b""
    while len(out) < length:
        digest = hashlib.sha512(following).digest()
        following, chunk = digest[:32], digest[32:]
        out += chunk
    return out[:length]


def derive_key_from_seed(seed: str) -> asyncssh.SSHKey:
    k = int.from_bytes(_determ_rand(seed.encode(), 256 // 8 + 8), "big")
    d = k % (_P256_ORDER - 1) + 1
    private = ec.derive_private_key(d, ec.SECP256R1())
    pem = private.private_bytes(encoding=serialization.Encoding.PEM,
                                format=serialization.PrivateFormat.PKCS8,
                                encryption_algorithm=serialization.NoEncryption())
    return asyncssh.import_private_key(pem)


def load_or_create_host_key(data_dir: Path) -> asyncssh.SSHKey:
    """A random P-256 key created on first start and kept (mode 0600) in data_dir."""
    path = data_dir / "rportd_host_key"
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.export_private_key("openssh"))
    os.replace(tmp, path)  # atomic: a crash never leaves half a key
    log.info("generated a new host key in %s", path)
    return key


def fingerprint(key: asyncssh.SSHKey) -> str:
    """rport's fingerprint: MD5 of the public key blob, lowercase hex joined by ':'."""
    digest = hashlib.md5(key.public_data, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
