"""Reading the audit log: rows by phone or subscriber and time, phone numbers always masked.

``python -m consumers.sms_audit query [--db PATH] [--phone P | --subscriber ID]
[--since ISO] [--until ISO] [--json]``. ``--since`` is inclusive, ``--until`` exclusive; a
date alone means midnight UTC, a time without an offset is UTC.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

import orjson

from consumers.sms_audit.store import DEFAULT_DB, TABLE, connect, iso_utc
from router.contract.masking import mask_phone

PROG = "python -m consumers.sms_audit"


class QueryError(Exception):
    """A query that cannot run as asked: bad arguments, no database. One line of text."""


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One row as the query shows it: the phone number is already masked."""

    id: int
    occurred_at: str
    company_id: str
    event_type: str
    activity: str
    subscriber_id: str | None
    phone: str | None
    detail: str | None
    message_id: str


def parse_time(text: str, option: str) -> str:
    """An ISO 8601 date or time as the log stores it (UTC, milliseconds); naive means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(
            f"{option} {text!r} is not an ISO 8601 date or time "
            "(such as 2024-05-01 or 2024-05-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_utc(moment)


def query(
    db: str | Path,
    *,
    phone: str | None = None,
    subscriber: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> list[AuditRow]:
    """The rows matching every filter given, oldest first; :class:`QueryError` if it cannot."""
    if phone is not None and subscriber is not None:
        raise QueryError("give --phone or --subscriber, not both")
    start = parse_time(since, "--since") if since is not None else None
    end = parse_time(until, "--until") if until is not None else None
    if start is not None and end is not None and start >= end:
        raise QueryError(f"--since {since} is not before --until {until}")
    where: list[str] = []
    params: list[str] = []
    for column, operator, value in (
        ("phone", "=", phone),
        ("subscriber_id", "=", subscriber),
        ("occurred_at", ">=", start),
        ("occurred_at", "<", end),
    ):
        if value is not None:
            where.append(f"{column} {operator} ?")
            params.append(value)
    sql = (
        "SELECT id, occurred_at, company_id, event_type, activity, subscriber_id, phone, detail,"
        f" message_id FROM {TABLE}"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY occurred_at, id"
    )
    path = Path(db)
    if not path.is_file():
        raise QueryError(f"no audit database at {path} (set --db or SMS_AUDIT_DB)")
    try:
        conn = connect(path, read_only=True)
        try:
            found = conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as error:
        raise QueryError(f"cannot read the audit log in {path}: {error}") from None
    return [
        AuditRow(**{**dict(row), "phone": _masked(row["phone"])})  # never the full number
        for row in found
    ]


def _masked(phone: str | None) -> str | None:
    return None if phone is None else mask_phone(phone)


def render(rows: Sequence[AuditRow], *, as_json: bool = False) -> str:
    """A JSON array, or one aligned line per row under a header."""
    if as_json:
        return orjson.dumps([asdict(row) for row in rows], option=orjson.OPT_INDENT_2).decode()
    if not rows:
        return "no matching rows"
    header = ("occurred_at", "company_id", "activity", "subscriber", "phone", "detail")
    lines = [
        (
            row.occurred_at,
            row.company_id,
            row.activity,
            row.subscriber_id or "-",
            row.phone or "-",
            row.detail or "",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(
            [*(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)), line[-1]]
        ).rstrip()
        for line in [header, *lines]
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported on one line (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise QueryError(message)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Read the SMS audit log.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    q = commands.add_parser("query", help="rows by phone or subscriber and time (phones masked)")
    q.add_argument(
        "--db",
        default=env.get("SMS_AUDIT_DB") or DEFAULT_DB,
        help=f"the audit database (SMS_AUDIT_DB, default {DEFAULT_DB})",
    )
    who = q.add_mutually_exclusive_group()
    who.add_argument("--phone", help="exactly as Attentive sent it, such as +15555555555")
    who.add_argument("--subscriber", help="the subscriber's external_id")
    q.add_argument("--since", help="from this ISO 8601 date or time (inclusive)")
    q.add_argument("--until", help="to this ISO 8601 date or time (exclusive)")
    q.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The command line: 0 with the rows printed, 2 with one line on stderr if it cannot."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        args = build_parser(env).parse_args(argv)
        rows = query(
            args.db,
            phone=args.phone,
            subscriber=args.subscriber,
            since=args.since,
            until=args.until,
        )
    except QueryError as error:
        print(f"{PROG}: error: {error}", file=err)
        return 2
    print(render(rows, as_json=args.json), file=out)
    return 0


__all__ = ["AuditRow", "QueryError", "build_parser", "main", "parse_time", "query"]
