"""Where claims persist, and the one decision every backend makes inside its transaction.

A backend only has to lock, read and write atomically; :func:`decide` says what to write.
``router.claims.open.store_from_url(url)`` picks the backend from ``ROUTER_DATABASE_URL``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from router.claims.model import Claim, ClaimSpec
from router.errors import InvalidClaim


@dataclass(frozen=True, slots=True)
class Granted:
    """Every asked-for claim is held by its application now."""

    #: The claims asked for, as stored (already-held ones included, with their ids).
    claims: tuple[Claim, ...]
    #: Those of them that are new.
    created: tuple[Claim, ...]


@dataclass(frozen=True, slots=True)
class Conflict:
    """One asked-for claim and an existing claim of another application it overlaps."""

    wanted: ClaimSpec
    held: Claim


@dataclass(frozen=True, slots=True)
class Refused:
    """Nothing was granted: these conflicts stand in the way."""

    conflicts: tuple[Conflict, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` found: the conflicts, or which specs to insert and which are held."""

    conflicts: tuple[Conflict, ...]
    to_insert: tuple[ClaimSpec, ...]
    already_held: tuple[Claim, ...]


def decide(existing: Sequence[Claim], wanted: Sequence[ClaimSpec]) -> Decision:
    """The grant decision for ``wanted`` given every ``existing`` claim. Pure.

    All or nothing: any conflict refuses the whole request. A claim the application already
    holds is a no-op; the same spec asked twice in one request is inserted once.
    """
    conflicts = tuple(
        Conflict(spec, held) for spec in wanted for held in existing if spec.conflicts_with(held)
    )
    if any(a.conflicts_with(b) for a in wanted for b in wanted):
        raise InvalidClaim("one request asks for overlapping claims of different applications")
    to_insert: list[ClaimSpec] = []
    already: list[Claim] = []
    for spec in wanted:
        held = next((claim for claim in existing if spec.same_as(claim)), None)
        if held is not None:
            if held not in already:
                already.append(held)
        elif not any(spec.same_as(other) for other in to_insert):
            to_insert.append(spec)
    return Decision(conflicts, tuple(to_insert), tuple(already))


class ClaimStore(Protocol):
    """Persistence of claims. ``grant`` checks and inserts atomically, across processes."""

    async def open(self) -> None:
        """Connect and create the schema if it is missing."""

    async def close(self) -> None:
        """Release connections."""

    async def list(self, app: str | None = None) -> list[Claim]:
        """Every claim (of ``app``), oldest first."""

    async def grant(self, wanted: Sequence[ClaimSpec]) -> Granted | Refused:
        """Grant all of ``wanted`` or none: lock, read, :func:`decide`, insert, commit."""

    async def remove(self, claim_id: int) -> Claim | None:
        """Delete a claim; the deleted claim, or None when there was none with that id."""


__all__ = ["ClaimStore", "Conflict", "Decision", "Granted", "Refused", "decide"]
