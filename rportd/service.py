"""Running as a systemd service: `--service install|uninstall|start|stop [--service-user U]` for
rportd and our agent, as rport offers, writing a hardened unit that runs with the given config."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import RportdError

__all__ = ["Unit", "ServiceError", "COMMANDS", "AGENT_ADDRESS_FAMILIES", "SYSTEM_UNIT_DIR",
           "render_unit", "run_service", "executable", "writable_dirs", "example_units",
           "hidden_paths"]

COMMANDS = ("install", "uninstall", "start", "stop")
AGENT_ADDRESS_FAMILIES = "AF_INET AF_INET6 AF_UNIX AF_NETLINK"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
_SYSTEMCTL_TIMEOUT = 60.0


class ServiceError(RportdError):
    """A service command that could not be carried out; the CLI prints it on one line."""


@dataclass(frozen=True)
class Unit:
    name: str  # "rportd" or "rport": the unit is <name>.service
    description: str
    exec_start: tuple[str, ...]
    user: str
    writable: tuple[str, ...] = ()  # ReadWritePaths: the data dir, the log files' directories
    low_ports: bool = False  # binds a port below 1024: keeps CAP_NET_BIND_SERVICE
    after: tuple[str, ...] = ("network-online.target",)
    # the agent lists its interfaces (if_nameindex), which glibc asks over netlink
    address_families: str = "AF_INET AF_INET6 AF_UNIX"
    proc_subset_pid: bool = True  # the agent reads /proc/net/if_inet6: not for it


_HIDDEN = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")


def hidden_paths(paths: Sequence[str]) -> list[str]:
    """Paths the unit's ProtectHome/PrivateTmp hide from the service: worth a warning."""
    return [path for path in paths
            if any(path == top or path.startswith(top + "/") for top in _HIDDEN)]


def executable(script: str, module: str) -> tuple[str, ...]:
    """How the unit starts us: the installed script beside this interpreter, else `python -m`."""
    beside = Path(sys.executable).parent / script
    if beside.is_file() and os.access(beside, os.X_OK):
        return (str(beside),)
    return (sys.executable, "-m", module)


