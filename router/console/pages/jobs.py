"""The console's jobs and audit page, and each job's page with its progress, live.

    GET  /console/jobs[?before=&audit_before=]  recent replays and purges, newest first, and
                                                the audit log (replays, purges, cancels and
                                                reveals: who, when, what)
    GET  /console/jobs/{id}                     one job: what it covers, its progress and
                                                result, its audit records
    GET  /console/jobs/{id}/progress            the progress part alone, which htmx fetches
                                                every second while the job is queued or
                                                running (the fragment of an ended job stops it)
    POST /console/jobs/{id}/cancel              operator: cancel it (it stops at its next batch)

Everything is read from the parked-event store, as the admin API's job routes read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web

from router.admin.deadletters import store_of, unavailable_as_503
from router.console import guard
from router.console.filters import Filter
from router.console.keys import SETTINGS
from router.console.pages.actions import destination
from router.console.render import render
from router.errors import Conflict, InvalidInput, NotFound
from router.history.backfill import job_search
from router.parked.jobs import (
    AuditAction,
    AuditRecord,
    Job,
    JobKind,
    JobState,
)
from router.parked.query import Query, query_from_json

log = structlog.get_logger("router.console.jobs")

#: How many jobs, and how many audit records, a page shows.
PAGE_SIZE = 50
#: Ids are 64-bit: a longer run of digits names no job.
_MAX_ID_DIGITS = 18
#: What an empty audit table says, on the jobs page and on a job's.
_NO_AUDIT = (
    "Nothing recorded yet: replays, purges, cancels and reveals are listed here as they happen."
)
_NO_JOB_AUDIT = (
    "Nothing recorded for this job yet: its record is written when it ends or is cancelled."
)
#: The badge of each state.
_BADGES = {
    JobState.QUEUED: "",
    JobState.RUNNING: "warn",
    JobState.DONE: "good",
    JobState.CANCELLED: "warn",
    JobState.FAILED: "bad",
}


def add_routes(console: web.Application) -> None:
    """Add the jobs and audit page and each job's page to the console."""
    console.router.add_get("/jobs", unavailable_as_503(jobs_page))
    console.router.add_get("/jobs/{id}", unavailable_as_503(job_page))
    console.router.add_get("/jobs/{id}/progress", unavailable_as_503(job_progress))
    console.router.add_post("/jobs/{id}/cancel", unavailable_as_503(cancel_job))


async def jobs_page(request: web.Request) -> web.Response:
    """GET /console/jobs[?before=&audit_before=]: the jobs and the audit log, newest first
    (each older than the id given)."""
    before = _number(request.query.get("before"), "before")
    audit_before = _number(request.query.get("audit_before"), "audit_before")
    store = await store_of(request)
    jobs = await store.jobs(None, PAGE_SIZE, before)
    records = await store.audit(None, PAGE_SIZE, audit_before)
    context = {
        "jobs": [_view(job) for job in jobs],
        **_audit(records, _NO_AUDIT),
        "paged": before is not None or audit_before is not None,
        "older_jobs": _older(request, "before", jobs[-1].id if len(jobs) == PAGE_SIZE else None),
        "older_audit": _older(
            request, "audit_before", records[-1].id if len(records) == PAGE_SIZE else None
        ),
    }
    return render(request, "jobs.html", context)


async def job_page(request: web.Request) -> web.Response:
    """GET /console/jobs/{id}: the job, its progress (live while it runs) and its audit."""
    store = await store_of(request)
    job = await store.job(_job_id(request))
    records = await store.audit(job.id, PAGE_SIZE)
    return _job(request, job, records)


async def job_progress(request: web.Request) -> web.Response:
    """GET /console/jobs/{id}/progress: the progress fragment (polled while the job runs);
    once the job ended, htmx is also given the page's parts that change with it (no cancel,
    the audit record), to swap in place."""
    store = await store_of(request)
    job = await store.job(_job_id(request))
    live = guard.htmx(request) and job.state.finished
    records = await store.audit(job.id, PAGE_SIZE) if live else []
    context = {"view": _view(job), "live": live, **_audit(records, _NO_JOB_AUDIT)}
    return render(request, "_job_progress.html", context)


async def cancel_job(request: web.Request) -> web.StreamResponse:
    """POST /console/jobs/{id}/cancel: cancel the job and show it; when it ended already, its
    page says so (409)."""
    who = guard.require_operator(request, "cancel jobs")
    store = await store_of(request)
    job_id = _job_id(request)
    try:
        job = await store.cancel_job(job_id, who.name)
    except Conflict as error:
        job = await store.job(job_id)
        return _job(request, job, await store.audit(job_id, PAGE_SIZE), str(error), 409)
    log.info("parked_job_cancel", job_id=job.id, state=job.state.value, by=who.name)
    raise web.HTTPSeeOther(f"{guard.PREFIX}/jobs/{job.id}")


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as a page shows it: the job, how fast it goes and what is left, in words."""

    job: Job
    badge: str
    what: str
    entries_url: str
    rate: float | None
    eta: float | None

    @property
    def ended(self) -> bool:
        return self.job.state.finished


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audit record in words."""

    record: AuditRecord
    what: str
    counts: str


