"""The agent's own configuration as the newest rport client reports it (`ClientConfiguration`),
with every secret removed before anything stores, logs or shows it.

openrport's client sends its whole parsed config, and it carries the agent's credential in clear
text (`client.auth` "id:password", `client.auth_user`, `client.auth_pass`). What is removed:
- every key whose name has a secret-looking word in it (auth, pass, password, secret, token,
  key, credential, cookie, private, ...), wherever it is nested;
- HTTP headers the client adds (`connection.headers`, `connection.http_headers`) other than a
  few harmless ones: an Authorization or a Cookie header is a credential;
- user names and passwords inside URLs (`http://user:pw@proxy:3128`), and Go's url.URL objects'
  `User` and query (`client.proxy_url`);
- any string that contains the password the agent logged in with (whatever key holds it);
- anything nested deeper than `MAX_DEPTH` levels.
A config of more than `MAX_VALUES` JSON values is refused: it is kept in memory per client.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["sanitize_client_configuration", "MAX_DEPTH", "MAX_VALUES", "is_secret_key"]

MAX_DEPTH = 16
MAX_VALUES = 10_000  # the real client's default config has about 130
_SECRET_WORDS = frozenset({
    "auth", "authorization", "pass", "passwd", "password", "passphrase", "pwd", "pw", "secret",
    "secrets", "token", "tokens", "key", "keys", "apikey", "credential", "credentials", "cookie",
    "cookies", "private", "cert", "signature", "session"})
_SAFE_HEADERS = frozenset({"user-agent", "accept", "accept-language", "accept-encoding", "host"})
_HEADER_LISTS = frozenset({"headers", "headers_raw"})
_HEADER_MAPS = frozenset({"http_headers"})
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]*@")
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def is_secret_key(key: str) -> bool:
    """`auth_pass`, `AuthPassword`, `api-key`, `proxyToken`: words of the key, any case."""
    words = {w.lower() for w in _WORD.findall(key)}
    return bool(words & _SECRET_WORDS) or key.lower() in _SECRET_WORDS


def sanitize_client_configuration(config: Any, password: str) -> dict[str, Any] | None:
    """A copy of the reported config with the secrets above removed; None for no config.
    Raises ValueError when it is not a JSON object."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ValueError("ClientConfiguration must be an object")
    if _count(config, MAX_VALUES + 1) > MAX_VALUES:
        raise ValueError(f"ClientConfiguration has more than {MAX_VALUES} values")
    cleaned = _clean(config, password, 0)
    assert isinstance(cleaned, dict)
    return cleaned


def _count(value: Any, budget: int) -> int:
    """How many JSON values `value` holds, counting stops past `budget` (no recursion)."""
    seen, stack = 0, [value]
    while stack and seen < budget:
        item = stack.pop()
        seen += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return seen


def _clean(value: Any, password: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return _clean_object(value, password, depth)
    if isinstance(value, list):
        return [_clean(item, password, depth + 1) for item in value
                if not _holds_password(item, password)]
    if isinstance(value, str):
        return _URL_USERINFO.sub(r"\1", value)
    return value


def _clean_object(value: dict[str, Any], password: str, depth: int) -> dict[str, Any]:
    if _is_go_url(value):
        value = {k: v for k, v in value.items() if k not in ("User", "RawQuery", "Fragment")}
    out: dict[str, Any] = {}
    for key, item in value.items():
        if is_secret_key(key) or _holds_password(item, password):
            continue
        if key in _HEADER_LISTS and isinstance(item, list):
            out[key] = [h for h in item if isinstance(h, str) and _safe_header(h.split(":")[0])]
        elif key in _HEADER_MAPS and isinstance(item, dict):
            out[key] = _clean({k: v for k, v in item.items() if _safe_header(k)}, password,
                              depth + 1)
        else:
            out[key] = _clean(item, password, depth + 1)
    return out


def _is_go_url(value: dict[str, Any]) -> bool:
    return "Scheme" in value and "Host" in value


def _safe_header(name: str) -> bool:
    return name.strip().lower() in _SAFE_HEADERS


def _holds_password(value: Any, password: str) -> bool:
    return bool(password) and isinstance(value, str) and password in value
