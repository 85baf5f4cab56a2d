"""Pausing and resuming applications by hand, and what the router shows of each.

A pause is stored first (so it holds across restarts, and a worker that starts, or reconnects,
asks for it), then told to every running replica with a control message the broker confirms,
then audited. A broker that cannot be reached does not fail the pause: it is stored, each
worker finds it at its next look at ``GET /admin/apps/{app}``, and the outcome says the
replicas were not told. Pausing a paused application or resuming a running one changes
nothing and audits nothing, but the message is sent again: a replica that missed the first
hears it now.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from router.apps import broker
from router.apps.model import AppState, AppStatus, check_app, check_reason
from router.apps.store import AppStateStore, Change
from router.contract.control import ControlKind, ControlMessage
from router.contract.names import Names
from router.errors import RouterError
from router.parked.jobs import AuditAction, AuditRecord

log = structlog.get_logger("router.apps")

#: Seconds a look at the broker, or a control message's confirm, may take.
DEFAULT_TIMEOUT = 5.0

#: Writes one audit record (the parked-event store's audit log).
Audit = Callable[[AuditRecord], Awaitable[object]]
#: The applications that hold claims.
KnownApps = Callable[[], Awaitable[Iterable[str]]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a pause or a resume did: the application's status after it, whether it changed
    anything, whether the broker confirmed the control message, and what went wrong beside."""

    status: AppStatus
    changed: bool
    notified: bool
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        answer = {**self.status.to_json(), "changed": self.changed, "notified": self.notified}
        if self.warnings:
            answer["warning"] = "; ".join(self.warnings)
        return answer


class AppsService:
    """The applications' paused state (in ``store``), their breakers and queues (at the broker
    of ``amqp_url``), and the one way to pause and resume them."""

    def __init__(
        self,
        store: AppStateStore,
        amqp_url: str,
        names: Names,
        *,
        known_apps: KnownApps,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.store = store
        self._amqp_url = amqp_url
        self._names = names
        self._known_apps = known_apps
        self._timeout = timeout

    async def list(self) -> builtins.list[AppStatus]:
        """Every application that holds a claim or was ever paused, by name."""
        states = {state.app: state for state in await self.store.list()}
        for app in await self._known_apps():
            states.setdefault(app, AppState(app))
        return await self._with_broker([states[app] for app in sorted(states)])

    async def status(self, app: str) -> AppStatus:
        """One application's status (running, when it was never paused)."""
        state = await self.store.get(check_app(app))
        return (await self._with_broker([state]))[0]

    async def pause(
        self, app: str, *, by: str, reason: object = "", audit: Audit | None = None
    ) -> Outcome:
        """Pause ``app`` (:class:`~router.errors.InvalidInput` for a bad name or reason)."""
        return await self._change(app, True, by, check_reason(reason), audit)

    async def resume(self, app: str, *, by: str, audit: Audit | None = None) -> Outcome:
        """Resume ``app``; a no-op (``changed`` False) when it was not paused."""
        return await self._change(app, False, by, "", audit)

    async def _change(
        self, app: str, paused: bool, by: str, reason: str, audit: Audit | None
    ) -> Outcome:
        now = datetime.now(UTC)
        change = await self.store.change(
            check_app(app), paused=paused, by=by, reason=reason, at=now
        )
        kind = ControlKind.PAUSE if paused else ControlKind.RESUME
        warnings: builtins.list[str] = []
        notified = await self._notify(ControlMessage(kind, app, by, reason, now), warnings)
        if change.changed:
            log.warning(
                f"app_{'paused' if paused else 'resumed'}",
                app=app,
                by=by,
                reason=reason,
                notified=notified,
            )
            if audit is not None:
                await _audited(audit, change, notified, warnings)
        status = (await self._with_broker([change.after]))[0]
        return Outcome(status, change.changed, notified, tuple(warnings))

    async def _notify(self, message: ControlMessage, warnings: builtins.list[str]) -> bool:
        try:
            await broker.publish(self._amqp_url, self._names, message, timeout=self._timeout)
        except broker.NotNotified as error:
            log.warning(
                "app_control_not_confirmed",
                app=message.app,
                kind=message.kind.value,
                error=str(error),
            )
            warnings.append(
                "RabbitMQ could not be told: the change is stored, and each replica takes it "
                "at its next look at the router (at start, or when it reconnects)"
            )
            return False
        return True

    async def _with_broker(self, states: builtins.list[AppState]) -> builtins.list[AppStatus]:
        looks = await broker.look(
            self._amqp_url, self._names, (s.app for s in states), timeout=self._timeout
        )
        return [AppStatus(state, *looks[state.app]) for state in states]


async def _audited(
    audit: Audit, change: Change, notified: bool, warnings: builtins.list[str]
) -> None:
    """Record a change in the audit log; a log that cannot be written is a warning: the
    change is made and stored."""
    after = change.after
    what = {"application": after.app, **({"reason": after.reason} if after.reason else {})}
    record = AuditRecord(
        at=after.since or datetime.now(UTC),
        who=after.by,
        action=AuditAction.PAUSE if after.paused else AuditAction.RESUME,
        filter=what,
        counts={"notified": notified},
    )
    try:
        await audit(record)
    except RouterError as error:  # the audit log's database is down
        log.warning("app_audit_failed", app=after.app, error=str(error))
        warnings.append("the audit log could not be written")


__all__ = ["DEFAULT_TIMEOUT", "AppsService", "Audit", "KnownApps", "Outcome"]
