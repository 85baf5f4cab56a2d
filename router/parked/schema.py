"""The parked-event store's schema, as numbered migrations for SQLite and PostgreSQL.

Migration ``n`` takes a database at version ``n - 1`` to version ``n``; the version table
``<table>_schema_version`` has one row per migration applied (version, when). A change to the
schema is a new migration appended to :data:`MIGRATIONS`, never an edit of an applied one.

The entries table keeps the delivery (``body``, ``properties`` as JSON, see
:mod:`router.parked.fields`) and, in columns of their own, everything a filter or a facet
reads, each with an index that starts with the scope every listing has (place, application,
state) and ends with the page order (parked time, id), so a filtered page is read in order
from one index and stops after its last entry. The index of a whole listing (scope and order
only) and the one by state also carry every column a facet counts, so that facets are
counted from an index alone. Unrouted and invalid entries have the application ``''``.
Times are ``TIMESTAMPTZ`` in PostgreSQL and microseconds since the Unix epoch (UTC) in
SQLite. The error filter (a piece of text in any case) reads ``error_folded``, which has no
index of its own: it narrows what the other filters found.

Migration 2 adds the replay and purge jobs (``<table>_jobs``), the audit log
(``<table>_audit``) and the index a job reads its entries from in id order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from router.errors import ConfigError
from router.parked.store import ParkedStoreError
from router.pg import TABLE_NAME_RULE, valid_table_name


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells the few types the schema needs."""

    name: str
    id_column: str
    bytes: str
    time: str
    big: str
    #: The current time, as a value of ``time``.
    now: str
    #: Whether an index can carry columns outside its key (``INCLUDE``).
    include: bool
    #: Settings of the entries table, as statements (``{table}`` is its name).
    tuning: tuple[str, ...] = ()
    #: A floating-point number.
    real: str = "DOUBLE PRECISION"

    def covering_index(self, name: str, table: str, key: str, carried: str) -> str:
        """An index on ``key`` from which ``carried`` can be read too, without the table."""
        if self.include:
            return f"CREATE INDEX {name} ON {table} ({key}) INCLUDE ({carried})"
        return f"CREATE INDEX {name} ON {table} ({key}, {carried})"


SQLITE = Dialect(
    "sqlite",
    id_column="INTEGER PRIMARY KEY AUTOINCREMENT",
    bytes="BLOB",
    time="INTEGER",
    big="INTEGER",
    now="CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)",
    include=False,
    real="REAL",
)
POSTGRES = Dialect(
    "postgresql",
    id_column="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    bytes="BYTEA",
    time="TIMESTAMPTZ",
    big="BIGINT",
    now="now()",
    include=True,
    # Vacuum and analyze after 2% more entries (not the default 20%): counting facets from an
    # index alone needs the visibility map that vacuum keeps, and an incident adds entries
    # by the hundred thousand.
    tuning=(
        "ALTER TABLE {table} SET (autovacuum_vacuum_insert_scale_factor = 0.02, "
        "autovacuum_analyze_scale_factor = 0.02)",
    ),
)

#: Every listing's scope, and the page order, around each filter's column.
_SCOPE = "place, app, state"
_ORDER = "parked_at, id"
#: What facets count, carried by the indexes of whole listings so that counting reads no row.
_FACETED = "event_type, channel, company, error_kind, reason"
#: Index name suffix -> the columns between the scope and the order.
_FILTER_INDEXES = {
    "by_type": "event_type",
    "by_channel": "channel",
    "by_company": "company",
    "by_reason": "reason",
    "by_error": "error_kind",
}


def checked_table(table: str) -> str:
    """``table`` when it can name the entries table; else :class:`ConfigError`."""
    if not valid_table_name(table):
        raise ConfigError(f"invalid parked-event table name {table!r}: use {TABLE_NAME_RULE}")
    return table


def version_table(table: str) -> str:
    return f"{table}_schema_version"


def version_table_ddl(table: str, dialect: Dialect) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {version_table(table)} "
        f"(version INTEGER PRIMARY KEY, applied_at {dialect.time} NOT NULL)"
    )


def _migration_1(table: str, d: Dialect) -> tuple[str, ...]:
    """The entries table and its indexes."""
    create = f"""
        CREATE TABLE {table} (
            id {d.id_column},
            fingerprint {d.bytes} NOT NULL,
            place TEXT NOT NULL,
            app TEXT NOT NULL,
            message_id TEXT NULL,
            routing_key TEXT NOT NULL,
            event_type TEXT NULL,
            channel TEXT NULL,
            company TEXT NULL,
            reason TEXT NULL,
            error TEXT NULL,
            error_kind TEXT NULL,
            error_folded TEXT NULL,
            attempts INTEGER NULL,
            replays INTEGER NOT NULL,
            first_failed_at {d.time} NULL,
            parked_at {d.time} NOT NULL,
            stored_at {d.time} NOT NULL,
            previous_id {d.big} NULL,
            state TEXT NOT NULL,
            state_at {d.time} NULL,
            state_by TEXT NULL,
            properties TEXT NOT NULL,
            body {d.bytes} NOT NULL
        )
    """
    indexes = [
        f"CREATE UNIQUE INDEX {table}_fingerprint ON {table} (fingerprint)",
        f"CREATE INDEX {table}_message ON {table} (place, app, message_id, id)",
        f"CREATE INDEX {table}_expiry ON {table} (state, state_at)",
        d.covering_index(f"{table}_listed", table, f"{_SCOPE}, {_ORDER}", _FACETED),
        d.covering_index(f"{table}_by_state", table, f"state, {_ORDER}", _FACETED),
    ]
    for suffix, column in _FILTER_INDEXES.items():
        indexes.append(f"CREATE INDEX {table}_{suffix} ON {table} ({_SCOPE}, {column}, {_ORDER})")
    return (create, *(setting.format(table=table) for setting in d.tuning), *indexes)


