"""Running replay and purge jobs: take a job's lease, do it, record how it ended.

Any keeper process runs a :class:`JobRunner` (:meth:`JobRunner.run`): about every second it
takes a runnable job (queued, or running under an expired lease: its runner died) and runs
it, one at a time. :meth:`JobRunner.run_job` runs one job (a given one, or the oldest
runnable) in the caller's task, as a command that follows its job may.

- A **replay** publishes its entries (:mod:`router.parked.replay`) and marks each replayed
  after its confirm; when the broker goes away, the lease is given back with the reason and
  the job is resumed (by this runner or another) from its last recorded id.
- A **purge** marks its entries purged, a batch at a time; no broker.
- A **backfill** publishes a window of the archive stream to one application
  (:mod:`router.history.backfill`), as a replay does, reading the application's claims
  through ``claims_of``.
- A **dry run** only counts (``matched``, counted when the job was created).

A job ends ``done`` (its audit record says how many were done and failed), ``cancelled``
(seen at the next batch; the record has the counts so far) or ``failed`` (an error that
retrying cannot help: its ``last_error`` says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from aio_pika.abc import AbstractConnection

from router.amqp.nodes import connect_first, parse_urls
from router.contract.names import Names
from router.errors import InvalidInput, RouterError, Unavailable
from router.history.backfill import ArchiveSource, ClaimsOf
from router.parked.jobs import Job, JobKind, JobState
from router.parked.replay import (
    CONFIRM_TIMEOUT,
    DEFAULT_WINDOW,
    SETTLE_EVERY,
    BrokerLost,
    Pacer,
    Publisher,
    Replay,
)
from router.parked.sources import Source
from router.parked.store import ParkedStore, Settled

#: How long a runner holds a job without renewing its lease; it renews at every record.
DEFAULT_LEASE = timedelta(seconds=30)
#: How often an idle runner looks for a runnable job (seconds).
DEFAULT_POLL = 1.0
#: Entries a purge marks at a time.
PURGE_BATCH = 1000

_log = structlog.get_logger("router.jobs")


def runner_name() -> str:
    """A name no other runner has: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class JobRunner:
    """Runs jobs of ``store``, publishing replays through ``amqp_url`` with ``names``."""

    store: ParkedStore
    amqp_url: str
    names: Names
    owner: str = field(default_factory=runner_name)
    lease: timedelta = DEFAULT_LEASE
    window: int = DEFAULT_WINDOW
    #: Published and not yet marked at most (four times the window unless set): replay.py.
    unmarked: int | None = None
    poll: float = DEFAULT_POLL
    confirm_timeout: float = CONFIRM_TIMEOUT
    settle_every: float = SETTLE_EVERY
    #: Makes the pacer of a job from its rate (tests count its waits).
    pacer: Callable[[float | None], Pacer] = Pacer
    #: The claims an application holds now (backfills need it: None refuses them).
    claims_of: ClaimsOf | None = None
    _connection: AbstractConnection | None = field(default=None, init=False, repr=False)
    #: The index of the URL (node) :attr:`_connection` went to: the replay publishes there too.
    _node: int = field(default=0, init=False, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Run runnable jobs one after another until ``stop`` is set."""
        while not stop.is_set():
            try:
                job = await self.run_job()
            except Unavailable as error:  # the store is down: try again at the next poll
                _log.warning("jobs_unavailable", error=str(error))
                job = None
            except Exception:  # a defect: logged, and the loop goes on with the next job
                _log.exception("job_runner_failed", owner=self.owner)
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll)
        await self.close()

    async def run_job(self, job_id: int | None = None) -> Job | None:
        """Take the lease of ``job_id`` (or of the oldest runnable job) and run it; the job
        as it ended or was left (None when it was not runnable: another runner has it, or
        it finished). Store errors propagate (the lease then expires)."""
        job = await self.store.claim_job(self.owner, self.lease, job_id)
        if job is None:
            return None
        _log.info("job_started", job=job.id, kind=job.kind.value, owner=self.owner)
        try:
            if job.dry_run:
                ended = job
            elif job.kind is JobKind.PURGE:
                ended = await self._purge(job)
            else:
                ended = await self._replay(job)
        except BrokerLost as lost:
            await self._drop_connection()
            left = await self.store.release_job(job.id, self.owner, str(lost))
            _log.warning("job_paused", job=job.id, error=str(lost))
            return left or job
        except RouterError as error:
            if isinstance(error, Unavailable):
                raise
            return await self._end(job, JobState.FAILED, f"{type(error).__name__}: {error}")
        return await self._end(ended, None, None)

    async def close(self) -> None:
        await self._drop_connection()

    async def _end(self, job: Job, state: JobState | None, error: str | None) -> Job:
        """Finish ``job`` unless another runner holds it now."""
        if job.lease_owner != self.owner:
            return job
        if state is None:
            state = JobState.CANCELLED if job.state is JobState.CANCELLED else JobState.DONE
        finished = await self.store.finish_job(job.id, self.owner, state, error)
        ended = finished or job
        _log.info(
            "job_finished",
            job=ended.id,
            state=ended.state.value,
            matched=ended.matched,
            done=ended.done,
            failed=ended.failed,
        )
        return ended

    async def _purge(self, job: Job) -> Job:
        budget = None if job.limit is None else job.limit - job.handled
        purged = 0
        while job.state is JobState.RUNNING and job.lease_owner == self.owner:
            size = PURGE_BATCH if budget is None else min(PURGE_BATCH, budget - purged)
            batch = await self.store.job_batch(job, job.last_id, size) if size > 0 else []
            if not batch:
                break
            ids = [entry.id for entry in batch if entry.id is not None]
            job = await self.store.settle(job, self.owner, Settled(ids, 0, ids[-1]), self.lease)
            purged += len(ids)
        return job

    async def _replay(self, job: Job) -> Job:
        connection = await self._connect()
        url = parse_urls(self.amqp_url)[self._node]
        publisher = Publisher(connection, url, self.names, self.confirm_timeout)
        source: Source | None = None
        if job.kind is JobKind.BACKFILL:
            if self.claims_of is None:
                raise InvalidInput("this runner cannot read the claims a backfill needs")
            source = ArchiveSource(connection, self.names, self.claims_of)
        try:
            await publisher.open(f"attentive-router jobs {self.owner} (publishing)")
            replay = Replay(
                self.store,
                job,
                self.owner,
                publisher,
                self.lease,
                self.pacer(job.rate),
                window=self.window,
                settle_every=self.settle_every,
                unmarked=self.unmarked,
                source=source,
            )
            return await replay.run()
        finally:
            await publisher.close()

    async def _connect(self) -> AbstractConnection:
        if self._connection is None or self._connection.is_closed:
            try:
                self._connection, self._node = await connect_first(
                    self.amqp_url, name=f"attentive-router jobs {self.owner}"
                )
            except Unavailable as error:
                raise BrokerLost(str(error)) from None
        return self._connection

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await connection.close()


__all__ = ["DEFAULT_LEASE", "DEFAULT_POLL", "PURGE_BATCH", "JobRunner", "runner_name"]
