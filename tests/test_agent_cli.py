"""Our agent's command line is the rport client's: every flag reaches its config key exactly as
the file's key does (flag > environment > file), it refuses root without --allow-root in the
client's words, and --proxy goes through a real HTTP CONNECT proxy."""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rportd.client.cli import ROOT_REFUSAL, _parser, agent_document, settings_from
from rportd.client.options import OPTIONS, Option, bool_option_names
from rportd.client.websocket import ProxyAddress
from rportd.errors import ConfigError
from rportd.flags import expand_bool_flags

from .connect_proxy import ConnectProxy
from .helpers import write_config
from .processes import Agent, Rportd

BASE = {"client": {"server": "127.0.0.1:8080", "auth": "c1:pw"}}
SAMPLES: dict[str, Any] = {
    "auth": "flagged:pw2", "fingerprint": "ab:cd", "id": "vm-7", "name": "Seven",
    "tag": ["a", "b c"], "proxy": "http://u:p%40ss@127.0.0.1:3128", "allow-root": True,
    "keepalive": "45s", "max-retry-count": 3, "max-retry-interval": "2m",
    "header": ["x-one: 1", "X-Two:  two "], "hostname": "rport.example:443",
    "log-file": "/tmp/agent.log", "log-level": "debug", "remote-commands-enabled": False,
    "remote-commands-send-back-limit": 1234,
}


def parse(argv: list[str]) -> argparse.Namespace:
    return _parser().parse_intermixed_args(expand_bool_flags(argv, bool_option_names()))


def argv_for(option: Option, value: Any) -> list[str]:
    flag = f"--{option.flag}"
    if isinstance(value, bool):
        return [flag if value else f"{flag}=false"]
    if isinstance(value, list):
        return [word for item in value for word in (flag, item)]
    return [flag, str(value)]


@pytest.fixture(autouse=True)
def _no_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        if option.env:
            monkeypatch.delenv(option.env, raising=False)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: f"--{o.flag}")
def test_every_flag_reaches_its_config_key_as_the_file_key_does(tmp_path: Path,
                                                                option: Option) -> None:
    value = SAMPLES[option.flag]
    assert value != option.default
    with_key = {**BASE, option.section: {**BASE.get(option.section, {}), option.key: value}}
    from_file = parse(["-c", str(write_config(tmp_path / "file.conf", with_key))])
    from_flag = parse(["-c", str(write_config(tmp_path / "base.conf", BASE)),
                       *argv_for(option, value)])
    assert agent_document(from_flag)[option.section][option.key] == value
    assert agent_document(from_flag) == agent_document(from_file)
    assert settings_from(from_flag) == settings_from(from_file)


def test_flags_reach_the_agents_settings() -> None:
    argv = [word for option in OPTIONS for word in argv_for(option, SAMPLES[option.flag])]
    settings, logs = settings_from(parse([*argv, "rportd.example:9000", "3000"]))
    assert (settings.auth_id, settings.password, settings.client_id) == ("flagged", "pw2", "vm-7")
    assert (settings.name, settings.tags, settings.fingerprint) == ("Seven", ["a", "b c"], "ab:cd")
    assert settings.proxy == ProxyAddress("127.0.0.1", 3128, "u", "p@ss")
    assert (settings.keepalive, settings.max_retry_count, settings.max_retry_interval) == (45, 3, 120)
    assert settings.headers == {"X-One": "1", "X-Two": "two", "Host": "rport.example:443"}
    assert settings.allow_root and settings.server.host == "rportd.example"
    assert settings.remotes[0]["rport"] == "3000"
    assert logs == {"log_file": "/tmp/agent.log", "log_level": "debug"}


def test_the_real_clients_defaults() -> None:
    settings, logs = settings_from(parse(["--auth", "a:b", "127.0.0.1:8080"]))
    assert (settings.keepalive, settings.max_retry_count, settings.max_retry_interval) == (180, -1,
                                                                                         300)
    assert not settings.allow_root and settings.proxy is None and settings.headers == {}
    assert {o.flag: o.default for o in OPTIONS}["remote-commands-send-back-limit"] == 2048
    assert {o.flag: o.default for o in OPTIONS}["remote-commands-enabled"] is True


def test_precedence_flag_then_environment_then_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    config = str(write_config(tmp_path / "rport.conf", {
        "client": {"server": "127.0.0.1:8080", "auth": "file:1", "fingerprint": "ff"}}))
    monkeypatch.setenv("RPORT_AUTH", "env:2")
    monkeypatch.setenv("RPORT_FINGERPRINT", "ee")
    settings, _ = settings_from(parse(["-c", config, "--fingerprint", "aa"]))
    assert (settings.auth_id, settings.fingerprint) == ("env", "aa")


