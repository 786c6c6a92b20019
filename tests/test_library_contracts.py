"""The private pieces of asyncssh and aiohttp rportd relies on (listed, with why, in
rportd/wire/asyncssh_internals.py and rportd/wire/aiohttp_internals.py) are still there and still
behave as we use them. When a library upgrade breaks one, this file names it."""

from __future__ import annotations

import inspect
import os

import asyncssh.connection as connection
from asyncssh.channel import SSHTCPChannel
from asyncssh.connection import SSHConnection

from rportd.wire import aiohttp_internals


def _source(function: object) -> str:
    return inspect.getsource(function)  # type: ignore[arg-type]


def test_asyncssh_version_exchange_internals() -> None:
    assert isinstance(connection._MAX_BANNER_LINE_LEN, int)
    assert isinstance(connection._MAX_VERSION_LINE_LEN, int)
    for method in ("_send_version", "_recv_version", "_send", "_send_kexinit", "_recv_pkthdr"):
        assert callable(getattr(SSHConnection, method)), method
    init = _source(SSHConnection.__init__)
    for attribute in ("_inpbuf", "_kexinit_sent", "_recv_handler", "_client_version",
                      "_server_version"):
        assert f"self.{attribute} =" in init, attribute
    # the server's banner is sent by _send_version, which connection_made calls
    assert "self._send_version()" in _source(SSHConnection.connection_made)


def test_asyncssh_dispatches_global_requests_and_channel_opens_by_method_name() -> None:
    assert "'_process_' + map_handler_name(request) + '_global_request'" in _source(
        SSHConnection._process_global_request)
    assert "'_process_' + map_handler_name(chantype) + '_open'" in _source(
        SSHConnection._process_channel_open)
    # reply_global pops the request it answers, then lets asyncssh serve the next one
    assert "handler, packet, _ = self._global_request_queue[0]" in _source(
        SSHConnection._service_next_global_request)
    for method in ("_make_global_request", "_send_global_request",
                   "_service_next_global_request", "send_packet",
                   "get_owner", "create_tcp_channel"):
        assert callable(getattr(SSHConnection, method)), method
    parameters = inspect.signature(SSHTCPChannel._open_forward).parameters
    assert list(parameters)[:3] == ["self", "session_factory", "chantype"]


def test_aiohttp_websocket_mask_is_the_fast_one_and_correct() -> None:
    assert aiohttp_internals.MASK_IMPLEMENTATION != "python", "aiohttp's C mask moved"
    data, key = bytearray(os.urandom(1000)), os.urandom(4)
    fast, slow = bytearray(data), bytearray(data)
    aiohttp_internals.websocket_mask(key, fast)
    aiohttp_internals._python_mask(key, slow)
    assert fast == slow != data
