"""Values that parse but cannot work are refused at start: the real rportd exits 1 with one line
naming the setting and opens no port."""

from __future__ import annotations

from pathlib import Path

import pytest

from rportd.config import build_config
from rportd.errors import ConfigError

from .helpers import run_rportd, write_config
from .test_config import assert_refused, merged, refuse

LIMITS = {
    "api_max_request_bytes_zero": ({"api": {"max_request_bytes": 0}},
                                   ("[api] max_request_bytes", "at least 1")),
    "api_max_request_bytes_negative": ({"api": {"max_request_bytes": -5}},
                                       ("[api] max_request_bytes", "at least 1")),
    "used_ports_inside_excluded_ports": (
        {"server": {"used_ports": ["20000-20010"], "excluded_ports": ["1-1024", "20000-20005",
                                                                      "20006-20010"]}},
        ("[server] used_ports", "excluded_ports")),
    "equate_ids_with_multiuse_creds": (
        {"server": {"equate_clientauthid_clientid": True, "auth_multiuse_creds": True}},
        ("[server] equate_clientauthid_clientid", "auth_multiuse_creds = false")),
    "read_timeout_zero": ({"api": {"read_timeout": "0"}}, ("[api] read_timeout", "1s")),
    "db_timeout_too_long": ({"database": {"db_timeout": "2m"}}, ("[database] db_timeout", "1m")),
    "listing_cache_negative": ({"api": {"listing_cache_bytes": -1}},
                               ("[api] listing_cache_bytes", "0")),
    "agent_request_limit_too_small": ({"server": {"max_request_bytes_client": 100}},
                                      ("[server] max_request_bytes_client", "1024..16777216")),
    "agent_request_limit_too_large": ({"server": {"max_request_bytes_client": 64 << 20}},
                                      ("[server] max_request_bytes_client", "1024..16777216")),
}


def test_rports_server_max_request_bytes_limits_the_api_not_agents() -> None:
    """rport 2021 applied [server] max_request_bytes to agents and API bodies, openrport to API
    bodies only: rportd takes it for the API unless [api] max_request_bytes is set; agents have
    max_request_bytes_client whatever it says (the newest client's request is 2.4 KB)."""
    old = build_config({"server": {"allow_root": True, "max_request_bytes": 2048}}, {})
    assert old.api.max_request_bytes == 2048
    assert old.server.max_request_bytes_client == 512 * 1024
    both = build_config({"server": {"allow_root": True, "max_request_bytes": 2048},
                         "api": {"max_request_bytes": 4096}}, {})
    assert both.api.max_request_bytes == 4096
    env = build_config({"server": {"allow_root": True}}, {"RPORTD_SERVER_MAX_REQUEST_BYTES": "3000"})
    assert env.api.max_request_bytes == 3000
    assert build_config({"server": {"allow_root": True}}, {}).api.max_request_bytes == 10240


@pytest.mark.parametrize("rule", sorted(LIMITS))
def test_refuses_to_start(tmp_path: Path, rule: str) -> None:
    changes, needles = LIMITS[rule]
    refuse(tmp_path, changes, *needles)


@pytest.mark.parametrize("key, value", [("[api] max_request_bytes", "2048.9"),
                                        ("[server] max_request_bytes", "4096.5"),
                                        ("[server] max_concurrent_handshakes", "1e400")])
def test_refuses_a_non_integral_number(tmp_path: Path, key: str, value: str) -> None:
    section, name = key.strip("[").split("] ")
    path = write_config(tmp_path / "rportd.conf", merged(tmp_path, {}))
    text = path.read_text().replace(f"[{section}]\n", f"[{section}]\n{name} = {value}\n", 1)
    path.write_text(text)
    assert_refused(run_rportd(["-c", str(path)], cwd=tmp_path), key, "whole number")


def test_refuses_a_non_integral_environment_value(tmp_path: Path) -> None:
    refuse(tmp_path, {}, "RPORTD_API_MAX_REQUEST_BYTES", "whole number",
           env={"RPORTD_API_MAX_REQUEST_BYTES": "2048.9"})


def test_accepts_what_still_works() -> None:
    config = build_config({"api": {"max_request_bytes": 2048.0},
                           "server": {"used_ports": ["1000-2000"], "excluded_ports": ["1-1024"],
                                      "equate_clientauthid_clientid": True,
                                      "auth_multiuse_creds": False, "allow_root": True}}, {})
    assert config.api.max_request_bytes == 2048 and config.database.db_timeout == 5.0
    with pytest.raises(ConfigError, match="whole number"):
        build_config({"api": {"max_request_bytes": True}, "server": {"allow_root": True}}, {})
