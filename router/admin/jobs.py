"""The admin API's job routes: the replay and purge jobs in the parked-event store.

    GET  /admin/jobs[?state=&limit=&before=] the jobs, newest first (any token)
    GET  /admin/jobs/{id}                    one job: state, progress, rate, ETA (any token)
    GET  /admin/audit[?job=&limit=&before=]  the audit log, newest first (any token)
    POST /admin/jobs/{id}/cancel             cancel it: it stops at its next batch (operator)

Jobs are created by ``POST /admin/{dlq/APP|unrouted|invalid}/{replay|purge}``
(:mod:`router.admin.deadletters`) and run by any keeper; a cancel records who asked.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import structlog
from aiohttp import web

from router.admin.deadletters import store_of, unavailable_as_503
from router.admin.openapi import add_route
from router.admin.responses import json_response
from router.admin.schemas_routes import CANCEL_JOB, LIST_AUDIT, LIST_JOBS, SHOW_JOB
from router.admin.tokens import caller, operator_only
from router.errors import InvalidInput, NotFound
from router.parked.jobs import JobState

log = structlog.get_logger("router.admin.jobs")

#: How many jobs a list shows unless asked otherwise (the store serves at most 1000).
DEFAULT_JOBS = 50
#: Ids are 64-bit: a longer run of digits names no job.
_MAX_ID_DIGITS = 18
_DIGITS = re.compile(r"[0-9]+")


def add_job_routes(app: web.Application) -> None:
    """Add the job routes to the admin ``app`` (its store comes from the parked-event routes)."""
    add_route(app, "GET", "/admin/jobs", unavailable_as_503(list_jobs), LIST_JOBS)
    add_route(app, "GET", "/admin/jobs/{id}", unavailable_as_503(show_job), SHOW_JOB)
    add_route(app, "GET", "/admin/audit", unavailable_as_503(list_audit), LIST_AUDIT)
    cancel = operator_only("cancel jobs")(unavailable_as_503(cancel_job))
    add_route(app, "POST", "/admin/jobs/{id}/cancel", cancel, CANCEL_JOB)


async def list_jobs(request: web.Request) -> web.Response:
    """GET /admin/jobs[?state=&limit=&before=]: the jobs, newest first (older than job
    ``before``)."""
    unknown = set(request.query) - LIST_JOBS.query_names()
    if unknown:
        raise InvalidInput(f"unknown query parameter {sorted(unknown)[0]!r}")
    state = _state(request.query.get("state"))
    limit = _number(request.query.get("limit"), "limit", DEFAULT_JOBS)
    before = request.query.get("before")
    older = None if not before else _number(before, "before", 0)
    jobs = await (await store_of(request)).jobs(state, limit, older)
    now = datetime.now(UTC)
    return json_response({"jobs": [job.to_json(now) for job in jobs]})


async def list_audit(request: web.Request) -> web.Response:
    """GET /admin/audit[?job=&limit=&before=]: replays, purges, cancels and reveals, newest
    first (of job ``job``; older than record ``before``)."""
    unknown = set(request.query) - LIST_AUDIT.query_names()
    if unknown:
        raise InvalidInput(f"unknown query parameter {sorted(unknown)[0]!r}")
    job = request.query.get("job")
    limit = _number(request.query.get("limit"), "limit", DEFAULT_JOBS)
    before = request.query.get("before")
    records = await (await store_of(request)).audit(
        None if not job else _number(job, "job", 0),
        limit,
        None if not before else _number(before, "before", 0),
    )
    return json_response({"audit": [record.to_json() for record in records]})


async def show_job(request: web.Request) -> web.Response:
    """GET /admin/jobs/{id}: the job, with its rate and ETA so far; 404 when there is none."""
    job = await (await store_of(request)).job(_job_id(request))
    return json_response(job.to_json(datetime.now(UTC)))


async def cancel_job(request: web.Request) -> web.Response:
    """POST /admin/jobs/{id}/cancel: the job, cancelled (it stops at its next batch); 409 when
    it finished already."""
    who = caller(request).name
    job = await (await store_of(request)).cancel_job(_job_id(request), who)
    log.info("parked_job_cancel", job_id=job.id, state=job.state.value, by=who)
    return json_response(job.to_json(datetime.now(UTC)))


def _job_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not _DIGITS.fullmatch(raw):
        raise InvalidInput("a job id is a number")
    if len(raw) > _MAX_ID_DIGITS:
        raise NotFound(f"no job {raw}")
    return int(raw)


def _state(raw: str | None) -> JobState | None:
    if not raw:
        return None
    try:
        return JobState(raw)
    except ValueError:
        accepted = ", ".join(state.value for state in JobState)
        raise InvalidInput(f"must be one of {accepted}, not {raw!r}", field="state") from None


def _number(raw: str | None, name: str, default: int) -> int:
    if not raw:
        return default
    if not _DIGITS.fullmatch(raw) or len(raw) > _MAX_ID_DIGITS:
        raise InvalidInput(f"must be a whole number, not {raw!r}", field=name)
    return int(raw)


__all__ = ["DEFAULT_JOBS", "add_job_routes"]
