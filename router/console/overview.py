"""What the overview shows, gathered at once: the ingress's readiness, the broker's nodes and
alarms, and per application its queues (depth, consumers, rates, retry tiers, the dead letters
waiting for the keeper) and its parked events; then unrouted and invalid events.

Each source may fail on its own (the broker down, the database down, the ingress not
answering): the overview then says so in that part and still shows the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
import orjson

from router.claims.service import ClaimsService
from router.console.broker import BrokerLook, BrokerView, QueueLook
from router.contract.names import Names
from router.errors import RouterError
from router.parked.jobs import JobState
from router.parked.model import Place
from router.parked.places import parking_places
from router.parked.store import ParkedStore, ParkedStoreError
from router.settings import Settings

#: Seconds the readiness probe of the ingress may take.
PROBE_TIMEOUT = 2.0
_UNROUTED = (Place.UNROUTED, None)
_INVALID = (Place.INVALID, None)


@dataclass(frozen=True, slots=True)
class Readiness:
    """The ingress's ``/readyz``: ready, or why not."""

    ready: bool
    said: str


@dataclass(frozen=True, slots=True)
class Parked:
    """Parked events of one place: how many, and since when the oldest waits."""

    count: int = 0
    oldest: datetime | None = None


@dataclass(frozen=True, slots=True)
class AppRow:
    """One application: its queue, its retry tiers, its landing zone and its parked events."""

    app: str
    queue: QueueLook | None
    retries: tuple[QueueLook, ...]
    landing: QueueLook | None
    parked: Parked


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page shows (``store_error``: why parked counts are missing)."""

    readiness: Readiness
    broker: BrokerLook
    apps: tuple[AppRow, ...]
    unrouted: tuple[QueueLook | None, Parked]
    invalid: tuple[QueueLook | None, Parked]
    store_error: str | None = None
    running_jobs: int = 0
    notes: tuple[str, ...] = field(default=())


async def gather(
    settings: Settings,
    broker: BrokerView,
    claims: ClaimsService,
    store: ParkedStore | None,
    *,
    store_error: str | None = None,
) -> Overview:
    """The overview now: ``store`` is the opened parked-event store (None: it could not be
    opened, and ``store_error`` says so)."""
    names = settings.names
    parked: dict[tuple[Place, str | None], Parked] = {}
    running = 0
    if store is not None:
        try:
            parked, running = await _parked(store)
        except ParkedStoreError:
            store_error = "the parked-event database is unavailable"
    try:
        apps = sorted({claim.app for claim in await claims.list(None)} | _dlq_apps(parked))
    except RouterError:
        apps = sorted(_dlq_apps(parked))
    prefixes = [names.app_retry_exchange(app) + "." for app in apps]
    readiness, look = await asyncio.gather(
        _readiness(settings), broker.look(_queue_names(names, apps), prefixes)
    )
    rows = tuple(
        AppRow(
            app,
            look.queues.get(names.app_queue(app)),
            _retries(look.queues, names.app_retry_exchange(app) + "."),
            look.queues.get(names.app_dead_letter_queue(app)),
            parked.get((Place.DLQ, app), Parked()),
        )
        for app in apps
    )
    return Overview(
        readiness=readiness,
        broker=look,
        apps=rows,
        unrouted=(
            look.queues.get(names.unrouted_queue),
            parked.get((Place.UNROUTED, None), Parked()),
        ),
        invalid=(look.queues.get(names.invalid_queue), parked.get((Place.INVALID, None), Parked())),
        store_error=store_error,
        running_jobs=running,
    )


async def _parked(store: ParkedStore) -> tuple[dict[tuple[Place, str | None], Parked], int]:
    """Parked counts and oldest per place (reasons summed), and how many jobs run now."""
    places, running = await asyncio.gather(store.places(), store.jobs(JobState.RUNNING, 100))
    counts = {
        (place.place, place.app): Parked(place.count, place.oldest_parked_at)
        for place in parking_places(places)
    }
    return counts, len(running)


def _dlq_apps(parked: Mapping[tuple[Place, str | None], Parked]) -> set[str]:
    return {app for place, app in parked if place is Place.DLQ and app}


def _retries(queues: Mapping[str, QueueLook], prefix: str) -> tuple[QueueLook, ...]:
    """The retry tiers' queues, shortest delay first."""
    tiers = [look for name, look in queues.items() if name.startswith(prefix)]
    return tuple(sorted(tiers, key=lambda look: _delay_ms(look.name)))


def _delay_ms(name: str) -> int:
    tail = name.rsplit(".", 1)[-1].removesuffix("ms")
    return int(tail) if tail.isdigit() else 0


async def _readiness(settings: Settings) -> Readiness:
    """Ask the ingress's internal listener, as a probe does."""
    host = settings.internal_host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    url = f"http://{host}:{settings.internal_port}/readyz"
    try:
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as response,
        ):
            said = _said(await response.read()) or response.reason or ""
            return Readiness(response.status == 200, said)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return Readiness(False, f"the ingress does not answer on {host}:{settings.internal_port}")


def _said(body: bytes) -> str:
    """What ``/readyz`` says, in words: its JSON's connection and flow-control state."""
    try:
        state = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    if not isinstance(state, dict):
        return ""
    words = ["connected to RabbitMQ" if state.get("connected") else "not connected to RabbitMQ"]
    if state.get("blocked"):
        words.append("RabbitMQ blocks its publishing (a resource alarm)")
    return "; ".join(words)


def _queue_names(names: Names, apps: Iterable[str]) -> Sequence[str]:
    """The queues the overview looks at, for ``apps``."""
    wanted = [names.unrouted_queue, names.invalid_queue]
    for app in apps:
        wanted += [names.app_queue(app), names.app_dead_letter_queue(app)]
    return wanted


__all__ = ["AppRow", "Overview", "Parked", "Readiness", "gather"]
