"""Backfill: the archive's events of a window published again, as a job, to the one
application that claims them, and to no other; refused for an application that does not;
counted by a dry run; resumed without loss after the process running it was killed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from consumers.runtime.event import Event
from consumers.testing import Handled, Skipped, WorkerHarness
from router.claims.sqlite import SqliteClaimStore
from router.claims.store import ClaimStore
from router.cli.main import main
from router.contract.examples import example_body
from router.contract.names import REPLAY_COUNT_HEADER, REPLAY_JOB_HEADER, Names
from router.parked.jobs import Job, JobState
from router.parked.runner import JobRunner
from router.parked.sqlite import SqliteParkedStore
from router.parked.store import ParkedStore
from router.settings import Settings
from tests.conftest import AMQP_URL, AUTH, TOKEN, Client, Tap, archive_on, depth, take
from tests.environment import no_router_environment
from tests.test_history_archive import post_event
from tests.test_worker_harness import recording_worker

pytestmark = pytest.mark.broker

__all__ = ["no_router_environment"]  # autouse: no ROUTER_* variable of the shell counts

ROOT = str(Path(__file__).resolve().parent.parent)
TIMEOUT = 60.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test's settings with the archive on, as the router runs by default."""
    return archive_on(settings)


@pytest.fixture
def database(admin_settings: Settings) -> Path:
    """The admin's SQLite file: its claims, the parked-event store and its jobs."""
    return Path(admin_settings.database_url.reveal().removeprefix("sqlite:///"))


@pytest.fixture
async def store(database: Path, admin: Client) -> AsyncIterator[ParkedStore]:
    opened = SqliteParkedStore(database)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def claims(database: Path, admin: Client) -> AsyncIterator[ClaimStore]:
    opened = SqliteClaimStore(database)
    await opened.open()
    yield opened
    await opened.close()


async def claim(admin: Client, app: str, *events: str) -> None:
    response = await admin.post(
        "/admin/claims", json={"app": app, "events": list(events)}, headers=AUTH
    )
    assert response.status in (200, 201), await response.text()


async def backfill(admin: Client, **fields: object) -> tuple[int, dict[str, Any]]:
    response = await admin.post("/admin/history/replay", json=fields, headers=AUTH)
    return response.status, await response.json()


async def run(store: ParkedStore, claims: ClaimStore, names: Names, job_id: int) -> Job:
    runner = JobRunner(store, AMQP_URL, names, claims_of=claims.list, settle_every=0.05)
    try:
        async with asyncio.timeout(TIMEOUT):
            while (ended := await runner.run_job(job_id)) is None:
                await asyncio.sleep(0.1)
        return ended
    finally:
        await runner.close()


async def test_a_backfill_reaches_only_the_application_that_claims_the_events(
    admin: Client,
    ingress: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    tap: Tap,
    store: ParkedStore,
    claims: ClaimStore,
) -> None:
    # Given alpha claims sms.* and beta email.*, and three events went through the router
    await claim(admin, "alpha", "sms.*")
    await claim(admin, "beta", "email.*")
    posted = [
        await post_event(ingress, "sms.sent", "acme"),
        await post_event(ingress, "email.opened", "acme"),
        await post_event(ingress, "sms.subscribed", "globex"),
    ]
    originals = {m.message_id: m for m in await tap.take(3)}
    assert await depth(amqp, names.app_queue("alpha")) == 2
    assert await depth(amqp, names.app_queue("beta")) == 1

    # When ops backfill the last minute to alpha
    status, job = await backfill(admin, since="1m", to_app="alpha")
    assert status == 202, job
    assert (job["kind"], job["matched"], job["unclaimed"]) == ("backfill", 2, 1)
    assert job["query"]["app"] == "alpha"
    ended = await run(store, claims, names, int(str(job["id"])))

    # Then alpha's two events are in its queue again, byte-exact, marked as a replay of the
    # job; beta's queue and the events exchange got nothing more
    assert (ended.state, ended.done, ended.failed) == (JobState.DONE, 2, 0)
    assert await depth(amqp, names.app_queue("beta")) == 1
    assert await depth(amqp, tap.queue.name) == 0
    queued = await take(await _queue(amqp, names.app_queue("alpha")), 4)
    copies = [m for m in queued if (m.headers or {}).get(REPLAY_JOB_HEADER) == ended.id]
    assert sorted(m.message_id or "" for m in copies) == sorted([posted[0], posted[2]])
    for copy in copies:
        original = originals[copy.message_id]
        assert copy.body == original.body and copy.routing_key == original.routing_key
        assert (copy.headers or {})[REPLAY_COUNT_HEADER] == 1
        assert copy.delivery_mode == 2

    # And the audit log says who backfilled what
    [record] = [r for r in await store.audit(ended.id) if r.action.value == "backfill"]
    assert record.counts["done"] == 2 and record.filter["app"] == "alpha"


