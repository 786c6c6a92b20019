"""The package layout keeps its arrows pointing one way: each part of rportd imports only the
parts below it, and only the composition root (server.py) imports both the API and the agent port."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rportd"
_BASE = {"__init__", "errors"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "settings": set(),
    "config": {"errors", "settings"},
    "logs": {"errors"},
    "preflight": {"config", "errors"},
    "store": {"config", "errors"},
    "tenancy": {"config", "errors", "store"},
    "tunnel_spec": {"config", "errors"},
    "wire": {"errors"},
    "flags": {"config", "errors"},
    "service": {"errors"},
    "auth": {"config", "errors", "store", "tenancy"},
    "registry": {"errors", "store", "tenancy", "tunnel_spec"},
    "audit": {"errors", "store", "tenancy"},
    "tenants": {"config", "errors", "store", "tenancy"},
    "quotas": {"config", "errors", "store", "tenants"},
    "tenant_admin": {"errors", "registry", "store", "tenancy", "tenants"},
    "bootstrap": {"auth", "config", "store"},
    "client_groups": {"errors", "registry", "store", "tenancy"},
    "jobs": {"config", "errors", "quotas", "registry", "store", "tenancy"},
    "agent_port": {"auth", "config", "jobs", "quotas", "registry", "store", "tenancy", "tenants",
                   "tunnel_spec", "wire"},
    "api": {"audit", "auth", "client_groups", "config", "jobs", "quotas", "registry", "store",
            "tenancy", "tenant_admin", "tenants", "tunnel_spec", "wire"},
    "client": {"config", "flags", "service", "tunnel_spec", "wire"},
    "transfer": {"auth", "config", "errors", "registry", "store", "tenancy", "tenants",
                 "tunnel_spec", "wire"},
    "server": {"agent_port", "api", "audit", "auth", "bootstrap", "client_groups", "config", "jobs",
               "logs", "preflight", "quotas", "registry", "store", "tenancy", "tenants",
               "tunnel_spec", "wire"},
    "cli": {"bootstrap", "config", "flags", "logs", "preflight", "server", "service", "store",
            "transfer"},
}


def _part(module: str) -> str:
    """'rportd.agent_port.session' -> 'agent_port'; 'rportd' -> '__init__'."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def _module_or_package(dotted: str) -> str:
    relative = Path(*dotted.split(".")[1:])
    exists = (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()
    return dotted if exists else dotted.rpartition(".")[0]


def _imports(path: Path) -> set[str]:
    here = ["rportd", *path.relative_to(PACKAGE).with_suffix("").parts]
    if here[-1] == "__init__":
        here.pop()
    package = here[:-1] if path.name != "__init__.py" else here
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # from . import a, b: modules, or names of the package
                    found.update(_module_or_package(f"{target}.{alias.name}")
                                 for alias in node.names)
                    continue
            else:
                target = node.module or ""
            if target.split(".")[0] == "rportd":
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "rportd")
    return found


def test_every_module_imports_only_the_layers_below_it() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _part(".".join(["rportd", *path.relative_to(PACKAGE).with_suffix("").parts]))
        if own == "__init__":
            continue
        assert own in ALLOWED, f"{own}: a new part of the package needs its place in ALLOWED"
        for target in _imports(path):
            other = _part(target)
            if other != own and other not in ALLOWED[own] | _BASE:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_only_the_composition_root_imports_both_api_and_agent_port() -> None:
    both = [part for part, allowed in ALLOWED.items() if {"api", "agent_port"} <= allowed]
    assert both == ["server"]
