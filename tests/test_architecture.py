"""The tree reads as the architecture: dependencies point one way (docs/architecture.md).

contract ← amqp ← settings ← the capabilities ← admin and its console ← serve ← cli, with the
small modules at the top of ``router/`` (errors, config, secret, tls, loop, pg, sqlite_files)
below them all; nothing imports ``router.cli`` but the command line itself; the worker runtime
(``consumers/``) may use everything up to the admin API's client; no module is over 400 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The layer of each part of ``router``: a module may import only from its own layer or below.
LAYERS = {
    "__init__": 0,
    "errors": 0,
    "secret": 0,
    "config": 0,
    "tls": 0,
    "durations": 0,
    "loop": 0,
    "pg": 0,
    "sqlite_files": 0,
    "contract": 1,
    "amqp": 2,
    "settings": 3,
    "tracing": 3,
    "observability": 4,
    "ingress": 5,
    "claims": 5,
    "attentive": 5,
    "parked": 5,
    "apps": 5,
    "history": 5,
    "admin": 6,
    "console": 6,
    "consumers": 7,
    "serve": 8,
    "cli": 9,
    "__main__": 10,
}


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "consumers":
        return LAYERS["consumers"]
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["errors"]


def _modules() -> Iterator[tuple[str, Path]]:
    for package in ("router", "consumers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            yield ".".join(path.relative_to(ROOT).with_suffix("").parts), path


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in ("router", "router.amqp", "router.contract"):
                yield from (f"{node.module}.{alias.name}" for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _ours(module: str) -> bool:
    return module.split(".")[0] in ("router", "consumers")


def test_every_part_of_router_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in (ROOT / "router").iterdir()}
    assert parts - {"__pycache__", "py"} <= set(LAYERS)


def test_dependencies_point_one_way() -> None:
    upward = []
    for module, path in _modules():
        mine = _layer(module)
        for target in filter(_ours, _imports(path)):
            if module.startswith("consumers") and target.startswith("consumers"):
                continue
            theirs = _layer(target)
            if theirs > mine:
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_nothing_but_the_command_line_imports_it() -> None:
    command_line = ("router.cli", "router.__main__", "consumers.runtime.cli")
    importers = [
        f"{module} imports {target}"
        for module, path in _modules()
        if not module.startswith(command_line)
        for target in _imports(path)
        if target.startswith("router.cli")
    ]
    assert importers == []


def test_no_module_is_over_400_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}: {n}"
        for _, path in _modules()
        if (n := len(path.read_text().splitlines())) > 400
    ]
    assert long == []


def test_no_module_is_named_after_a_standard_library_module() -> None:
    import sys

    clashes = [
        module
        for module, path in _modules()
        if path.stem != "__init__" and path.stem in sys.stdlib_module_names
    ]
    assert clashes == []