async def test_a_backfill_to_an_application_that_does_not_claim_the_events_is_refused(
    admin: Client, ingress: Client, store: ParkedStore
) -> None:
    # Given beta claims email.* only, and an sms event is in the archive
    await claim(admin, "beta", "email.*")
    await post_event(ingress, "sms.sent", "acme")

    # When ops ask for sms events to beta, or anything to an application with no claim
    refused = [
        await backfill(admin, since="1m", to_app="beta", type="sms.*"),
        await backfill(admin, since="1m", to_app="gamma"),
    ]
    # Then both are refused (409) with the rule as the reason, and no job is made
    for status, answer in refused:
        assert status == 409, answer
        assert "only to the application that owns the events" in str(answer["error"])

    # And bad requests are answered 400, the reason naming the field
    for fields, field in (
        ({"since": "1m"}, "to_app"),
        ({"to_app": "beta"}, "since"),
        ({"since": "yesterday-ish", "to_app": "beta"}, "since"),
        ({"since": "1m", "to_app": "beta", "rate": -1}, "rate"),
        ({"since": "1m", "to_app": "beta", "colour": "red"}, None),
    ):
        status, answer = await backfill(admin, **fields)
        assert status == 400, (fields, answer)
        if field is not None:
            assert str(answer["error"]).startswith(field), answer
    assert await store.jobs() == []


async def test_a_dry_run_counts_and_sends_nothing(
    admin: Client,
    ingress: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    store: ParkedStore,
    claims: ClaimStore,
) -> None:
    await claim(admin, "alpha", "sms.sent")
    for _ in range(3):
        await post_event(ingress, "sms.sent", "acme")

    status, job = await backfill(admin, since="1m", to_app="alpha", dry_run=True)
    assert status == 202 and job["matched"] == 3 and job["dry_run"] is True
    ended = await run(store, claims, names, int(str(job["id"])))

    assert ended.state is JobState.DONE and ended.done == 0
    assert await depth(amqp, names.app_queue("alpha")) == 3


