"""The pieces of the wire that are pure functions: framing, remote specs, ACLs, the meter."""

from __future__ import annotations

import os

import pytest

from rportd.errors import BadRequest
from rportd.tunnel_spec import Acl, parse_remote_spec
from rportd.wire.pipe import TrafficMeter
from rportd.wire.websocket import (
    MAX_FRAME_PAYLOAD,
    FrameParser,
    ProtocolViolation,
    TooLarge,
    build_frame,
)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, MAX_FRAME_PAYLOAD])
def test_frames_round_trip_whatever_the_segmenting(masked: bool, size: int) -> None:
    payload = os.urandom(size)
    wire = build_frame(payload, 2, mask=masked) + build_frame(b"tail", 2, mask=masked)
    parser = FrameParser(expect_masked=masked)
    frames = []
    for start in range(0, len(wire), 7919):  # odd-sized segments split headers too
        frames += parser.feed(wire[start:start + 7919])
    assert frames == [(2, payload), (2, b"tail")]


def test_frame_parser_refuses_what_rport_never_sends() -> None:
    with pytest.raises(ProtocolViolation):
        FrameParser(expect_masked=True).feed(build_frame(b"x", 2, mask=False))
    with pytest.raises(ProtocolViolation):
        FrameParser(expect_masked=False).feed(b"\x82\x7f" + (2**40).to_bytes(8, "big"))
    with pytest.raises(ProtocolViolation):
        FrameParser(expect_masked=False).feed(b"\xf2\x00")  # reserved bits
    with pytest.raises(ProtocolViolation):  # a ping longer than 125 bytes
        FrameParser(expect_masked=False).feed(build_frame(b"p" * 126, 9, mask=False))
    with pytest.raises(ProtocolViolation):  # a fragmented ping
        FrameParser(expect_masked=False).feed(b"\x09\x00")


def test_a_frame_over_the_limit_is_refused_from_its_header_alone() -> None:
    parser = FrameParser(expect_masked=True, max_payload=1000)
    with pytest.raises(TooLarge):
        parser.feed(b"\x82\xfe\x03\xe9")  # 1001 bytes announced, none sent
    assert parser.buffered == 4


@pytest.mark.parametrize("spec, expected", [
    ("10.0.0.1:2222:127.0.0.1:22", ("10.0.0.1", "2222", "127.0.0.1", "22")),
    ("2222:127.0.0.1:22", ("0.0.0.0", "2222", "127.0.0.1", "22")),
    ("127.0.0.1:22", ("", "", "127.0.0.1", "22")),
    ("22", ("", "", "0.0.0.0", "22")),
    ("[::1]:2222:[::1]:22", ("::1", "2222", "::1", "22")),
])
def test_remote_specs_parse_as_rports(spec: str, expected: tuple[str, ...]) -> None:
    remote = parse_remote_spec(spec)
    assert (remote.lhost, remote.lport, remote.rhost, remote.rport) == expected


def test_bad_remote_specs_are_refused() -> None:
    for spec in ("70000", "a:b", "1:2:3:99999"):
        with pytest.raises(BadRequest):
            parse_remote_spec(spec)


def test_acl_matches_ipv4_ipv6_and_mapped_addresses() -> None:
    acl = Acl.parse("192.0.2.0/24, 2001:db8::/32,10.1.2.3")
    assert acl.allows("192.0.2.77") and acl.allows("10.1.2.3") and acl.allows("2001:db8::5")
    assert acl.allows("::ffff:192.0.2.1")  # an IPv4 peer seen on a dual-stack socket
    assert not acl.allows("10.1.2.4") and not acl.allows("::1") and not acl.allows("junk")
    with pytest.raises(BadRequest):
        Acl.parse("300.1.1.1")


def test_traffic_meter_reports_busy_only_while_bytes_flow() -> None:
    meter = TrafficMeter()
    assert not meter.busy(0.0)
    meter.moved += 5 << 20
    assert meter.busy(0.2)
    assert not meter.busy(0.4)  # nothing moved since
