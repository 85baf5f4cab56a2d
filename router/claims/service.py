"""Granting and releasing claims, with the broker's bindings kept in step.

The store decides (atomically); the bindings follow. On grant the claim is stored first and
then bound: if RabbitMQ is down the caller is told, events meanwhile land in
``attentive.unrouted`` (never lost), and asking again (a no-op grant) or the next
:meth:`ClaimsService.sync` binds it. On release the binding goes first and the claim second,
so a failure never leaves a binding without its claim.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import structlog

from router.claims.bindings import Bindings
from router.claims.model import Claim, ClaimSpec
from router.claims.store import ClaimStore, Granted, Refused

log = structlog.get_logger("router.claims")


class ClaimsService:
    """The claim registry: the one way claims (and so bindings) change."""

    def __init__(self, store: ClaimStore, bindings: Bindings) -> None:
        self.store = store
        self._bindings = bindings

    async def list(self, app: str | None = None) -> list[Claim]:
        return await self.store.list(app)

    async def claim(self, wanted: Sequence[ClaimSpec]) -> Granted | Refused:
        """Grant all of ``wanted`` or none, then bind what was granted.

        Raises :class:`~router.claims.bindings.BrokerUnavailable` when granted but not bound.
        """
        outcome = await self.store.grant(wanted)
        match outcome:
            case Refused(conflicts=conflicts):
                log.warning(
                    "claim_refused",
                    wanted=[f"{c.wanted.app}:{c.wanted.pattern}" for c in conflicts],
                    held_by=sorted({c.held.app for c in conflicts}),
                )
            case Granted(claims=claims, created=created):
                by_app: dict[str, set[str]] = defaultdict(set)
                for claim in claims:
                    by_app[claim.app].add(claim.binding_key)
                await self._bindings.apply(dict(by_app), {})
                for claim in created:
                    log.info("claim_granted", claim=claim.to_json())
        return outcome

    async def release(self, claim_id: int) -> Claim | None:
        """Unbind a claim's routing key (unless another claim of its app needs it), delete it."""
        claims = await self.store.list()
        claim = next((c for c in claims if c.id == claim_id), None)
        if claim is None:
            return None
        still_needed = any(
            c.app == claim.app and c.id != claim.id and c.binding_key == claim.binding_key
            for c in claims
        )
        if not still_needed:
            await self._bindings.unbind(claim.app, [claim.binding_key])
        removed = await self.store.remove(claim_id)
        if removed is not None:
            log.info("claim_released", claim=removed.to_json())
        return removed

    async def sync(self) -> int:
        """Bind every stored claim (at start-up); the number of bindings made sure of."""
        by_app: dict[str, set[str]] = defaultdict(set)
        for claim in await self.store.list():
            by_app[claim.app].add(claim.binding_key)
        await self._bindings.apply(dict(by_app), {})
        count = sum(len(keys) for keys in by_app.values())
        log.info("claims_synced", applications=len(by_app), bindings=count)
        return count


__all__ = ["ClaimsService"]
