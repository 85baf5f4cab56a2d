"""Where the messages a job publishes come from: a :class:`Source` gives them as
:class:`Outgoing` (where to, and what, the properties encoded once), in batches.

A replay's are its parked entries (:class:`ParkedSource`), each going back to where it came
from: a DLQ entry to its application's requeue exchange (a fanout into the application's
queue, as expired retries go), an unrouted entry to the events exchange with its routing key,
so that whoever owns its type now gets it. A backfill's come from the archive
(:class:`router.history.backfill.ArchiveSource`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from pamqp.commands import Basic

from router.amqp.properties import EncodedProperties, encode
from router.contract import envelope
from router.contract.names import Names
from router.errors import InvalidInput
from router.parked.jobs import Job
from router.parked.model import ParkedEvent, Place
from router.parked.store import ParkedStore


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of a job as it goes out: its place in the job (an entry id, or an
    archive offset + 1), where to, and what (the properties encoded once)."""

    id: int
    #: None: it has nowhere to go (it fails, and stays where it was).
    exchange: str | None
    routing_key: str
    body: bytes
    properties: EncodedProperties


class Source(Protocol):
    """Where a job's messages come from: batches in ascending :attr:`Outgoing.id`, after
    the job's ``last_id``, each batch read while the one before goes out."""

    def batches(self, job: Job, size: int) -> AsyncGenerator[Sequence[Outgoing], None]: ...


def outgoing(names: Names, entry: ParkedEvent) -> Outgoing:
    """A parked entry as its replay publishes it."""
    assert entry.id is not None
    try:
        exchange: str | None
        exchange, routing_key = destination(names, entry)
    except InvalidInput:
        exchange, routing_key = None, entry.routing_key
    properties = encode(replayed_properties(entry))
    return Outgoing(entry.id, exchange, routing_key, entry.body, properties)


@dataclass(frozen=True, slots=True)
class ParkedSource:
    """A replay's entries, from the parked-event store: the next batch is fetched while the
    current one goes out."""

    store: ParkedStore
    names: Names

    async def batches(self, job: Job, size: int) -> AsyncGenerator[Sequence[Outgoing], None]:
        fetching: asyncio.Task[list[ParkedEvent]] | None = asyncio.create_task(
            self.store.job_batch(job, job.last_id, size)
        )
        try:
            while fetching is not None:
                batch = await fetching
                fetching = None
                if len(batch) == size:
                    after = batch[-1].id or 0
                    fetching = asyncio.create_task(self.store.job_batch(job, after, size))
                yield [outgoing(self.names, entry) for entry in batch]
        finally:
            if fetching is not None:
                fetching.cancel()
                with contextlib.suppress(BaseException):
                    await fetching


def destination(names: Names, entry: ParkedEvent) -> tuple[str, str]:
    """The exchange and routing key a replay of ``entry`` is published with."""
    if entry.place is Place.DLQ and entry.app:
        return names.app_requeue_exchange(entry.app), entry.routing_key
    if entry.place is Place.UNROUTED:
        return names.events_exchange, entry.routing_key
    raise InvalidInput(f"entry {entry.id} ({entry.place.value}) cannot be replayed", field="place")


def replayed_properties(entry: ParkedEvent) -> Basic.Properties:
    """``entry``'s properties as they go out again: the same, the headers as replayed."""
    properties = replace(entry.properties, headers=envelope.replayed(entry.headers))
    return properties.as_amqp()


__all__ = [
    "Outgoing",
    "ParkedSource",
    "Source",
    "destination",
    "outgoing",
    "replayed_properties",
]
