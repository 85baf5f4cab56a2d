"""``claims check FILE``: find conflicts in a file of intended claims, for a team's CI. Pure.

TOML::

    [[claims]]
    app = "sms-audit"
    events = ["sms.*"]
    company = "MDc6Q29tcGFueTU"   # optional: all companies when absent

YAML: ``claims: [{app: sms-audit, events: ["sms.*"]}]``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml

from router.claims.model import ClaimSpec
from router.errors import InvalidClaim


@dataclass(frozen=True, slots=True)
class FileConflict:
    """Two intended claims of different applications that overlap."""

    first: ClaimSpec
    second: ClaimSpec

    def __str__(self) -> str:
        return f"{_describe(self.first)} overlaps {_describe(self.second)}"


def _describe(spec: ClaimSpec) -> str:
    scope = f"company {spec.company}" if spec.company else "all companies"
    return f"{spec.app} {spec.pattern} ({scope})"


def load_claims_file(path: Path) -> list[ClaimSpec]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) file of intended claims."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidClaim(f"cannot read {path}: {error.strerror}") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise InvalidClaim(f"{path}: use a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        first_line = str(error).splitlines()[0]
        raise InvalidClaim(f"{path} is not valid {path.suffix[1:].upper()}: {first_line}") from None
    entries = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InvalidClaim(f"{path}: expected a list named 'claims'")
    specs: list[ClaimSpec] = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise InvalidClaim(f"{path}: claim {number} is not a table/mapping")
        events = entry.get("events", entry.get("event"))
        if isinstance(events, str):
            events = [events]
        if not isinstance(events, list) or not events:
            raise InvalidClaim(f"{path}: claim {number} has no 'events'")
        app, company = entry.get("app"), entry.get("company")
        if not isinstance(app, str):
            raise InvalidClaim(f"{path}: claim {number} has no 'app'")
        for pattern in events:
            try:
                specs.append(ClaimSpec.parse(app, str(pattern), company))
            except InvalidClaim as error:
                raise InvalidClaim(f"{path}: claim {number}: {error}") from None
    return specs


def find_conflicts(specs: list[ClaimSpec]) -> list[FileConflict]:
    """Every pair of intended claims of different applications that overlap."""
    return [FileConflict(a, b) for a, b in combinations(specs, 2) if a.conflicts_with(b)]


__all__ = ["FileConflict", "find_conflicts", "load_claims_file"]