def jobs_table(table: str) -> str:
    """The table of replay and purge jobs beside the entries table ``table``."""
    return f"{table}_jobs"


def audit_table(table: str) -> str:
    """The audit log beside the entries table ``table``."""
    return f"{table}_audit"


def _migration_2(table: str, d: Dialect) -> tuple[str, ...]:
    """Replay and purge jobs, the audit log, and the index a job's batches are read from.

    A job reads its entries in ascending id within its scope (``place, app, state``), after
    the last id it handled; runners look for queued jobs and expired leases; lists go newest
    first, by state or not; the audit log is read newest first, or by job.
    """
    jobs, audit = jobs_table(table), audit_table(table)
    return (
        f"""
        CREATE TABLE {jobs} (
            id {d.id_column},
            kind TEXT NOT NULL,
            query TEXT NOT NULL,
            entry_limit {d.big} NULL,
            rate {d.real} NULL,
            dry_run BOOLEAN NOT NULL,
            requested_by TEXT NOT NULL,
            created_at {d.time} NOT NULL,
            state TEXT NOT NULL,
            matched {d.big} NOT NULL,
            done {d.big} NOT NULL,
            failed {d.big} NOT NULL,
            max_id {d.big} NOT NULL,
            last_id {d.big} NOT NULL,
            lease_owner TEXT NULL,
            lease_until {d.time} NULL,
            last_error TEXT NULL,
            updated_at {d.time} NOT NULL,
            started_at {d.time} NULL,
            finished_at {d.time} NULL,
            cancelled_by TEXT NULL
        )
        """,
        f"CREATE INDEX {jobs}_runnable ON {jobs} (state, lease_until, id)",
        f"CREATE INDEX {jobs}_by_state ON {jobs} (state, id)",
        f"""
        CREATE TABLE {audit} (
            id {d.id_column},
            at {d.time} NOT NULL,
            who TEXT NOT NULL,
            action TEXT NOT NULL,
            job_id {d.big} NULL,
            filter_json TEXT NOT NULL,
            counts_json TEXT NOT NULL
        )
        """,
        f"CREATE INDEX {audit}_by_job ON {audit} (job_id, id)",
        f"CREATE INDEX {table}_in_order ON {table} ({_SCOPE}, id)",
    )


#: The migrations in order: ``MIGRATIONS[n - 1](table, dialect)`` makes version ``n``.
MIGRATIONS: tuple[Callable[[str, Dialect], tuple[str, ...]], ...] = (_migration_1, _migration_2)
#: The schema version this code reads and writes.
LATEST_VERSION = len(MIGRATIONS)


def upgrade_statements(table: str, dialect: Dialect, current: int) -> list[str]:
    """What takes a database at version ``current`` to :data:`LATEST_VERSION`, each migration
    followed by its row in the version table; :class:`ParkedStoreError` when it is newer."""
    if current > LATEST_VERSION:
        raise _ahead(table, current)
    statements: list[str] = []
    for version in range(current + 1, LATEST_VERSION + 1):
        statements.extend(MIGRATIONS[version - 1](table, dialect))
        statements.append(
            f"INSERT INTO {version_table(table)} (version, applied_at) "
            f"VALUES ({version}, {dialect.now})"
        )
    return statements


def require_latest(table: str, current: int) -> None:
    """:class:`ParkedStoreError` unless a database at ``current`` is at the latest version."""
    if current < LATEST_VERSION:
        raise ParkedStoreError(
            f"parked-event table {table} is at schema version {current}, this router needs "
            f"{LATEST_VERSION}: upgrade the database first"
        )
    if current > LATEST_VERSION:
        raise _ahead(table, current)


def _ahead(table: str, current: int) -> ParkedStoreError:
    return ParkedStoreError(
        f"parked-event table {table} is at schema version {current}, newer than this router "
        f"knows ({LATEST_VERSION}): upgrade the router"
    )


__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "POSTGRES",
    "SQLITE",
    "Dialect",
    "audit_table",
    "checked_table",
    "jobs_table",
    "require_latest",
    "upgrade_statements",
    "version_table",
    "version_table_ddl",
]
