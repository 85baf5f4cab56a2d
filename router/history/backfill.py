"""Backfill: a window of the archive published again to one application, as a job.

A backfill is a job of the parked-event store's machinery (:mod:`router.parked.jobs`,
:mod:`router.parked.runner`): leased, resumable, cancellable, rate-limited, audited. What
differs is where its messages come from and where they go:

- **Planned** before it is made (:func:`request_backfill`): the window's end is fixed (events
  archived later are not its business) and the window is read once to count what it will
  publish (``matched``: events that pass the filters *and* that the application claims now).
  An application that claims none of the filters' events is refused: the one-application
  rule holds for replays too.
- **Run** (:class:`ArchiveSource`): the window is read again from where the job stopped (its
  ``last_id`` is the archive offset + 1 of the last event it handled), and each matching
  event the application still claims is published with a confirm to the application's
  requeue exchange, a fanout into its queue alone, never to ``attentive.events`` (which
  would reach every owner of the type again). The copy is byte-exact, with one more
  ``x-attentive-replay-count`` and the job in ``x-attentive-replay-job`` (the worker runtime
  counts a message id as handled per backfill job, so an event handled before is handled
  again; see :mod:`consumers.runtime.middleware`).

Claims are read again every :data:`CLAIMS_REFRESH` seconds while a job runs: a claim released
meanwhile stops the events it covered.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from aio_pika.abc import AbstractConnection
from pamqp.commands import Basic

from router.amqp.frames import PERSISTENT, Properties
from router.amqp.properties import encode, encode_router
from router.claims.model import Claim, EventPattern, companies_overlap
from router.contract import envelope
from router.contract.names import REPLAY_JOB_HEADER, Names
from router.errors import Conflict, Unavailable
from router.history.reader import Archived, lost, read_window, window_end
from router.history.search import Search
from router.parked.jobs import Job, JobKind, JobRequest
from router.parked.query import Query
from router.parked.replay import BrokerLost
from router.parked.sources import Outgoing

#: Seconds between two reads of the application's claims while a backfill runs.
CLAIMS_REFRESH = 5.0
_EVERYTHING = EventPattern.parse("*")
#: (event type, company) pairs a running backfill remembers its claims' answer for.
_COVERED_MAX = 10_000

#: The claims an application holds now.
ClaimsOf = Callable[[str], Awaitable[Sequence[Claim]]]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a backfill will publish: ``matched`` events of the window that pass the filters
    and that the application claims; ``unclaimed`` that pass the filters but belong to
    another application; the window's end (an offset, exclusive)."""

    matched: int
    unclaimed: int
    end: int


def claimed(claims: Sequence[Claim], event: Archived) -> bool:
    """Whether one of ``claims`` covers ``event`` (its type and its company)."""
    return any(
        claim.pattern.matches(event.event_type) and companies_overlap(claim.company, event.company)
        for claim in claims
    )


def job_query(search: Search, app: str) -> Query:
    """The job's record of a backfill: the window, the filters and the application."""
    return Query(
        app=app,
        pattern=search.event_type,
        company=search.company,
        since=search.since,
        until=search.until,
        state=None,
        message_ids=frozenset({search.message_id} if search.message_id else ()),
    )


def job_search(query: Query) -> Search:
    """The archive search a backfill job's query stands for."""
    assert query.since is not None
    return Search(
        since=query.since,
        until=query.until,
        event_type=query.pattern,
        company=query.company,
        message_id=next(iter(query.message_ids), None),
    )


async def plan(
    connection: AbstractConnection, names: Names, search: Search, claims: Sequence[Claim]
) -> Plan:
    """Count what a backfill of ``search`` to the holder of ``claims`` would publish now."""
    end = await window_end(connection, names, search.until)
    if end is None:
        return Plan(0, 0, 0)
    matched = unclaimed = 0
    async for event in read_window(connection, names, search.since, end):
        if not search.matches(event):
            continue
        if claimed(claims, event):
            matched += 1
        else:
            unclaimed += 1
    return Plan(matched, unclaimed, end)


