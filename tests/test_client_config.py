"""The newest client's ClientConfiguration, cleaned of every secret before anything keeps it
(rportd/agent_port/client_config.py); the real-connection test is in test_newest_client.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rportd.agent_port.client_config import (
    MAX_DEPTH,
    MAX_VALUES,
    is_secret_key,
    sanitize_client_configuration,
)

SAMPLE = json.loads((Path(__file__).parent / "samples" /
                     "openrport-0.9.13-new_connection.json").read_bytes())
PASSWORD = "EXAMPLE-SECRET-pw"


def test_the_credential_goes_and_everything_else_stays() -> None:
    config = SAMPLE["ClientConfiguration"]
    cleaned = sanitize_client_configuration(config, PASSWORD)
    assert cleaned is not None and PASSWORD not in json.dumps(cleaned)
    expected = json.loads(json.dumps(config))
    for key in ("auth", "auth_user", "auth_pass"):
        del expected["client"][key]
    assert cleaned == expected


def test_proxy_credentials_and_credential_headers_go() -> None:
    config = {"client": {"proxy": "http://bob:hunter2@proxy:3128", "server": "wss://u:p@srv/",
                         "fallback_servers": ["ws://x:y@b:80"],
                         "proxy_url": {"Scheme": "http", "Host": "proxy:3128", "User": {},
                                       "RawQuery": "token=abc", "Path": ""}},
              "connection": {"headers": ["Authorization: Basic Ym9i", "User-Agent: rport",
                                         "X-Api-Key: k"],
                             "http_headers": {"User-Agent": ["rport 0.9.13"],
                                              "Proxy-Authorization": ["Basic x"],
                                              "Cookie": ["sid=1"], "X-Custom": ["v"]}}}
    cleaned = sanitize_client_configuration(config, "pw-not-used")
    assert cleaned == {
        "client": {"proxy": "http://proxy:3128", "server": "wss://srv/",
                   "fallback_servers": ["ws://b:80"],
                   "proxy_url": {"Scheme": "http", "Host": "proxy:3128", "Path": ""}},
        "connection": {"headers": ["User-Agent: rport"],
                       "http_headers": {"User-Agent": ["rport 0.9.13"]}}}


def test_any_string_holding_the_login_password_goes_whatever_its_key() -> None:
    config = {"client": {"name": f"my {PASSWORD}", "tags": ["a", PASSWORD + "!"], "id": "x"}}
    assert sanitize_client_configuration(config, PASSWORD) == {"client": {"tags": ["a"],
                                                                          "id": "x"}}


@pytest.mark.parametrize("key", ["auth", "auth_pass", "AuthPassword", "api-key", "proxyToken",
                                 "client_secret", "private_key", "Cookie", "passwd", "apikey"])
def test_secret_looking_keys(key: str) -> None:
    assert is_secret_key(key)
    assert sanitize_client_configuration({"monitoring": {key: "v", "ok": 1}}, "") == {
        "monitoring": {"ok": 1}}


@pytest.mark.parametrize("key", ["keep_alive", "fingerprint", "tunnel_allowed", "send_back_limit",
                                 "fs_identify_mountpoints_by_device", "ip_api_url",
                                 "use_system_id", "allow_root", "max_retry_count", "data_dir"])
def test_ordinary_keys_stay(key: str) -> None:
    assert not is_secret_key(key)


def test_depth_is_bounded_and_shapes_are_checked() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(MAX_DEPTH + 5):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    assert len(json.dumps(sanitize_client_configuration(deep, ""))) < len(json.dumps(deep))
    assert sanitize_client_configuration(None, "") is None
    with pytest.raises(ValueError, match="ClientConfiguration must be an object"):
        sanitize_client_configuration(["a"], "")


def test_a_config_too_large_to_keep_is_refused() -> None:
    with pytest.raises(ValueError, match=f"more than {MAX_VALUES} values"):
        sanitize_client_configuration({"client": {"tags": [""] * MAX_VALUES}}, "")
    assert sanitize_client_configuration({"client": {"tags": [""] * 100}}, "") is not None
