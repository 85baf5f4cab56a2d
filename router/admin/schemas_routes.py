"""What each admin route takes and answers: its :class:`~router.admin.openapi.Operation`,
named where the route is added (``add_route(app, "GET", path, handler, LIST_CLAIMS)``).

The query parameters and body fields declared here are the ones the handlers accept: they read
their sets from these declarations (``LIST_JOBS.query_names()``) and refuse any other with 400.
"""

from __future__ import annotations

from router.admin.openapi import Answer, Operation
from router.admin.schemas import (
    APP_CHANGE,
    APP_NAME,
    APP_STATUS,
    ARCHIVED_DETAIL,
    AUDIT,
    BACKFILL_JOB,
    CLAIM,
    CONFLICTS,
    ENTRY_DETAIL,
    ERROR,
    FACETS,
    FLAG,
    FOUND,
    GRANTED,
    JOB,
    PAGE,
    PAGE_LIMIT,
    PAUSE_REASON,
    REVEAL,
    TEXT,
    Param,
    Schema,
    closed,
    listing,
    nullable,
    one_of,
)
from router.history.search import MAX_LIMIT
from router.parked.jobs import JobState

_NOT_FOUND = Answer("there is none", ERROR)
#: A moment: ISO 8601, or a span ago (router.durations.parse_moment).
_MOMENT: Schema = {"type": "string", "examples": ["1h", "2026-11-26T09:00:00Z"]}
_WHOLE_FROM_1: Schema = {"type": "integer", "minimum": 1}
_NUMBER_ABOVE_0: Schema = {"type": "number", "exclusiveMinimum": 0}
_BY_FIELD = nullable(
    {
        "type": "string",
        "pattern": "^([A-Za-z0-9][A-Za-z0-9._@:-]{0,63})?$",
        "description": "who asked, as the client knows them (recorded before the token's name)",
    }
)


def _text(name: str, description: str) -> Param:
    return Param(name, TEXT, description)


# -- claims -----------------------------------------------------------------------------------

LIST_CLAIMS = Operation(
    summary="The claims (of one application)",
    tag="claims",
    query=(Param("app", TEXT, "only this application's claims"),),
    answers={200: Answer("the claims", listing("claims", CLAIM))},
)
ADD_CLAIMS = Operation(
    summary="Claim event patterns for an application, all granted or none",
    tag="claims",
    operator=True,
    body=closed(
        {
            "app": APP_NAME,
            "events": {
                "anyOf": [TEXT, {"type": "array", "items": TEXT, "minItems": 1}],
                "description": "exact types (sms.subscribed), channels (sms.*) or *",
            },
        },
        {"company": {"type": "string", "description": "one company (omit it: all)"}},
    ),
    answers={
        200: Answer("held already: nothing new", GRANTED),
        201: Answer("granted, and bound at the broker", GRANTED),
        409: Answer("another application holds some of these events", CONFLICTS),
    },
)
REMOVE_CLAIM = Operation(
    summary="Release a claim (its binding goes; the queue stays)",
    tag="claims",
    operator=True,
    answers={204: Answer("released"), 404: _NOT_FOUND},
)

# -- applications -----------------------------------------------------------------------------

LIST_APPS = Operation(
    summary="Every application claimed, or ever paused",
    tag="apps",
    answers={200: Answer("the applications", listing("apps", APP_STATUS))},
)
SHOW_APP = Operation(
    summary="One application: paused or not, its breaker and queue",
    tag="apps",
    answers={200: Answer("the application (never paused: running)", APP_STATUS)},
)
PAUSE_APP = Operation(
    summary="Pause an application: every replica stops taking deliveries",
    tag="apps",
    operator=True,
    body=closed({}, {"reason": nullable(PAUSE_REASON), "by": _BY_FIELD}),
    body_optional=True,
    answers={200: Answer("the application, paused", APP_CHANGE)},
)
RESUME_APP = Operation(
    summary="Resume a paused application",
    tag="apps",
    operator=True,
    body=closed({}, {"by": _BY_FIELD}),
    body_optional=True,
    answers={200: Answer("the application, running", APP_CHANGE)},
)

# -- parked events ----------------------------------------------------------------------------