async def request_backfill(
    connection: AbstractConnection,
    names: Names,
    search: Search,
    app: str,
    claims: Sequence[Claim],
    requested_by: str,
    *,
    limit: int | None = None,
    rate: float | None = None,
    dry_run: bool = False,
) -> tuple[JobRequest, Plan]:
    """A backfill of ``search`` to ``app`` (whose ``claims`` they are), counted;
    :class:`Conflict` when ``app`` claims none of the events the filters ask for."""
    wanted = search.event_type or _EVERYTHING
    if not any(
        claim.app == app
        and claim.pattern.overlaps(wanted)
        and companies_overlap(claim.company, search.company)
        for claim in claims
    ):
        company = f" of company {search.company}" if search.company else ""
        raise Conflict(
            f"{app} claims no {wanted} events{company}: a backfill goes only to the "
            "application that owns the events"
        )
    counted = await plan(connection, names, search, claims)
    request = JobRequest.build(
        JobKind.BACKFILL,
        job_query(search, app),
        requested_by,
        limit=limit,
        rate=rate,
        dry_run=dry_run,
        counted=(counted.matched, counted.end),
    )
    return request, counted


def outgoing(exchange: str, job: Job, event: Archived) -> Outgoing:
    """``event`` as a backfill publishes it: to ``exchange`` (the job's application's requeue
    exchange) only, byte-exact, one more replay counted, the job named."""
    headers = envelope.replayed(event.headers)
    headers[REPLAY_JOB_HEADER] = job.id
    if event.timestamp is not None:  # (as the ingress publishes every event)
        stamp = int(event.timestamp.timestamp())
        message_id, content_type = event.message_id, event.content_type or ""
        properties = encode_router(Properties(content_type, message_id, stamp, headers))
    else:
        properties = encode(
            Basic.Properties(
                content_type=event.content_type,
                delivery_mode=PERSISTENT,
                message_id=event.message_id or None,
                headers=headers,
            )
        )
    return Outgoing(
        event.offset + 1,
        exchange,
        event.routing_key,
        event.body,
        properties,
    )


@dataclass(frozen=True, slots=True)
class ArchiveSource:
    """A backfill's messages: the job's window of the archive from where it stopped, the
    events that match and that the application claims (read again now and then)."""

    connection: AbstractConnection
    names: Names
    claims_of: ClaimsOf

    async def batches(self, job: Job, size: int) -> AsyncGenerator[Sequence[Outgoing], None]:
        app = job.query.app
        assert app is not None
        search = job_search(job.query)
        start = job.last_id if job.last_id > 0 else search.since
        exchange = self.names.app_requeue_exchange(app)
        claims = await self.claims_of(app)
        read_at = time.monotonic()
        # whether the claims cover an (event type, company): the same few pairs, over and over
        covered: dict[tuple[str, str], bool] = {}
        batch: list[Outgoing] = []
        window = read_window(self.connection, self.names, start, job.max_id)
        try:
            async for event in window:
                if time.monotonic() - read_at >= CLAIMS_REFRESH or len(covered) > _COVERED_MAX:
                    claims, read_at = await self.claims_of(app), time.monotonic()
                    covered.clear()
                if not search.matches(event):
                    continue
                pair = (event.event_type, event.company)
                if (ours := covered.get(pair)) is None:
                    ours = covered[pair] = claimed(claims, event)
                if ours:
                    batch.append(outgoing(exchange, job, event))
                    if len(batch) >= size:
                        yield batch
                        batch = []
        except Unavailable as error:
            if self.connection.is_closed or lost(error):  # the broker went away: resume later
                raise BrokerLost(str(error)) from None
            raise
        finally:
            await window.aclose()
        if batch:
            yield batch


__all__ = [
    "CLAIMS_REFRESH",
    "ArchiveSource",
    "ClaimsOf",
    "Plan",
    "claimed",
    "job_query",
    "job_search",
    "outgoing",
    "plan",
    "request_backfill",
]
