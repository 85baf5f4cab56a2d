"""Replay and purge jobs in both parked-event stores (SQLite and the real PostgreSQL): the
schema's second migration, what a job covers, leases two runners compete for, progress,
cancel, and the audit log; and the pure job model.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from router.errors import Conflict, InvalidInput, NotFound
from router.parked import schema
from router.parked.jobs import (
    AuditAction,
    AuditRecord,
    JobKind,
    JobRequest,
    JobState,
)
from router.parked.model import Place, State
from router.parked.query import Query, query_from_json, query_to_json
from router.parked.schema import audit_table, jobs_table, version_table
from router.parked.store import ParkedStore, Settled
from tests.parked_stores import (
    NOW,
    TIMEOUT,
    Backend,
    body_of,
    dead_letter,
    stored_id,
)

pytestmark = pytest.mark.database

LEASE = timedelta(seconds=30)


def replay_of(event: str | None = None, **options: object) -> JobRequest:
    query = Query.build(place="dlq", app="alerts", event=event)
    return JobRequest.build("replay", query, "ops-alice", **options)  # type: ignore[arg-type]


async def fill(
    store: ParkedStore, count: int, event: str = "sms.subscribed", start: int = 0
) -> None:
    entries = [
        dead_letter(body_of(event, n=n), message_id=f"{event}-{n}")
        for n in range(start, start + count)
    ]
    assert await store.add_many(entries) == count


# -- the schema --------------------------------------------------------------------------------


async def test_a_store_of_schema_1_with_entries_is_migrated_to_jobs(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a database the previous release made (schema 1) holding entries
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
    monkeypatch.setattr(schema, "LATEST_VERSION", 1)
    old = await backend.opened()
    await fill(old, 5)
    await old.close()
    monkeypatch.undo()

    # When this release upgrades it
    store = await backend.opened(upgrade=False)
    assert await store.schema_version() == 1
    assert await store.upgrade() == 2

    # Then the entries are kept, and jobs and the audit log work on them
    assert await store.count(Query()) == 5
    job = await store.create_job(replay_of())
    assert (job.matched, job.state) == (5, JobState.QUEUED)
    applied = await backend.scalar(f"SELECT count(*) FROM {version_table(backend.table)}")
    assert applied == 2
    assert await backend.scalar(f"SELECT count(*) FROM {jobs_table(backend.table)}") == 1
    assert await backend.scalar(f"SELECT count(*) FROM {audit_table(backend.table)}") == 0
    await store.close()


# -- creating and reading jobs -----------------------------------------------------------------


async def test_a_job_covers_what_matched_when_it_was_created(store: ParkedStore) -> None:
    # Given 6 subscribed and 4 sent dead letters
    await fill(store, 6, "sms.subscribed")
    await fill(store, 4, "sms.sent")

    # When ops ask to replay the subscribed ones, and more are parked afterwards
    job = await store.create_job(replay_of("sms.subscribed"))
    await fill(store, 3, "sms.subscribed", start=100)

    # Then the job counted 6, covers entries up to the highest id there was, and reads
    # exactly those, in ascending id order
    assert (job.kind, job.state, job.matched, job.done, job.failed) == (
        JobKind.REPLAY,
        JobState.QUEUED,
        6,
        0,
        0,
    )
    assert job.requested_by == "ops-alice" and job.query.state is State.PARKED
    batch = await store.job_batch(job, 0, 100)
    assert [e.message_id for e in batch] == [f"sms.subscribed-{n}" for n in range(6)]
    ids = [stored_id(e) for e in batch]
    assert ids == sorted(ids) and ids[-1] <= job.max_id
    assert [stored_id(e) for e in await store.job_batch(job, ids[2], 2)] == ids[3:5]

    # And a limit caps what it covers
    limited = await store.create_job(replay_of("sms.subscribed", limit=4))
    assert limited.matched == 4 and limited.limit == 4


async def test_jobs_are_listed_newest_first_by_state_and_read_by_id(store: ParkedStore) -> None:
    first = await store.create_job(replay_of())
    second = await store.create_job(
        JobRequest.build("purge", Query.build(place="invalid"), "ops-bob", dry_run=True)
    )
    await store.cancel_job(first.id, "ops-carol")

    assert [job.id for job in await store.jobs()] == [second.id, first.id]
    assert [job.id for job in await store.jobs(JobState.CANCELLED)] == [first.id]
    assert [job.id for job in await store.jobs(before=second.id)] == [first.id]
    again = await store.job(second.id)
    assert (again.kind, again.dry_run, again.requested_by) == (JobKind.PURGE, True, "ops-bob")
    assert again.query == Query.build(place="invalid")
    with pytest.raises(NotFound):
        await store.job(second.id + 100)


# -- leases and progress -----------------------------------------------------------------------


async def test_two_runners_asking_at_once_never_get_the_same_job(backend: Backend) -> None:
    # Given one queued job and two runners on two stores
    one, two = await backend.opened(), await backend.opened()
    job = await one.create_job(replay_of())

    # When both ask for a job at the same moment
    async with asyncio.timeout(TIMEOUT):
        got = await asyncio.gather(one.claim_job("r1", LEASE), two.claim_job("r2", LEASE))

    # Then exactly one holds it, running
    held = [claimed for claimed in got if claimed is not None]
    assert len(held) == 1 and held[0].id == job.id and held[0].state is JobState.RUNNING
    assert held[0].lease_owner in ("r1", "r2") and held[0].started_at is not None
    assert await two.claim_job("r3", LEASE) is None
    await one.close()
    await two.close()


async def test_an_expired_or_released_lease_lets_another_runner_resume(store: ParkedStore) -> None:
    await fill(store, 3)
    job = await store.create_job(replay_of())

    # Given a runner whose lease has already run out (its process died)
    taken = await store.claim_job("dead-runner", timedelta(0), job.id)
    assert taken is not None

    # When another runner asks, it gets the job, where it was
    resumed = await store.claim_job("second", LEASE)
    assert resumed is not None and resumed.lease_owner == "second"
    assert resumed.last_id == 0 and resumed.started_at == taken.started_at

    # And a lease given back is free at once, with the reason kept
    released = await store.release_job(job.id, "second", "the broker went away")
    assert released is not None and released.lease_owner is None
    assert released.state is JobState.RUNNING and released.last_error == "the broker went away"
    assert await store.release_job(job.id, "second") is None  # not held any more
    third = await store.claim_job("third", LEASE, job.id)
    assert third is not None and third.lease_owner == "third"
    assert (await store.renew_lease(job.id, "third", LEASE)).lease_until >= third.lease_until  # type: ignore[operator]


async def test_a_settled_batch_marks_counts_and_moves_on_for_its_owner_only(
    store: ParkedStore,
) -> None:
    # Given a running replay of 5 entries
    await fill(store, 5)
    job = await store.claim_job("runner", LEASE, (await store.create_job(replay_of())).id)
    assert job is not None
    ids = [stored_id(e) for e in await store.job_batch(job, 0, 10)]

    # When the runner settles 3 confirmed and 1 failed
    job = await store.settle(job, "runner", Settled(ids[:3], 1, ids[3]), LEASE)

    # Then the 3 are replayed by the requester, the failed one stays parked, the job counts
    assert (job.done, job.failed, job.last_id) == (3, 1, ids[3])
    marked = [await store.get(i) for i in ids]
    assert [e.state for e in marked] == [State.REPLAYED] * 3 + [State.PARKED] * 2
    assert {e.state_by for e in marked[:3]} == {"ops-alice"}
    assert [stored_id(e) for e in await store.job_batch(job, job.last_id, 10)] == ids[4:]

    # When a runner that lost the lease settles the last one, it is marked and counted, but
    # the job's place and lease are the owner's
    stale = await store.settle(job, "stale", Settled(ids[4:], 0, ids[4]), LEASE)
    assert (stale.done, stale.last_id, stale.lease_owner) == (4, ids[3], "runner")
    # and marking an entry twice counts it once
    again = await store.settle(job, "runner", Settled(ids[:1], 0, ids[4]), LEASE)
    assert (again.done, again.last_id) == (4, ids[4])


async def test_a_finished_job_writes_its_audit_record(store: ParkedStore) -> None:
    await fill(store, 2)
    job = await store.claim_job("runner", LEASE, (await store.create_job(replay_of())).id)
    assert job is not None
    ids = [stored_id(e) for e in await store.job_batch(job, 0, 10)]
    job = await store.settle(job, "runner", Settled(ids, 0, ids[-1]), LEASE)

    assert await store.finish_job(job.id, "someone-else", JobState.DONE) is None
    done = await store.finish_job(job.id, "runner", JobState.DONE)

    assert done is not None and done.state is JobState.DONE and done.finished_at is not None
    assert done.lease_owner is None and done.remaining == 0 and done.fraction == 1.0
    (record,) = await store.audit(job_id=job.id)
    assert (record.action, record.who, record.job_id) == (AuditAction.REPLAY, "ops-alice", job.id)
    assert record.filter == query_to_json(job.query)
    assert record.counts == {
        "matched": 2,
        "done": 2,
        "failed": 0,
        "dry_run": False,
        "state": "done",
    }


# -- cancel ------------------------------------------------------------------------------------


async def test_a_job_is_cancelled_once_and_a_finished_one_not_at_all(store: ParkedStore) -> None:
    queued = await store.create_job(replay_of())
    cancelled = await store.cancel_job(queued.id, "ops-carol")

    assert cancelled.state is JobState.CANCELLED and cancelled.cancelled_by == "ops-carol"
    assert await store.claim_job("runner", LEASE) is None  # nothing runnable
    assert (await store.cancel_job(queued.id, "ops-dave")).cancelled_by == "ops-carol"
    (record,) = await store.audit()
    assert (record.action, record.who, record.job_id) == (
        AuditAction.CANCEL,
        "ops-carol",
        queued.id,
    )

    other = await store.claim_job("runner", LEASE, (await store.create_job(replay_of())).id)
    assert other is not None
    await store.finish_job(other.id, "runner", JobState.DONE)
    with pytest.raises(Conflict, match="done already"):
        await store.cancel_job(other.id, "ops-carol")
    with pytest.raises(NotFound):
        await store.cancel_job(other.id + 100, "ops-carol")
    with pytest.raises(InvalidInput) as raised:
        await store.cancel_job(other.id, " ")
    assert raised.value.field == "by"


async def test_a_running_job_cancelled_sees_it_at_its_next_settle(store: ParkedStore) -> None:
    await fill(store, 4)
    job = await store.claim_job("runner", LEASE, (await store.create_job(replay_of())).id)
    assert job is not None
    ids = [stored_id(e) for e in await store.job_batch(job, 0, 10)]

    await store.cancel_job(job.id, "ops-carol")
    seen = await store.settle(job, "runner", Settled(ids[:2], 0, ids[1]), LEASE)
    ended = await store.finish_job(job.id, "runner", JobState.CANCELLED)

    assert seen.state is JobState.CANCELLED and seen.done == 2
    assert ended is not None and ended.state is JobState.CANCELLED and ended.done == 2
    actions = [record.action for record in await store.audit(job_id=job.id)]
    assert actions == [AuditAction.REPLAY, AuditAction.CANCEL]  # newest first


# -- the audit log -----------------------------------------------------------------------------


async def test_a_reveal_is_appended_to_the_audit_log(store: ParkedStore) -> None:
    record = await store.add_audit(
        AuditRecord(NOW, "ops-alice", AuditAction.REVEAL, filter={"entry": 7})
    )
    older = await store.add_audit(AuditRecord(NOW, "ops-bob", AuditAction.REVEAL))

    assert record.id is not None and record.at == NOW and record.filter == {"entry": 7}
    assert [r.who for r in await store.audit()] == ["ops-bob", "ops-alice"]
    assert [r.who for r in await store.audit(before=older.id)] == ["ops-alice"]
    assert [r.who for r in await store.audit(limit=1)] == ["ops-bob"]


# -- the model (pure) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "query", "options", "field"),
    [
        ("restore", Query.build(place="dlq"), {}, "kind"),
        ("replay", Query.build(place="invalid"), {}, "place"),
        ("replay", Query.build(), {}, "place"),
        ("replay", Query.build(place="dlq"), {"limit": 0}, "limit"),
        ("replay", Query.build(place="dlq"), {"limit": True}, "limit"),
        ("replay", Query.build(place="dlq"), {"rate": -1}, "rate"),
        ("replay", Query.build(place="dlq"), {"rate": float("inf")}, "rate"),
        ("purge", Query.build(place="dlq", state="replayed"), {}, "state"),
        ("purge", Query.build(place="dlq"), {"requested_by": ""}, "requested_by"),
        ("purge", Query.build(place="dlq"), {"requested_by": "a\x1bb"}, "requested_by"),
    ],
)
def test_a_request_that_cannot_run_names_its_field(
    kind: str, query: Query, options: dict[str, object], field: str
) -> None:
    by = str(options.pop("requested_by", "ops"))
    with pytest.raises(InvalidInput) as raised:
        JobRequest.build(kind, query, by, **options)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_a_purge_may_take_invalid_events_and_a_query_keeps_every_filter() -> None:
    query = Query.build(
        place="unrouted",
        event="sms.*",
        company="c1",
        error="ValueError",
        reason="exhausted",
        since="2026-11-01T00:00Z",
        until="2026-11-30T00:00Z",
        message_ids=["m-2", "m-1"],
    )
    assert query_from_json(query_to_json(query)) == query
    purge = JobRequest.build("purge", Query.build(place="invalid", state=None), " ops ")
    assert purge.query.state is State.PARKED and purge.requested_by == "ops"
    assert purge.query.place is Place.INVALID


async def test_progress_rate_and_eta_come_from_the_job(store: ParkedStore) -> None:
    await fill(store, 10)
    job = await store.claim_job("runner", LEASE, (await store.create_job(replay_of())).id)
    assert job is not None and job.started_at is not None
    ids = [stored_id(e) for e in await store.job_batch(job, 0, 10)]
    job = await store.settle(job, "runner", Settled(ids[:4], 0, ids[3]), LEASE)

    assert job.started_at is not None
    later = job.started_at + timedelta(seconds=2)
    assert (job.handled, job.remaining, job.fraction) == (4, 6, 0.4)
    assert job.per_second(later) == 2.0
    assert job.eta(later) == timedelta(seconds=3)
    shown = job.to_json(later)
    assert (shown["rate_per_second"], shown["eta_seconds"], shown["remaining"]) == (2.0, 3.0, 6)
    assert job.runnable(later) is False
    assert job.runnable(later + LEASE) is True
