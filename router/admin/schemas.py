"""The JSON Schemas of what the admin API answers and takes, made from the models' own enums
and limits; the routes' declarations (:mod:`router.admin.schemas_routes`) put them together.

Each answer's schema follows the ``to_json`` (or view) that writes it, named beside it: a field
added there and not here fails the schemathesis run in the tests (its objects are closed where
the writer is ours), so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from router.apps.model import MAX_REASON_LENGTH, Breaker
from router.claims.model import MAX_APP_LENGTH
from router.parked.jobs import AuditAction, JobKind, JobState
from router.parked.model import Place, State
from router.parked.query import MAX_PAGE_SIZE

Schema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter: its name, schema and what it means."""

    name: str
    schema: Schema
    description: str
    required: bool = False


# -- building blocks -------------------------------------------------------------------------

TEXT: Schema = {"type": "string"}
WHOLE: Schema = {"type": "integer"}
FLAG: Schema = {"type": "boolean"}
ANY: Schema = {}
OBJECT: Schema = {"type": "object"}


def nullable(schema: Schema) -> Schema:
    """``schema``, or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def one_of(enum: type[StrEnum]) -> Schema:
    """A string that is one of ``enum``'s values."""
    return {"type": "string", "enum": [member.value for member in enum]}


def closed(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with exactly these fields (``optional`` ones may be missing)."""
    return {
        "type": "object",
        "properties": required | (optional or {}),
        "required": list(required),
        "additionalProperties": False,
    }


def listing(name: str, item: Schema) -> Schema:
    """``{name: [item, ...]}``."""
    return closed({name: {"type": "array", "items": item}})


TIME = nullable({"type": "string", "format": "date-time"})
#: An application's name (router.claims.model.validate_app).
APP_NAME: Schema = {
    "type": "string",
    "pattern": "^[a-z0-9][a-z0-9_-]*$",
    "maxLength": MAX_APP_LENGTH,
}
#: Every error: ``error`` says what went wrong; ``reason`` why, when the route adds it
#: (router.admin.responses.error_response, router.admin.tokens.forbidden).
ERROR: Schema = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "minLength": 1},
        "reason": {"type": "string", "minLength": 1},
    },
    "required": ["error"],
}

# -- claims (router.claims.model.Claim.to_json) ----------------------------------------------

CLAIM = closed(
    {
        "id": WHOLE,
        "app": TEXT,
        "event": TEXT,
        "company": nullable(TEXT),
        "created_at": TIME,
    }
)
GRANTED = closed(
    {"claims": {"type": "array", "items": CLAIM}, "created": {"type": "array", "items": WHOLE}}
)
CONFLICTS: Schema = {
    **ERROR,
    "properties": {
        **ERROR["properties"],
        "conflicts": {
            "type": "array",
            "items": {**CLAIM, "properties": {**CLAIM["properties"], "wanted": TEXT}},
        },
    },
}

# -- applications (router.apps.model.AppStatus.to_json, router.apps.service.Outcome) ----------

_APP_FIELDS: dict[str, Schema] = {
    "app": TEXT,
    "paused": FLAG,
    "since": TIME,
    "by": TEXT,
    "reason": TEXT,
    "breaker": one_of(Breaker),
    "queue": nullable(closed({"messages": WHOLE, "consumers": WHOLE})),
}
APP_STATUS = closed(_APP_FIELDS)
APP_CHANGE = closed(_APP_FIELDS | {"changed": FLAG, "notified": FLAG}, {"warning": TEXT})
PAUSE_REASON: Schema = {
    "type": "string",
    "description": f"at most {MAX_REASON_LENGTH} characters, each run of white space one space",
}

# -- jobs and the audit log (router.parked.jobs.Job.to_json, AuditRecord.to_json) -------------

#: router.parked.query.query_to_json
JOB_QUERY = closed(
    {"state": nullable(one_of(State))},
    {
        "place": one_of(Place),
        "app": TEXT,
        "event": TEXT,
        "company": TEXT,
        "error": TEXT,
        "reason": TEXT,
        "since": TEXT,
        "until": TEXT,
        "message_ids": {"type": "array", "items": TEXT},
    },
)
JOB = closed(
    {
        "id": WHOLE,
        "kind": one_of(JobKind),
        "state": one_of(JobState),
        "query": JOB_QUERY,
        "limit": nullable(WHOLE),
        "rate": nullable({"type": "number"}),
        "dry_run": FLAG,
        "requested_by": TEXT,
        "matched": WHOLE,
        "done": WHOLE,
        "failed": WHOLE,
        "remaining": WHOLE,
        "max_id": WHOLE,
        "last_id": WHOLE,
        "lease_owner": nullable(TEXT),
        "lease_until": TIME,
        "last_error": nullable(TEXT),
        "created_at": TIME,
        "updated_at": TIME,
        "started_at": TIME,
        "finished_at": TIME,
        "cancelled_by": nullable(TEXT),
        "rate_per_second": nullable({"type": "number"}),
        "eta_seconds": nullable({"type": "number"}),
    }
)
#: A backfill's job, and how many matching events belong to other applications.
BACKFILL_JOB = closed(
    dict(JOB["properties"]) | {"unclaimed": WHOLE},
)
AUDIT = closed(
    {
        "id": nullable(WHOLE),
        "at": TIME,
        "who": TEXT,
        "action": one_of(AuditAction),
        "job_id": nullable(WHOLE),
        "filter": OBJECT,
        "counts": OBJECT,
    }
)

# -- parked entries (router.parked.views) -----------------------------------------------------

_ENTRY_FIELDS: dict[str, Schema] = {
    "id": nullable(WHOLE),
    "message_id": nullable(TEXT),
    "type": nullable(TEXT),
    "company": nullable(TEXT),
    "attempts": nullable(WHOLE),
    "error": nullable(TEXT),
    "reason": nullable(TEXT),
    "parked_at": TIME,
    "replays": WHOLE,
    "state": one_of(State),
}
ENTRY = closed(_ENTRY_FIELDS)
ENTRY_DETAIL = closed(
    _ENTRY_FIELDS
    | {
        "place": one_of(Place),
        "app": nullable(TEXT),
        "routing_key": TEXT,
        "first_failed_at": TIME,
        "stored_at": TIME,
        "previous_id": nullable(WHOLE),
        "state_at": TIME,
        "state_by": nullable(TEXT),
        "traceback": nullable(TEXT),
        "properties": OBJECT,
        "headers": OBJECT,
        "payload": ANY,
    }
)
_WHERE: dict[str, Schema] = {"place": one_of(Place), "app": nullable(TEXT)}
PAGE = closed(
    _WHERE
    | {
        "matched": WHOLE,
        "entries": {"type": "array", "items": ENTRY},
        "next_cursor": nullable(TEXT),
    }
)
_BUCKETS: Schema = {
    "type": "array",
    "items": closed({"value": nullable(TEXT), "count": WHOLE}),
}
FACETS = closed(
    _WHERE
    | {"total": WHOLE}
    | {name: _BUCKETS for name in ("types", "companies", "errors", "reasons", "days")}
)

# -- the archive (router.history.views) -------------------------------------------------------

_ARCHIVED_FIELDS: dict[str, Schema] = {
    "offset": WHOLE,
    "message_id": TEXT,
    "type": TEXT,
    "company": TEXT,
    "routing_key": TEXT,
    "time": TIME,
}
ARCHIVED_DETAIL = closed(
    _ARCHIVED_FIELDS | {"content_type": nullable(TEXT), "headers": OBJECT, "payload": ANY}
)
FOUND = closed(
    {
        "filter": {"type": "object", "additionalProperties": TEXT},
        "events": {"type": "array", "items": closed(_ARCHIVED_FIELDS)},
        "more": FLAG,
        "scanned": WHOLE,
    }
)

#: The schemas the document names (``#/components/schemas/<name>``), so that a client made
#: from it has a type of each name instead of one per answer.
COMPONENTS: dict[str, Schema] = {
    "Error": ERROR,
    "Claim": CLAIM,
    "Granted": GRANTED,
    "Conflicts": CONFLICTS,
    "AppStatus": APP_STATUS,
    "AppChange": APP_CHANGE,
    "JobQuery": JOB_QUERY,
    "Job": JOB,
    "BackfillJob": BACKFILL_JOB,
    "AuditRecord": AUDIT,
    "Entry": ENTRY,
    "EntryDetail": ENTRY_DETAIL,
    "Page": PAGE,
    "Facets": FACETS,
    "ArchivedEvent": ARCHIVED_DETAIL,
    "Found": FOUND,
}

# -- parameters -------------------------------------------------------------------------------

#: Path parameters, by the name routes give them.
PATH_PARAMETERS = {
    "app": Param("app", APP_NAME, "an application's name"),
    "id": Param("id", {"type": "integer", "minimum": 0}, "an id the API gave"),
    "ref": Param("ref", {"type": "string", "minLength": 1}, "an entry id, or a message id"),
    "message_id": Param("message_id", {"type": "string", "minLength": 1}, "a message id"),
}
#: ``?reveal=1``: contact details shown (an operator's, and audited).
REVEAL = Param(
    "reveal",
    TEXT,
    "1, true or yes: show phone numbers and emails unmasked (an operator's; audited)",
)
PAGE_LIMIT = Param(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
    f"entries a page holds (1 to {MAX_PAGE_SIZE})",
)

__all__ = [
    "ANY",
    "APP_CHANGE",
    "APP_NAME",
    "APP_STATUS",
    "ARCHIVED_DETAIL",
    "AUDIT",
    "BACKFILL_JOB",
    "CLAIM",
    "COMPONENTS",
    "CONFLICTS",
    "ENTRY",
    "ENTRY_DETAIL",
    "ERROR",
    "FACETS",
    "FLAG",
    "FOUND",
    "GRANTED",
    "JOB",
    "OBJECT",
    "PAGE",
    "PAGE_LIMIT",
    "PATH_PARAMETERS",
    "PAUSE_REASON",
    "REVEAL",
    "TEXT",
    "TIME",
    "WHOLE",
    "Param",
    "Schema",
    "closed",
    "listing",
    "nullable",
    "one_of",
]