#: The filters of a list or facets, and of a replay's or purge's ``filter``.
FILTERS = (
    _text("type", "an event type or pattern (sms.*)"),
    _text("company", "a company id"),
    Param("message_id", {"type": "array", "items": TEXT}, "message ids (repeatable)"),
    Param("since", _MOMENT, "parked at or after (ISO 8601, or a span ago: 1h)"),
    Param("until", _MOMENT, "parked at or before (ISO 8601, or a span ago)"),
    _text("error", "a piece of the handler's error"),
    _text("reason", "why it was parked (rejected, delivery_limit, unroutable, ...)"),
)
#: A filter left out or null is not applied.
_FILTER_OBJECT = nullable(
    closed(
        {},
        {
            param.name: nullable({"anyOf": [TEXT, param.schema]})
            if param.name == "message_id"
            else nullable(TEXT)
            for param in FILTERS
        },
    )
)
LIST_PARKED = Operation(
    summary="A page of the parked entries, newest first, and how many match",
    tag="parked",
    query=(*FILTERS, PAGE_LIMIT, _text("cursor", "the next_cursor of the page before")),
    answers={200: Answer("a page", PAGE)},
)
FACETS_PARKED = Operation(
    summary="The parked entries counted by type, company, error, reason and day",
    tag="parked",
    query=(*FILTERS, Param("size", _WHOLE_FROM_1, "buckets per facet")),
    answers={200: Answer("the counts, largest first", FACETS)},
)
SHOW_PARKED = Operation(
    summary="One parked entry, contact details masked unless revealed",
    tag="parked",
    may_forbid=True,
    query=(REVEAL,),
    answers={200: Answer("the entry", ENTRY_DETAIL), 404: _NOT_FOUND},
)
_JOB_ACCEPTED = Answer(
    "the job, created", JOB, {"Location": "where to follow it: /admin/jobs/{id}"}
)
#: How a replay or a backfill runs: at most ``limit`` events, ``rate`` a second, or only counted.
_JOB_OPTIONS: dict[str, Schema] = {
    "limit": nullable(_WHOLE_FROM_1),
    "rate": nullable(_NUMBER_ABOVE_0),
    "dry_run": FLAG,
}
REPLAY_PARKED = Operation(
    summary="Replay the matching entries to where they came from, as a job",
    tag="parked",
    operator=True,
    body=closed({}, {"filter": _FILTER_OBJECT, **_JOB_OPTIONS}),
    body_optional=True,
    answers={202: _JOB_ACCEPTED},
)
PURGE_PARKED = Operation(
    summary="Purge the matching entries, as a job (without confirm: a dry run that counts)",
    tag="parked",
    operator=True,
    body=closed({}, {"filter": _FILTER_OBJECT, "confirm": FLAG}),
    body_optional=True,
    answers={202: _JOB_ACCEPTED},
)

# -- jobs and the audit log -------------------------------------------------------------------

_OLDER = Param("before", {"type": "integer", "minimum": 0}, "older than this id")
_LIMIT = Param("limit", _WHOLE_FROM_1, "how many, newest first")
LIST_JOBS = Operation(
    summary="The replay, purge and backfill jobs, newest first",
    tag="jobs",
    query=(Param("state", one_of(JobState), "only jobs in this state"), _LIMIT, _OLDER),
    answers={200: Answer("the jobs", listing("jobs", JOB))},
)
SHOW_JOB = Operation(
    summary="One job: state, progress, rate, ETA",
    tag="jobs",
    answers={200: Answer("the job", JOB), 404: _NOT_FOUND},
)
CANCEL_JOB = Operation(
    summary="Cancel a job: it stops at its next batch",
    tag="jobs",
    operator=True,
    answers={
        200: Answer("the job, cancelled", JOB),
        404: _NOT_FOUND,
        409: Answer("it finished already", ERROR),
    },
)
LIST_AUDIT = Operation(
    summary="The audit log: replays, purges, backfills, cancels, reveals, pauses",
    tag="jobs",
    query=(Param("job", {"type": "integer", "minimum": 0}, "of this job"), _LIMIT, _OLDER),
    answers={200: Answer("the records, newest first", listing("audit", AUDIT))},
)

# -- the archive ------------------------------------------------------------------------------

_WINDOW = (
    Param("since", _MOMENT, "from (ISO 8601, or a span ago: 1h)", required=True),
    Param("until", _MOMENT, "to (ISO 8601, or a span ago; else now)"),
)
_HISTORY_FILTERS = (
    _text("type", "an event type or pattern (sms.*)"),
    _text("company", "a company id"),
    _text("message_id", "a message id"),
)
LIST_HISTORY = Operation(
    summary="The archive's events in a window that match, oldest first (no payloads)",
    tag="history",
    query=(
        *_WINDOW,
        *_HISTORY_FILTERS,
        Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "at most"),
    ),
    answers={200: Answer("the events", FOUND)},
)
SHOW_HISTORY = Operation(
    summary="One archived event: headers and payload, masked unless revealed",
    tag="history",
    may_forbid=True,
    query=(*_WINDOW, REVEAL),
    answers={200: Answer("the event", ARCHIVED_DETAIL), 404: _NOT_FOUND},
)
BACKFILL = Operation(
    summary="Backfill: the window's matching events an application claims, to its queue alone",
    tag="history",
    operator=True,
    body=closed(
        {"since": _MOMENT, "to_app": APP_NAME},
        {
            "until": nullable(_MOMENT),
            "type": nullable(TEXT),
            "company": nullable(TEXT),
            "message_id": nullable(TEXT),
            **_JOB_OPTIONS,
        },
    ),
    answers={
        202: Answer(
            "the job, created", BACKFILL_JOB, {"Location": "where to follow it: /admin/jobs/{id}"}
        ),
        409: Answer("the application claims none of these events", ERROR),
    },
)

__all__ = [
    "ADD_CLAIMS",
    "BACKFILL",
    "CANCEL_JOB",
    "FACETS_PARKED",
    "FILTERS",
    "LIST_APPS",
    "LIST_AUDIT",
    "LIST_CLAIMS",
    "LIST_HISTORY",
    "LIST_JOBS",
    "LIST_PARKED",
    "PAUSE_APP",
    "PURGE_PARKED",
    "REMOVE_CLAIM",
    "REPLAY_PARKED",
    "RESUME_APP",
    "SHOW_APP",
    "SHOW_HISTORY",
    "SHOW_JOB",
    "SHOW_PARKED",
]
