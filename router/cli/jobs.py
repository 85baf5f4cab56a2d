"""The ``attentive-router jobs list | show | cancel | audit`` commands: replay and purge jobs,
read and cancelled in the parked-event store itself, and its audit log (``ROUTER_DATABASE_URL`` or
``--database-url``), so they work while no router runs.

Exit codes: 0 done, 1 not found, refused (the job already finished) or the store is
unreachable, 2 wrong usage.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from router.cli import output
from router.cli.deadletters import who
from router.parked.jobs import AuditRecord, Job, JobState
from router.parked.open import parked_store_from_url
from router.parked.store import ParkedStore
from router.settings import Settings

#: How many jobs ``jobs list`` shows unless asked otherwise.
DEFAULT_LIST = 20


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``jobs list | show | cancel | audit`` to ``commands`` (argparse's subparsers)."""
    jobs = commands.add_parser("jobs", help="replay and purge jobs (the parked-event store)")
    jobs.set_defaults(run=run)
    sub = jobs.add_subparsers(dest="jobs_command", required=True, parser_class=parser_class)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--database-url", help="the store (ROUTER_DATABASE_URL)")
        parser.add_argument("--json", action="store_true", help="JSON output for scripts")

    listing = sub.add_parser("list", help="the latest jobs, newest first")
    listing.add_argument("--state", choices=[state.value for state in JobState])
    listing.add_argument("--limit", type=int, default=DEFAULT_LIST, help="at most this many")
    common(listing)
    show = sub.add_parser("show", help="one job: its filter, progress, rate and ETA")
    show.add_argument("id", type=int)
    common(show)
    cancel = sub.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("id", type=int)
    cancel.add_argument("--by", help="who cancels, for the audit log (default: cli:<your login>)")
    common(cancel)
    audit = sub.add_parser("audit", help="the audit log: replays, purges, cancels and reveals")
    audit.add_argument("--job", type=int, help="only this job's records")
    audit.add_argument("--limit", type=int, default=DEFAULT_LIST, help="at most this many")
    common(audit)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``jobs`` subcommand; the exit code (errors raise, for main to report)."""
    settings = Settings.from_env(env, database_url=args.database_url)
    store = parked_store_from_url(settings.database_url.reveal())
    return asyncio.run(_call(args, store))


async def _call(args: argparse.Namespace, store: ParkedStore) -> int:
    await store.open()
    try:
        now = datetime.now(UTC)
        match args.jobs_command:
            case "list":
                state = None if args.state is None else JobState(args.state)
                _print_jobs(await store.jobs(state, args.limit), now, as_json=args.json)
            case "show":
                _print_job(await store.job(args.id), now, as_json=args.json)
            case "cancel":
                job = await store.cancel_job(args.id, args.by or who())
                if args.json:
                    output.print_json({"job": job.to_json(now)})
                else:
                    output.print_line(
                        f"job {job.id} ({job.kind.value}) cancelled by {job.cancelled_by}: "
                        f"{job.done} done, {job.failed} failed of {job.matched}"
                    )
            case "audit":
                _print_audit(await store.audit(args.job, args.limit), as_json=args.json)
            case _:  # pragma: no cover
                raise AssertionError(args.jobs_command)
        return 0
    finally:
        await store.close()


def _print_jobs(jobs: list[Job], now: datetime, *, as_json: bool) -> None:
    if as_json:
        output.print_json({"jobs": [job.to_json(now) for job in jobs]})
        return
    output.print_table(
        ["ID", "KIND", "STATE", "MATCHED", "DONE", "FAILED", "BY", "CREATED"],
        (
            [
                str(job.id),
                job.kind.value + (" (dry run)" if job.dry_run else ""),
                job.state.value,
                str(job.matched),
                str(job.done),
                str(job.failed),
                job.requested_by,
                output.dash(_when(job.created_at)),
            ]
            for job in jobs
        ),
        right={0, 3, 4, 5},
    )


def _print_job(job: Job, now: datetime, *, as_json: bool) -> None:
    if as_json:
        output.print_json({"job": job.to_json(now)})
        return
    rate = job.per_second(now)
    eta = job.eta(now)
    output.print_fields(
        [
            ("job", job.id),
            ("kind", job.kind.value + (" (dry run: only counts)" if job.dry_run else "")),
            ("state", job.state.value),
            ("filter", output.to_json(job.to_json()["query"])),
            ("limit", job.limit),
            ("rate limit", None if job.rate is None else f"{job.rate:g}/s"),
            ("requested by", job.requested_by),
            ("created", _when(job.created_at)),
            ("progress", f"{job.handled} of {job.matched} ({job.fraction:.0%})"),
            ("done", job.done),
            ("failed", job.failed),
            ("rate", None if rate is None else f"{rate:.1f}/s"),
            ("eta", None if eta is None else f"{eta.total_seconds():.0f} s"),
            ("runner", job.lease_owner),
            ("last error", job.last_error),
            ("finished", _when(job.finished_at)),
            ("cancelled by", job.cancelled_by),
        ]
    )


def _print_audit(records: list[AuditRecord], *, as_json: bool) -> None:
    if as_json:
        output.print_json({"audit": [record.to_json() for record in records]})
        return
    output.print_table(
        ["AT", "WHO", "ACTION", "JOB", "FILTER", "COUNTS"],
        (
            [
                output.dash(_when(record.at)),
                record.who,
                record.action.value,
                output.dash(record.job_id),
                output.to_json(dict(record.filter)),
                output.to_json(dict(record.counts)),
            ]
            for record in records
        ),
        right={3},
    )


def _when(stamp: datetime | None) -> str | None:
    return None if stamp is None else stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


__all__ = ["DEFAULT_LIST", "add_commands", "run"]
