"""Code checks are part of the suite: ruff over the repository, mypy --strict over rportd/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", str(ROOT / "rportd")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rport_example_conf_is_read_by_the_agent(tmp_path: Path) -> None:
    from rportd.client.cli import _parser, settings_from

    args = _parser().parse_args(["-c", str(ROOT / "rport.example.conf")])
    settings, _ = settings_from(args)
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert settings.auth_id == "client1" and settings.keepalive == 180