@pytest.mark.parametrize("header, message", [
    ("Upgrade: h2c", "websocket: duplicate header not allowed: Upgrade"),
    ("sec-websocket-key: x", "websocket: duplicate header not allowed: Sec-Websocket-Key"),
    ("no colon", 'Should be in the format "HeaderName: HeaderContent"'),
    ("Bad Name: x", "is not a header name"),
])
def test_bad_headers_are_refused_before_connecting(header: str, message: str) -> None:
    with pytest.raises(ConfigError, match="--header") as caught:
        settings_from(parse(["--auth", "a:b", "--header", header, "127.0.0.1:8080"]))
    assert message in str(caught.value)


def test_bad_flag_values_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--max-retry-count: 'often' is not a whole number"):
        settings_from(parse(["--auth", "a:b", "--max-retry-count", "often", "127.0.0.1:8080"]))
    with pytest.raises(ValueError, match="SOCKS is not supported"):
        settings_from(parse(["--auth", "a:b", "--proxy", "socks5://p:1080", "127.0.0.1:8080"]))


def test_help_lists_every_flag_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    text = " ".join(_parser().format_help().split())
    for option in OPTIONS:
        assert f"--{option.flag}" in text and f"File: [{option.section}] {option.key}." in text
    assert "Default: 3m." in text and "Env: RPORT_AUTH." in text


def _agent(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rportd.client.cli", *argv], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root refusal needs root")
def test_refuses_root_without_allow_root_in_the_clients_words() -> None:
    result = _agent(["--auth", "a:b", "--max-retry-count", "1", "127.0.0.1:1"])
    assert result.returncode == 1
    assert result.stderr == f"rport: {ROOT_REFUSAL}\n"
    assert ROOT_REFUSAL == "By default running as root is not allowed."
    again = _agent(["--auth", "a:b", "--allow-root=false", "--max-retry-count", "1", "127.0.0.1:1"])
    assert again.stderr == f"rport: {ROOT_REFUSAL}\n"


# ---------------------------------------------------------------- --proxy (HTTP CONNECT)


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    running = ConnectProxy(credentials="puser:p@ss").start()
    yield running
    running.stop()


def test_agent_registers_through_a_real_connect_proxy(tmp_path: Path, procs: list[object],
                                                      proxy: ConnectProxy) -> None:
    rportd = Rportd(tmp_path, {"server": {"auth": "c1:secret"}}).start()
    procs.append(rportd)
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "proxied",
                  "--proxy", f"http://puser:p%40ss@127.0.0.1:{proxy.port}")
    procs.append(agent.start())
    agent.wait_connected()
    tunnel = proxy.tunnels[0]
    assert tunnel.target == f"127.0.0.1:{rportd.agent_port}"
    assert tunnel.headers["Proxy-Authorization"] == "Basic " + base64.b64encode(
        b"puser:p@ss").decode()
    assert tunnel.up > 1000 and tunnel.down > 1000  # the SSH handshake went through it
    assert f"via http://127.0.0.1:{proxy.port}" in agent.log_text()
    assert "p@ss" not in agent.log_text() and "p%40ss" not in agent.log_text()


def test_a_proxy_refusal_is_reported_and_retried(tmp_path: Path, procs: list[object],
                                                 proxy: ConnectProxy) -> None:
    agent = Agent(tmp_path, "127.0.0.1:9", "c1:secret", "--max-retry-count", "2",
                  "--proxy", f"http://puser:wrong@127.0.0.1:{proxy.port}")
    procs.append(agent.start())
    assert agent.wait_exit() == 1
    assert agent.log_text().count("proxy: 407 Proxy Authentication Required") == 2
    assert proxy.refused == ["127.0.0.1:9", "127.0.0.1:9"]


def test_a_proxy_that_is_not_http_is_refused_without_its_password() -> None:
    result = _agent(["--auth", "a:b", "--allow-root", "--max-retry-count", "1", "--proxy",
                     "socks5://puser:Pr0xy-S3cret@127.0.0.1:1080", "127.0.0.1:1"])
    assert result.returncode == 1
    assert result.stderr == ("rport: proxy 'socks5://127.0.0.1:1080' must be an HTTP CONNECT "
                             "proxy, http://[user:password@]host:port (SOCKS is not supported)\n")


@pytest.mark.parametrize("section, key, value", [
    ("client", "auth", 98765432123), ("client", "id", 7), ("client", "tags", 5),
    ("connection", "max_retry_count", "often"), ("client", "allow_root", "yes please"),
    ("connection", "keep_alive", 30),
])
def test_a_config_value_of_the_wrong_type_is_one_line_naming_the_key(
        tmp_path: Path, section: str, key: str, value: Any) -> None:
    """As rportd's: exit 1 with one line naming the key (never a traceback, never the value:
    `auth` holds the password)."""
    document = {"client": {**BASE["client"]}}
    document.setdefault(section, {})[key] = value
    config = write_config(tmp_path / "rport.conf", document)
    done = subprocess.run([sys.executable, "-m", "rportd.client.cli", "--allow-root", "-c",
                           str(config)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and f"[{section}] {key}" in done.stderr, done.stderr
    assert "98765432123" not in done.stderr
