"""A job a command made, seen to its end: said (or printed and left to a keeper with
``--detach``), run here with a progress bar (rate, ETA) unless a keeper took it first, and
its ending printed with the command's exit code. Ctrl-C gives the job back to a keeper, which
resumes it. Used by ``dlq|unrouted|invalid replay|purge`` and ``history replay``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from datetime import UTC, datetime

from router.cli import output
from router.errors import RouterError
from router.history.backfill import ClaimsOf
from router.parked.jobs import Job, JobState
from router.parked.runner import JobRunner
from router.parked.store import ParkedStore
from router.settings import Settings

#: Seconds between two looks at a job's progress.
FOLLOW_INTERVAL = 0.25


def detached(job: Job, said: str, args: argparse.Namespace) -> bool:
    """Say ``said`` of a job just made; with ``--detach``, print it (or the job's record with
    ``--json``) and tell the command to end there, leaving the job to a keeper."""
    if not args.detach:
        output.note(said)
        return False
    if args.json:
        output.print_json(job.to_json())
    else:
        output.print_line(said)
    return True


def job_ended(job: Job, args: argparse.Namespace, dry_run: str) -> int:
    """Print how ``job`` ended (``dry_run`` for a dry run; its record with ``--json``); the
    exit code: 0 when it is done with nothing failed."""
    if args.json:
        output.print_json(job.to_json())
    elif job.dry_run:
        output.print_line(dry_run)
    else:
        output.print_line(
            f"job {job.id} {job.state.value}: matched {job.matched}, "
            f"{job.kind.done_word} {job.done}, failed {job.failed}"
        )
    if not job.state.finished:
        output.note(f"job {job.id} paused ({job.last_error}): a keeper resumes it")
    return 0 if job.state is JobState.DONE and not job.failed else 1


async def follow_job(
    store: ParkedStore, job: Job, settings: Settings, claims_of: ClaimsOf | None = None
) -> Job:
    """Run ``job`` here (unless a keeper took it first) and show its progress until it ends,
    or is left to a keeper (the broker went away: it is resumed from where it stopped);
    ``claims_of`` reads an application's claims, for a backfill."""
    progress = output.progress_reporter(f"{job.kind.value}.{job.id}", settings.log_format)
    runner = JobRunner(store, settings.amqp_url.reveal(), settings.names, claims_of=claims_of)
    running = asyncio.create_task(runner.run_job(job.id))
    try:
        while True:
            job = await store.job(job.id)
            now = datetime.now(UTC)
            eta = job.eta(now)
            seconds = None if eta is None else eta.total_seconds()
            progress(job.handled, job.matched, rate=job.per_second(now), eta=seconds)
            if job.state.finished:
                return job
            if running.done() and (left := running.result()) is not None:
                return left  # paused (its lease given back): a keeper resumes it
            if running.done():  # a keeper runs it: only follow
                await asyncio.sleep(FOLLOW_INTERVAL)
            else:
                await asyncio.wait({running}, timeout=FOLLOW_INTERVAL)
    finally:
        progress.finish()
        if not running.done():  # interrupted: give the lease back, for a keeper to go on
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, RouterError):
                await running
            with contextlib.suppress(RouterError):
                await store.release_job(job.id, runner.owner, "its command was interrupted")
        await runner.close()


__all__ = ["FOLLOW_INTERVAL", "detached", "follow_job", "job_ended"]
