"""openrport's newer Remote keys and its /tcp, /udp suffixes (rportd/tunnel_spec.py)."""

from __future__ import annotations

import pytest

from rportd.errors import BadRequest
from rportd.tunnel_spec import Remote, parse_remote_spec, split_protocol

NEWEST = {"name": "rdp", "protocol": "tcp", "lhost": "0.0.0.0", "lport": "3389",
          "lport_random": False, "owner": "", "rhost": "127.0.0.1", "rport": "3389",
          "scheme": None, "acl": None, "idle_timeout_minutes": 0, "auto_close": 0,
          "http_proxy": False, "host_header": "", "auth_user": "u", "auth_password": "tunnel-pw",
          "tunnel_url": ""}


@pytest.mark.parametrize("target, expected", [
    ("127.0.0.1:22/tcp", ("127.0.0.1:22", "tcp")), ("[::1]:53/udp", ("[::1]:53", "udp")),
    ("h:80/tcp+udp", ("h:80", "tcp+udp")), ("127.0.0.1:22", ("127.0.0.1:22", "tcp")),
    ("h:80/TCP", ("h:80", "tcp"))])
def test_a_target_may_end_in_its_protocol(target: str, expected: tuple[str, str]) -> None:
    assert split_protocol(target) == expected


def test_remote_specs_take_the_suffix() -> None:
    remote = parse_remote_spec("2222:127.0.0.1:22/tcp")
    assert (remote.lport, remote.rhost, remote.rport, remote.protocol) == (
        "2222", "127.0.0.1", "22", "tcp")
    assert parse_remote_spec("53/udp").protocol == "udp"


def test_the_newest_clients_remote_is_accepted_and_its_password_not_kept() -> None:
    remote = Remote.from_json(NEWEST)
    remote.check_supported()
    assert (remote.name, remote.protocol, remote.lport) == ("rdp", "tcp", "3389")
    assert "tunnel-pw" not in repr(remote) + repr(remote.to_json())
    assert Remote.from_json(remote.to_json()) == remote  # stored and read back


@pytest.mark.parametrize("changes, text", [
    ({"protocol": "udp"}, "protocol 'udp' is not supported: rportd tunnels are TCP only"),
    ({"protocol": "tcp+udp"}, r"protocol 'tcp\+udp' is not supported"),
    ({"http_proxy": True}, "http_proxy is not supported by rportd"),
    ({"idle_timeout_minutes": 5}, "idle_timeout_minutes is not supported by rportd"),
    ({"auto_close": 60_000_000_000}, "auto_close is not supported by rportd")])
def test_what_rportd_cannot_do_is_refused_clearly(changes: dict[str, object], text: str) -> None:
    with pytest.raises(BadRequest, match=text):
        Remote.from_json({**NEWEST, **changes}).check_supported()


@pytest.mark.parametrize("changes, text", [
    ({"protocol": "sctp"}, "protocol 'sctp' is not one of"), ({"http_proxy": "yes"}, "true or"),
    ({"auto_close": -1}, "auto_close must be a whole number"),
    ({"auth_password": ["x"]}, "auth_password must be a string"), ({"name": ["x"]}, "name must be")])
def test_malformed_newer_keys_are_bad_requests(changes: dict[str, object], text: str) -> None:
    with pytest.raises(BadRequest, match=text):
        Remote.from_json({**NEWEST, **changes})