def _job(
    request: web.Request,
    job: Job,
    records: list[AuditRecord],
    message: str = "",
    status: int = 200,
) -> web.Response:
    names = request.config_dict[SETTINGS].names
    context: dict[str, Any] = {
        "view": _view(job),
        "destination": (
            names.app_queue(job.query.app or "")
            if job.kind is JobKind.BACKFILL
            else destination(names, job.query.place, job.query.app)
        ),
        "live": False,
        **_audit(records, _NO_JOB_AUDIT),
        "message": message,
    }
    return render(request, "job.html", context, status=status)


def _view(job: Job) -> JobView:
    now = datetime.now(UTC)
    eta = job.eta(now)
    if job.kind is JobKind.BACKFILL:
        what, url = _archive_window(job)
    else:
        chosen = _filter_of(job.query)
        what, url = chosen.describe(), chosen.url()
    return JobView(
        job=job,
        badge=_BADGES[job.state],
        what=what,
        entries_url=url,
        rate=job.per_second(now),
        eta=None if eta is None else eta.total_seconds(),
    )


def _archive_window(job: Job) -> tuple[str, str]:
    """A backfill's window and filters in words, and the history page that lists them."""
    search = job_search(job.query)
    fields = search.filters()
    words = [
        f"archived events from {fields['since']}",
        f"to {fields.get('until', 'when the job was made')}",
    ]
    words += [
        f"{name} {fields[name]}" for name in ("type", "company", "message_id") if name in fields
    ]
    return ", ".join(words), f"{guard.PREFIX}/history?{urlencode(fields)}"


def _audit(records: list[AuditRecord], empty: str) -> dict[str, Any]:
    """The audit table's context: its rows, and what it says when there are none."""
    return {"audit": [_audit_row(record) for record in records], "audit_empty": empty}


def _audit_row(record: AuditRecord) -> AuditRow:
    return AuditRow(record, _what(record), _counts(dict(record.counts)))


def _counts(counts: dict[str, Any]) -> str:
    """An audit record's counts in words: ``10 of 10 done, 0 failed (done)``."""
    if not {"matched", "done", "failed"} <= counts.keys():
        return ", ".join(f"{name} {value}" for name, value in counts.items())
    words = f"{counts['done']:,} of {counts['matched']:,} done, {counts['failed']:,} failed"
    notes = [str(counts["state"])] if "state" in counts else []
    if counts.get("dry_run"):
        notes.append("dry run")
    return f"{words} ({', '.join(notes)})" if notes else words


def _what(record: AuditRecord) -> str:
    """What an audit record is about, in words (its filter as it is, when it reads as none)."""
    found = dict(record.filter)
    if record.action is AuditAction.REVEAL:
        where = f"the dlq of {found['app']}" if found.get("app") else found.get("place", "?")
        return f"entry {found.get('entry_id')} (message {found.get('message_id')}) in {where}"
    try:
        return _filter_of(query_from_json(found)).describe()
    except (InvalidInput, KeyError):
        return ", ".join(f"{name} {value}" for name, value in sorted(found.items()))


def _filter_of(query: Query) -> Filter:
    """The console's filter of a job's query (to say it in words and link to its entries)."""
    return Filter(
        place="" if query.place is None else query.place.value,
        app=query.app or "",
        type="" if query.pattern is None else str(query.pattern),
        company=query.company or "",
        error=query.error or "",
        reason=query.reason or "",
        since="" if query.since is None else query.since.isoformat(),
        until="" if query.until is None else query.until.isoformat(),
        message_ids=tuple(sorted(query.message_ids)),
    )


def _older(request: web.Request, name: str, last: int | None) -> str:
    """The URL of the page after this one (``name`` set to ``last``), or "" for none."""
    if last is None:
        return ""
    return str(request.rel_url.update_query({name: str(last)}))


def _job_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_ID_DIGITS:
        raise NotFound(f"there is no job {raw}")
    return int(raw)


def _number(raw: str | None, name: str) -> int | None:
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_ID_DIGITS:
        raise InvalidInput(f"must be a whole number, not {raw!r}", field=name)
    return int(raw)


__all__ = ["PAGE_SIZE", "AuditRow", "JobView", "add_routes"]