CHILD = """
import asyncio, sys
from datetime import timedelta
from consumers.runtime.event import Event
from consumers.testing import Handled, Skipped, WorkerHarness
from router.claims.sqlite import SqliteClaimStore
from router.contract.examples import example_body
from router.contract.names import Names
from router.parked.runner import JobRunner
from router.parked.sqlite import SqliteParkedStore

async def main(database, url, prefix, job_id):
    store, claims = SqliteParkedStore(database), SqliteClaimStore(database)
    await store.open()
    await claims.open()
    runner = JobRunner(store, url, Names(prefix), owner="doomed", lease=timedelta(seconds=2),
                       window=8, unmarked=16, settle_every=0.05, claims_of=claims.list)
    await runner.run_job(int(job_id))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_backfill_killed_half_way_is_resumed_without_loss(
    admin: Client,
    ingress: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    database: Path,
    store: ParkedStore,
    claims: ClaimStore,
) -> None:
    # Given 120 events of alpha's in the archive, handled (taken off its queue) already
    await claim(admin, "alpha", "sms.sent")
    total = 120
    bodies = [example_body("sms.sent", "acme", external_id=n) for n in range(total)]
    posted = {await post_event(ingress, "sms.sent", body=body) for body in bodies}
    queue = await _queue(amqp, names.app_queue("alpha"))
    await take(queue, total)

    # And a backfill of them at 40 a second, run by a runner in another process
    status, job = await backfill(admin, since="1m", to_app="alpha", rate=40)
    assert status == 202 and job["matched"] == total
    job_id = int(str(job["id"]))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        *(str(database), AMQP_URL, names.prefix, str(job_id)),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )

    # When that process is killed (SIGKILL) part way
    try:
        async with asyncio.timeout(TIMEOUT):
            while (await store.job(job_id)).done < total // 3:
                await asyncio.sleep(0.05)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), TIMEOUT)
    killed = await store.job(job_id)
    assert killed.state is JobState.RUNNING and killed.lease_owner == "doomed"
    assert killed.done < total

    # And another runner takes it once the dead one's lease expired
    ended = await run(store, claims, names, job_id)

    # Then every event arrived (those in flight at the kill perhaps twice: the worker's
    # idempotency takes them once per job) and the job counts each once
    assert (ended.state, ended.done, ended.failed) == (JobState.DONE, total, 0)
    arrived: list[AbstractIncomingMessage] = await take(
        queue, await depth(amqp, names.app_queue("alpha"))
    )
    ids = Counter(m.message_id for m in arrived)
    assert set(ids) == posted
    assert sum(ids.values()) - total <= 16


def test_the_command_line_counts_a_dry_run_and_refuses_an_application_without_claims(
    capsys: pytest.CaptureFixture[str], admin_settings: Settings, admin: Client
) -> None:
    env = ["--database-url", admin_settings.database_url.reveal()]
    env += ["--amqp-url", AMQP_URL, "--namespace", admin_settings.names.prefix]
    code = main(["history", "replay", "--since", "1m", "--to-app", "gamma", "--dry-run", *env])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.strip().splitlines() == [
        "attentive-router: gamma claims no * events: a backfill goes only to the application "
        "that owns the events"
    ]


async def _queue(amqp: AbstractRobustConnection, name: str) -> AbstractQueue:
    channel = await amqp.channel()
    return await channel.get_queue(name)


async def test_a_worker_handles_a_backfilled_event_again_once_per_job() -> None:
    # Given a worker that handled an event
    worker, seen = recording_worker()
    harness = WorkerHarness(worker)
    body = example_body("sms.sent", "acme")
    assert await harness.deliver(body) == Handled()

    # When a backfill delivers it again, twice (a runner killed in flight publishes again),
    # and a second backfill once more
    def backfilled(job: int) -> Event:
        return Event.from_body(body, headers={REPLAY_JOB_HEADER: job, REPLAY_COUNT_HEADER: 1})

    outcomes = [await harness.deliver(backfilled(job)) for job in (7, 7, 8)]

    # Then each backfill has it handled once: the copy the job sent twice is a duplicate
    assert outcomes == [Handled(), Skipped("duplicate"), Handled()]
    assert len(seen) == 3


async def test_a_claim_granted_with_backfill_gets_the_archives_last_days_of_its_events(
    admin: Client,
    ingress: Client,
    store: ParkedStore,
    claims: ClaimStore,
    names: Names,
    amqp: AbstractRobustConnection,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two sms.sent and an email in the archive, that nobody claimed when they came
    for body in (example_body("sms.sent", "acme", external_id=n) for n in range(2)):
        await post_event(ingress, "sms.sent", body=body)
    await post_event(ingress, "email.opened", "acme")

    # When a new application claims sms.sent, asking for the last day's events too
    url = str(admin.make_url("")).rstrip("/")
    argv = ["claims", "add", "alpha", "sms.sent", "--backfill", "1d", "--admin-url", url]
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", TOKEN)
    code = await asyncio.to_thread(main, argv)

    # Then the claim is granted and a backfill job of the two is made, which a keeper runs
    _, err = capsys.readouterr()
    assert code == 0, err
    [job] = await store.jobs()
    assert "backfill job" in err and f"jobs show {job.id}" in err
    assert (job.kind.value, job.matched, job.query.app) == ("backfill", 2, "alpha")
    assert str(job.query.pattern) == "sms.sent"
    await run(store, claims, names, job.id)
    assert await depth(amqp, names.app_queue("alpha")) == 2

    # And a span that is not one is wrong usage, and changes nothing
    with pytest.raises(SystemExit) as wrong:
        main(["claims", "add", "beta", "email.*", "--backfill", "a week", "--admin-url", url])
    assert wrong.value.code == 2
    assert [c.app for c in await claims.list()] == ["alpha"]
