"""API logins under abuse, against a real rportd: concurrent guesses, lockout attempts by
strangers, neighbours behind one address, bearer tokens, and the latency of unknown names."""

from __future__ import annotations

import base64
import http.client as httpclient
import json
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import pytest

from .helpers import Response
from .processes import Rportd

PASSWORDS = {"admin": "admin-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-3", "dave": "dave-pw-4",
             **{f"known{i}": f"known-pw-{i}" for i in range(20)}}
COST = 10  # a realistic cost: the difference between a check and none is plain to see


@pytest.fixture(scope="module")
def rportd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rportd]:
    tmp = tmp_path_factory.mktemp("logins")
    users = [{"username": name, "password": bcrypt.hashpw(pw.encode(), bcrypt.gensalt(COST))
              .decode(), "groups": ["Administrators"]} for name, pw in PASSWORDS.items()]
    (tmp / "users.json").write_text(json.dumps(users))
    server = Rportd(tmp, {"server": {"auth": "c1:secret"},
                          "api": {"auth_file": str(tmp / "users.json")}}).start()
    yield server
    server.stop()


def call(rportd: Rportd, source: str, user: str, password: str, path: str = "/api/v1/me",
         token: str | None = None) -> Response:
    """A real request from `source` (127.0.0.x: each a different client address)."""
    conn = httpclient.HTTPConnection("127.0.0.1", rportd.api_port, timeout=30,
                                     source_address=(source, 0))
    auth = (f"Bearer {token}" if token else
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        conn.request("GET", path, headers={"Authorization": auth})
        response = conn.getresponse()
        return Response(response.status, response.read(), dict(response.getheaders()))
    finally:
        conn.close()


def test_forty_concurrent_guesses_reach_the_password_check_five_times(rportd: Rportd) -> None:
    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(lambda i: call(rportd, "127.0.0.1", "admin", f"guess-{i}").status,
                                 range(40)))
    assert 200 not in statuses
    assert statuses.count(401) == 5 and statuses.count(429) == 35, statuses
    assert call(rportd, "127.0.0.1", "admin", PASSWORDS["admin"]).status == 429  # pair banned
    started = time.monotonic()
    assert call(rportd, "127.0.0.3", "admin", PASSWORDS["admin"]).status == 200
    assert time.monotonic() - started < 2.0 + 1.0  # the capped delay, plus one bcrypt


def test_a_stranger_cannot_lock_a_user_out(rportd: Rportd) -> None:
    answers = [call(rportd, "127.0.0.2", "bob", f"guess-{i}").status for i in range(10)]
    assert answers == [401] * 5 + [429] * 5
    started = time.monotonic()
    assert call(rportd, "127.0.0.1", "bob", PASSWORDS["bob"]).status == 200
    assert time.monotonic() - started < 3.0


def test_twenty_failures_from_one_address_lock_out_nobody_behind_it(rportd: Rportd) -> None:
    for i in range(20):
        assert call(rportd, "127.0.0.4", f"nobody{i}", "guess").status == 401
    assert call(rportd, "127.0.0.4", "carol", PASSWORDS["carol"]).status == 200


def test_bearer_tokens_are_never_throttled(rportd: Rportd) -> None:
    login = call(rportd, "127.0.0.5", "dave", PASSWORDS["dave"], "/api/v1/login")
    token = login.json()["data"]["token"]
    for i in range(6):
        call(rportd, "127.0.0.5", "dave", f"guess-{i}")
    assert call(rportd, "127.0.0.5", "dave", PASSWORDS["dave"]).status == 429
    assert call(rportd, "127.0.0.5", "", "", token=token).status == 200


@pytest.mark.parametrize("password", ["x" * 100, "a\x00b", "é" * 40])
def test_odd_passwords_are_a_clean_401(rportd: Rportd, password: str) -> None:
    assert call(rportd, "127.0.0.6", "carol", password).status == 401


def _latency(rportd: Rportd, source: str, user: str) -> float:
    started = time.monotonic()
    assert call(rportd, source, user, "wrong-password").status == 401
    return time.monotonic() - started


def _medians(rportd: Rportd, attempt: int) -> tuple[float, float]:
    """Median latency of unknown names and of known names with a wrong password, measured in
    alternating order (so load drifting over the run hits both sides alike)."""
    unknown, known = [], []
    for i in range(19):  # distinct names and addresses: no delay applies to either side
        sides = [(unknown, f"127.{attempt}.1.{i + 1}", f"ghost{attempt}-{i}"),
                 (known, f"127.{attempt}.2.{i + 1}", f"known{i}")]
        for samples, source, user in sides if i % 2 else reversed(sides):
            samples.append(_latency(rportd, source, user))
    return statistics.median(unknown), statistics.median(known)


def test_unknown_users_cost_what_known_users_with_a_wrong_password_cost(rportd: Rportd) -> None:
    _latency(rportd, "127.0.1.250", "known19")  # the source's hash cost is learned
    _latency(rportd, "127.0.1.251", "ghost-warmup")  # the dummy hash is made once
    for attempt in (1, 2):  # a second measurement if other work on the machine skewed the first
        medians = _medians(rportd, attempt)
        if (max(medians) - min(medians)) / max(medians) < 0.2:
            return
    raise AssertionError(f"unknown vs known-wrong medians differ by over 20 %: {medians}")


def test_the_configured_ban_is_openrports(tmp_path: Path) -> None:
    """`[server] max_failed_login` and `ban_time` set the API's pair ban too."""
    users = [{"username": "eve", "password": bcrypt.hashpw(b"eve-pw", bcrypt.gensalt(4)).decode()}]
    (tmp_path / "users.json").write_text(json.dumps(users))
    server = Rportd(tmp_path, {"server": {"auth": "c1:secret", "max_failed_login": 2,
                                          "ban_time": 1},
                               "api": {"auth_file": str(tmp_path / "users.json")}}).start()
    try:
        assert [call(server, "127.0.0.1", "eve", "no").status for _ in range(3)] == \
            [401, 401, 429]
        deadline = time.monotonic() + 5
        while call(server, "127.0.0.1", "eve", "eve-pw").status != 200:
            assert time.monotonic() < deadline, "the ban did not end after ban_time"
            time.sleep(0.2)
    finally:
        server.stop()
