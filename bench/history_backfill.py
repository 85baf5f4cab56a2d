"""The backfill of phase k (:mod:`bench.history_phase`): a window of the archive published
again, as a job, to one application's queue, against a bare publisher publishing the same
messages there, in the same run.

The application :data:`APP` claims every event; its queue (a quorum queue, as every
application's) is declared with its requeue exchange, the fanout a backfill publishes to. The
backfill is what ``attentive-router history replay --since T --to-app APP`` and the admin API
ask for: :func:`router.history.backfill.request_backfill` (it reads the window once to count
what it will publish: reported apart, as "planned"), then the job run by a
:class:`router.parked.runner.JobRunner` (the keeper's, default window of confirms), its jobs in
a SQLite store of its own. The bare publisher is the router's own confirming publisher with the
same window, publishing the archive's messages to the same exchange: once before the job and
once after (the ratio is to their mean, as phase h's replay). The queue is purged after each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika

from bench.common import AMQP_URL, BenchError, purge
from bench.history_archive import ArchivedMessages, fill
from router.amqp import topology
from router.amqp.publisher import ConfirmPublisher
from router.claims.model import Claim, EventPattern
from router.contract.names import Names
from router.history.backfill import request_backfill
from router.history.search import Search
from router.parked.jobs import JobState
from router.parked.replay import DEFAULT_WINDOW
from router.parked.runner import JobRunner
from router.parked.sqlite import SqliteParkedStore

#: The application the backfill goes to; it claims every event.
APP = "bench-backfill"
CLAIMS = (Claim(APP, EventPattern.parse("*")),)


async def claims_of(app: str) -> Sequence[Claim]:
    """The claims the runner reads while the job runs: :data:`APP`'s."""
    return [claim for claim in CLAIMS if claim.app == app]


async def declare(names: Names) -> None:
    """The application's queue and its requeue exchange (no dead-letter queue: nothing fails
    here)."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await topology.declare_app_queue(channel, names, APP, with_dead_letter_queue=False)


async def bare(
    names: Names, messages: ArchivedMessages, count: int, pause: float
) -> dict[str, Any]:
    """The bare publisher: the first ``count`` archived messages to the application's requeue
    exchange, confirmed, the job's window outstanding; then the queue is emptied."""
    publisher = await ConfirmPublisher.open(
        AMQP_URL, name="bench backfill, bare", confirm_timeout=120.0, timeout=10.0
    )
    try:
        exchange = names.app_requeue_exchange(APP)
        published = await fill(publisher, exchange, messages, range(count), DEFAULT_WINDOW)
    finally:
        await publisher.close()
    await _settle(names, pause)
    return published


async def backfill(
    names: Names, since: datetime, count: int, workdir: Path, pause: float
) -> dict[str, Any]:
    """The backfill of the archive from ``since`` (``count`` events) to :data:`APP`: planned,
    then run as a job; then the queue is emptied."""
    store = SqliteParkedStore(workdir / "backfill-jobs.db")
    await store.open()
    try:
        await store.upgrade()
        connection = await aio_pika.connect(AMQP_URL, timeout=10)
        async with connection:
            started = time.perf_counter()
            request, plan = await request_backfill(
                connection, names, Search(since=since), APP, CLAIMS, "bench"
            )
            planned = time.perf_counter() - started
        if plan.matched != count:
            raise BenchError(f"the backfill's window holds {plan.matched} events, not {count}")
        job = await store.create_job(request)
        runner = JobRunner(store, AMQP_URL, names, claims_of=claims_of)
        try:
            started = time.perf_counter()
            ended = await runner.run_job(job.id)
            took = time.perf_counter() - started
        finally:
            await runner.close()
    finally:
        await store.close()
    if ended is None or ended.state is not JobState.DONE or ended.done != count:
        raise BenchError(f"the backfill job ended {ended}, not done with {count}")
    await _settle(names, pause)
    return {
        "messages": count,
        "seconds": round(took, 3),
        "msgs_per_s": round(count / took),
        "planned_seconds": round(planned, 3),
        "window": DEFAULT_WINDOW,
    }


async def measure(
    names: Names,
    messages: ArchivedMessages,
    since: datetime,
    count: int,
    *,
    workdir: Path,
    pause: float,
) -> dict[str, Any]:
    """The bare publisher, the backfill, the bare publisher again (``pause`` seconds after
    each, for the broker to finish with the purged queue, as phase h does); the backfill's
    rate over the bare publisher's mean."""
    await declare(names)
    runs = [await bare(names, messages, count, pause)]
    job = await backfill(names, since, count, workdir, pause)
    runs.append(await bare(names, messages, count, pause))
    rates = [run["msgs_per_s"] for run in runs]
    mean = sum(rates) / len(rates)
    return {
        **job,
        "bare_msgs_per_s": round(mean),
        "bare_runs": rates,
        "ratio": round(job["msgs_per_s"] / mean, 3),
    }


async def _settle(names: Names, pause: float) -> None:
    """Empty the application's queue and give the broker ``pause`` seconds."""
    await purge(names.app_queue(APP))
    await asyncio.sleep(pause)


__all__ = ["APP", "measure"]