def _quote(word: str) -> str:
    if word and all(c.isalnum() or c in "/._-:=@+," for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _hardening(unit: Unit) -> list[str]:
    capabilities = "CAP_NET_BIND_SERVICE" if unit.low_ports else ""
    lines = [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "PrivateMounts=yes",
        "ProtectProc=invisible",
        *(["ProcSubset=pid"] if unit.proc_subset_pid else []),
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
        # a call outside the filter fails (EPERM) instead of killing the process
        "SystemCallErrorNumber=EPERM",
        f"RestrictAddressFamilies={unit.address_families}",
        f"CapabilityBoundingSet={capabilities}",
        f"AmbientCapabilities={capabilities}",
        "UMask=0077",
    ]
    lines += [f"ReadWritePaths={_quote(path)}" for path in unit.writable]
    return lines


def render_unit(unit: Unit) -> str:
    """The unit file's text: the command, a dedicated user, restart on failure, the hardening."""
    after = " ".join(unit.after)
    return "\n".join([
        "# Written by `" + unit.name + " --service install`; edit with `systemctl edit "
        + unit.name + "`.",
        "[Unit]",
        f"Description={unit.description}",
        f"After={after}",
        f"Wants={after}",
        "",
        "[Service]",
        "Type=simple",
        f"User={unit.user}",
        f"Group={unit.user}",
        "ExecStart=" + " ".join(_quote(word) for word in unit.exec_start),
        "Restart=on-failure",
        "RestartSec=5",
        "LimitNOFILE=1048576",
        *_hardening(unit),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def _systemctl(*args: str) -> None:
    try:
        result = subprocess.run(["systemctl", *args], capture_output=True, text=True,
                                timeout=_SYSTEMCTL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"systemctl {' '.join(args)}: {exc}") from None
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise ServiceError(f"systemctl {' '.join(args)} failed: {why}")


def _ensure_user(unit: Unit) -> None:
    """rport's documentation creates the user by hand; a system install does it if missing."""
    try:
        pwd.getpwnam(unit.user)
        return
    except KeyError:
        pass
    home = unit.writable[0] if unit.writable else "/nonexistent"
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    try:
        subprocess.run(["useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home",
                        "--shell", nologin, "--comment", f"{unit.name} service", unit.user],
                       check=True, capture_output=True, text=True, timeout=_SYSTEMCTL_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServiceError(f"cannot create user {unit.user!r}: {exc}") from None


def _prepare_dirs(unit: Unit) -> list[str]:
    """Create the missing writable directories for the user; an existing one (/var/log, say)
    is the operator's and is left alone. Returns notes on those the user does not own."""
    entry, notes = pwd.getpwnam(unit.user), []
    for path in map(Path, unit.writable):
        if not path.exists():
            path.mkdir(parents=True, mode=0o750)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        elif path.stat().st_uid != entry.pw_uid:
            notes.append(f"note: {path} is not owned by {unit.user}; the service may not write "
                         "there")
    return notes


def _install(unit: Unit, unit_dir: Path, system: bool) -> str:
    path, notes = unit_dir / f"{unit.name}.service", []
    if system:
        _ensure_user(unit)
        notes = _prepare_dirs(unit)
    unit_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(render_unit(unit), encoding="utf-8")
    path.chmod(0o644)
    if system:
        _systemctl("daemon-reload")
        _systemctl("enable", f"{unit.name}.service")
    return "\n".join([f"Service installed: {path}", *notes])


def _uninstall(unit: Unit, unit_dir: Path, system: bool) -> str:
    path = unit_dir / f"{unit.name}.service"
    if not path.exists():
        raise ServiceError(f"{path} does not exist; nothing to uninstall")
    if system:
        _systemctl("disable", "--now", f"{unit.name}.service")
    path.unlink()
    if system:
        _systemctl("daemon-reload")
    return "Service uninstalled"


def run_service(command: str, unit: Unit, unit_dir: Path | None) -> str:
    """Carry out one service command; returns what to print. With a unit directory of one's own
    (packaging, tests) only the file is written or removed: no user, no systemctl."""
    system = unit_dir is None
    where = SYSTEM_UNIT_DIR if unit_dir is None else unit_dir
    try:
        if command == "install":
            return _install(unit, where, system)
        if command == "uninstall":
            return _uninstall(unit, where, system)
    except OSError as exc:
        raise ServiceError(f"{command}: {exc}") from None
    if command in ("start", "stop"):
        if not system:
            raise ServiceError(f"{command} runs systemctl on the installed unit; with a unit "
                               f"directory of your own, run: systemctl {command} {unit.name}")
        _systemctl(command, f"{unit.name}.service")
        return f"Service {'started' if command == 'start' else 'stopped'}"
    raise ServiceError(f"unknown service command {command!r}; use one of {', '.join(COMMANDS)}")


def writable_dirs(paths: Sequence[str]) -> tuple[str, ...]:
    """Unique absolute directories, in order."""
    seen: list[str] = []
    for path in paths:
        if path and str(Path(path).absolute()) not in seen:
            seen.append(str(Path(path).absolute()))
    return tuple(seen)


def example_units() -> dict[str, str]:
    """contrib/systemd/: the units `--service install` writes for rport's usual paths."""
    server = Unit(name="rportd", description="rportd, a multi-tenant rport server",
                  exec_start=("/usr/local/bin/rportd", "-c", "/etc/rportd/rportd.conf"),
                  user="rport", writable=("/var/lib/rportd",))
    agent = Unit(name="rport", description="rport agent (rport-v1) of rportd",
                 exec_start=("/usr/local/bin/rport", "-c", "/etc/rport/rport.conf"), user="rport",
                 address_families=AGENT_ADDRESS_FAMILIES, proc_subset_pid=False)
    return {f"{unit.name}.service": render_unit(unit) for unit in (server, agent)}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("contrib/systemd")
    for file_name, text in example_units().items():
        (target / file_name).write_text(text, encoding="utf-8")
