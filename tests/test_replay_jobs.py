"""Replay and purge jobs run against the real RabbitMQ, from SQLite and PostgreSQL stores:
entries go back byte-exact to where they belong, with confirms; limits, rates, dry runs,
cancels and failed publishes; two runners on one job; a runner killed half-way and resumed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from pamqp import frame as pamqp_frame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from router.amqp import topology
from router.amqp.frames import Properties as RouterProperties
from router.amqp.properties import content_header, encode, encode_router
from router.contract import envelope
from router.contract.names import COMPANY_HEADER, REPLAY_COUNT_HEADER, Names
from router.parked.jobs import AuditAction, Job, JobRequest, JobState
from router.parked.model import (
    PER_DELIVERY_HEADERS,
    ParkedEvent,
    Properties,
    State,
    parked_event,
)
from router.parked.query import Query
from router.parked.replay import Pacer
from router.parked.runner import JobRunner
from router.parked.store import ParkedStore
from tests.conftest import AMQP_URL, TapFactory, depth, take
from tests.parked_stores import (
    NOW,
    TIMEOUT,
    Backend,
    backend,
    backend_for,
    body_of,
    dead_letter,
    store,
)

pytestmark = pytest.mark.database
__all__ = ["backend", "store"]  # fixtures, used by name

APP = "alerts"
ROOT = str(Path(__file__).resolve().parent.parent)
WINDOW = 32


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[ParkedStore]:
    """A store in a SQLite file of the test's own (for stories the backend does not change)."""
    async for made in backend_for("sqlite", tmp_path):
        opened = await made.opened()
        yield opened
        await opened.close()


@pytest.fixture
async def app_queue(amqp: AbstractRobustConnection, names: Names) -> AsyncIterator[AbstractQueue]:
    """The application's queue and its requeue exchange, as a claim makes them."""
    channel = await amqp.channel()
    await topology.declare(channel, names)
    yield await topology.declare_app_queue(channel, names, APP, with_dead_letter_queue=False)
    await channel.close()


def runner_for(store: ParkedStore, names: Names, **options: object) -> JobRunner:
    settings: dict[str, object] = {"window": WINDOW, "settle_every": 0.05, **options}
    return JobRunner(store, AMQP_URL, names, **settings)  # type: ignore[arg-type]


async def park(
    store: ParkedStore, count: int, event: str = "sms.subscribed", app: str = APP
) -> None:
    entries = [
        dead_letter(body_of(event, n=n), message_id=f"{event}-{n}", app=app) for n in range(count)
    ]
    assert await store.add_many(entries) == count


def unrouted(event: str, n: int) -> ParkedEvent:
    properties = Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id=f"{event}-{n}",
        timestamp=NOW.replace(microsecond=0),
        headers={COMPANY_HEADER: "c1"},
    )
    return parked_event(
        body_of(event, n=n),
        properties,
        place="unrouted",
        app=None,
        routing_key=f"{event}.c1",
        seen_at=NOW,
    )


async def replay(
    store: ParkedStore, event: str | None = None, place: str = "dlq", **options: object
) -> Job:
    query = Query.build(place=place, app=APP if place == "dlq" else None, event=event)
    request = JobRequest.build("replay", query, "ops-alice", **options)  # type: ignore[arg-type]
    return await store.create_job(request)


async def states(store: ParkedStore) -> Counter[State]:
    """How many entries the store has in each state."""
    counts = Counter({state: await store.count(Query(state=state)) for state in State})
    return +counts  # without the zeros


async def until(
    store: ParkedStore, job_id: int, done: int, runner: asyncio.subprocess.Process | None = None
) -> None:
    """Wait until the job recorded ``done`` entries (while ``runner`` runs, when given)."""
    async with asyncio.timeout(TIMEOUT):
        while (await store.job(job_id)).done < done:
            assert runner is None or runner.returncode is None, "the runner process ended"
            await asyncio.sleep(0.02)


# -- where replays go --------------------------------------------------------------------------


async def test_a_replay_puts_dlq_entries_back_on_their_queue_byte_exact(
    backend: Backend, names: Names, app_queue: AbstractQueue, amqp: AbstractRobustConnection
) -> None:
    # Given 20 subscribed and 5 sent dead letters of an application in the store
    store = await backend.opened()
    await park(store, 20, "sms.subscribed")
    await park(store, 5, "sms.sent")
    originals = {e.message_id: e for e in (await store.page(Query(), limit=100)).entries}

    # When ops replay the subscribed ones and a runner runs the job
    job = await replay(store, "sms.subscribed")
    runner = runner_for(store, names)
    ended = await runner.run_job(job.id)
    await runner.close()

    # Then those 20 are in the application's queue as they came, counted one more replay
    assert ended is not None
    assert (ended.state, ended.matched, ended.done, ended.failed) == (JobState.DONE, 20, 20, 0)
    delivered = await take(app_queue, 20)
    assert sorted(m.message_id or "" for m in delivered) == sorted(
        f"sms.subscribed-{n}" for n in range(20)
    )
    for message in delivered:
        original = originals[message.message_id]
        assert message.body == original.body
        counted = {k: v for k, v in message.headers.items() if k not in PER_DELIVERY_HEADERS}
        assert counted == envelope.replayed(original.headers)  # the queue counts deliveries
        assert message.headers[REPLAY_COUNT_HEADER] == original.replays + 1 == 1
        assert message.routing_key == original.routing_key
        sent = Properties.from_amqp(message.properties)
        kept = replace(original.properties, headers=sent.headers)
        assert (sent.content_type, sent.delivery_mode, sent.message_id) == (
            kept.content_type,
            kept.delivery_mode,
            kept.message_id,
        )
        assert sent.timestamp is not None and kept.timestamp is not None
        assert sent.timestamp.replace(tzinfo=None) == kept.timestamp.replace(tzinfo=None)
    assert await depth(amqp, names.app_queue(APP)) == 0

    # And they are marked replayed by whoever asked; the sent ones are still parked
    assert await states(store) == {State.REPLAYED: 20, State.PARKED: 5}
    replayed = (await store.page(Query(state=State.REPLAYED), limit=100)).entries
    assert {e.state_by for e in replayed} == {"ops-alice"}
    (record,) = await store.audit(job_id=job.id)
    assert (record.action, record.counts["done"], record.counts["failed"]) == (
        AuditAction.REPLAY,
        20,
        0,
    )
    await store.close()


async def test_unrouted_entries_go_to_whoever_owns_the_type_now(
    sqlite_store: ParkedStore,
    names: Names,
    tap_factory: TapFactory,
    amqp: AbstractRobustConnection,
) -> None:
    # Given 3 SMS and 2 email events parked as unrouted, and an application that owns SMS now
    entries = [unrouted("sms.sent", n) for n in range(3)] + [
        unrouted("email.opened", n) for n in range(2)
    ]
    await sqlite_store.add_many(entries)
    tap = await tap_factory("sms.#")
    runner = runner_for(sqlite_store, names)

    # When ops replay the unrouted SMS events
    job = await runner.run_job((await replay(sqlite_store, "sms.*", place="unrouted")).id)

    # Then the owner has them, with their routing keys, and the emails are still parked
    assert job is not None and (job.done, job.failed) == (3, 0)
    delivered = await tap.take(3)
    assert sorted(m.routing_key or "" for m in delivered) == ["sms.sent.c1"] * 3
    assert all(m.headers[REPLAY_COUNT_HEADER] == 1 for m in delivered)
    assert await states(sqlite_store) == {State.REPLAYED: 3, State.PARKED: 2}

    # When the emails are replayed while nobody owns them, they go back to unrouted
    rest = await runner.run_job((await replay(sqlite_store, place="unrouted")).id)
    assert rest is not None and (rest.done, rest.failed) == (2, 0)
    assert await depth(amqp, names.unrouted_queue) == 2
    await runner.close()


# -- what a job may be asked -------------------------------------------------------------------


async def test_a_limit_replays_that_many_and_a_dry_run_none(
    sqlite_store: ParkedStore,
    names: Names,
    app_queue: AbstractQueue,
    amqp: AbstractRobustConnection,
) -> None:
    await park(sqlite_store, 12)
    runner = runner_for(sqlite_store, names)

    counted = await runner.run_job((await replay(sqlite_store, dry_run=True)).id)
    assert counted is not None
    assert (counted.state, counted.matched, counted.done) == (JobState.DONE, 12, 0)
    assert await depth(amqp, names.app_queue(APP)) == 0
    assert await states(sqlite_store) == {State.PARKED: 12}

    limited = await runner.run_job((await replay(sqlite_store, limit=5)).id)
    assert limited is not None and (limited.matched, limited.done) == (5, 5)
    assert len(await take(app_queue, 5)) == 5
    assert await depth(amqp, names.app_queue(APP)) == 0
    assert await states(sqlite_store) == {State.REPLAYED: 5, State.PARKED: 7}
    await runner.close()


async def test_a_rate_paces_every_publish(
    sqlite_store: ParkedStore, names: Names, app_queue: AbstractQueue
) -> None:
    # Given a pacer whose clock moves only when it pauses (so nothing here is timed)
    pacers: list[VirtualPacer] = []

    def virtual(rate: float | None) -> Pacer:
        pacers.append(VirtualPacer(rate))
        return pacers[-1]

    await park(sqlite_store, 20)

    # When 20 entries are replayed at 10 a second
    runner = runner_for(sqlite_store, names, pacer=virtual)
    job = await runner.run_job((await replay(sqlite_store, rate=10)).id)

    # Then every publish after the first waited its tenth of a second
    assert job is not None and job.done == 20
    (pacer,) = pacers
    assert pacer.waits == 19
    assert sum(pacer.slept) == pytest.approx(1.9)
    assert len(await take(app_queue, 20)) == 20
    await runner.close()


class VirtualPacer(Pacer):
    def __init__(self, rate: float | None) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        super().__init__(rate, clock=lambda: self.now, sleep=self._pause)

    async def _pause(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_a_cancelled_replay_stops_at_its_next_batch(
    sqlite_store: ParkedStore,
    names: Names,
    amqp: AbstractRobustConnection,
    app_queue: AbstractQueue,
) -> None:
    # Given a replay of 300 running at 100 a second
    await park(sqlite_store, 300)
    job = await replay(sqlite_store, rate=100)
    runner = runner_for(sqlite_store, names)
    running = asyncio.create_task(runner.run_job(job.id))

    # When ops cancel it once it has done 20
    await until(sqlite_store, job.id, 20)
    await sqlite_store.cancel_job(job.id, "ops-carol")
    async with asyncio.timeout(TIMEOUT):
        ended = await running

    # Then it stopped, cancelled: what it published is marked, the rest still parked
    assert ended is not None and ended.state is JobState.CANCELLED
    assert 20 <= ended.done < 300 and ended.failed == 0
    assert await states(sqlite_store) == {
        State.REPLAYED: ended.done,
        State.PARKED: 300 - ended.done,
    }
    assert await depth(amqp, names.app_queue(APP)) == ended.done
    actions = [r.action for r in await sqlite_store.audit(job_id=job.id)]
    assert actions == [AuditAction.REPLAY, AuditAction.CANCEL]
    await runner.close()


async def test_a_replay_whose_destination_is_gone_fails_and_leaves_them_parked(
    sqlite_store: ParkedStore,
    names: Names,
    amqp: AbstractRobustConnection,
    app_queue: AbstractQueue,
) -> None:
    # Given dead letters of an application whose queue was deleted, and of one whose
    # exchanges never existed
    await park(sqlite_store, 4)
    await park(sqlite_store, 3, app="billing")
    channel = await amqp.channel()
    await channel.queue_delete(names.app_queue(APP))

    # When they are replayed
    query = Query.build(place="dlq")
    request = JobRequest.build("replay", query, "ops-alice")
    runner = runner_for(sqlite_store, names)
    job = await runner.run_job((await sqlite_store.create_job(request)).id)

    # Then each publish failed (returned unroutable, or no exchange), none is marked
    assert job is not None and job.state is JobState.DONE
    assert (job.matched, job.done, job.failed) == (7, 0, 7)
    assert await states(sqlite_store) == {State.PARKED: 7}
    await runner.close()


async def test_a_purge_marks_its_entries_without_the_broker(sqlite_store: ParkedStore) -> None:
    await park(sqlite_store, 1500)
    await park(sqlite_store, 5, "sms.sent")
    purge = JobRequest.build("purge", Query.build(place="dlq", event="sms.subscribed"), "ops")
    runner = JobRunner(sqlite_store, "amqp://nowhere.invalid:1/", Names("unused"))

    job = await runner.run_job((await sqlite_store.create_job(purge)).id)

    assert job is not None and (job.state, job.matched, job.done) == (JobState.DONE, 1500, 1500)
    assert await states(sqlite_store) == {State.PURGED: 1500, State.PARKED: 5}


# -- what a replay sends ----------------------------------------------------------------------

EVERY_PROPERTY = Basic.Properties(
    content_type="application/json", content_encoding="gzip", delivery_mode=2, priority=5,
    headers={"s": "text", "n": 7, "big": 2**40, "negative": -3, COMPANY_HEADER: "c1"},
    correlation_id="corr-1", reply_to="replies", expiration="60000", message_id="m-1",
    timestamp=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC), message_type="sms.subscribed",
    user_id="guest", app_id="attentive-router",
)  # fmt: skip


@pytest.mark.parametrize(
    "properties",
    [
        EVERY_PROPERTY,
        Basic.Properties(),
        Basic.Properties(message_id="", headers={}, priority=0),
        Basic.Properties(timestamp=datetime(2026, 3, 4, 5, 6, 7)),  # naive: read as UTC
        Basic.Properties(headers={"flag": True, "ratio": Decimal("1.5"), "nested": {"a": [1]}}),
    ],
    ids=["every", "none", "empty-and-zero", "naive-time", "other-header-types"],
)
def test_properties_are_encoded_as_pamqp_reads_them(properties: Basic.Properties) -> None:
    # Given properties a parked message may have had; When they are encoded for a replay
    header = content_header(1, 1234, encode(properties))

    # Then pamqp reads back what it reads from its own encoding of them
    _, channel, read = pamqp_frame.unmarshal(header)
    _, _, expected = pamqp_frame.unmarshal(
        pamqp_frame.marshal(ContentHeader(0, 1234, properties), 1)
    )
    assert isinstance(read, ContentHeader) and isinstance(expected, ContentHeader)
    assert (channel, read.body_size) == (1, 1234)
    assert read.properties == expected.properties


def test_a_property_amqp_cannot_carry_is_refused_when_encoded() -> None:
    with pytest.raises(ValueError):
        encode(Basic.Properties(correlation_id="x" * 256))


@pytest.mark.parametrize(
    "properties",
    [
        RouterProperties("application/json", "m-1", 1_770_000_000, {"s": "é", "n": 7, "t": True}),
        RouterProperties("application/json", "m-2", 0, {}),
        RouterProperties("", "m-3", 5, {"x": "y"}),
        RouterProperties("application/json", "", 5, {"x": "y"}),
    ],
    ids=["usual", "no-headers", "no-content-type", "no-message-id"],
)
def test_the_routers_five_properties_encode_as_any_properties_do(
    properties: RouterProperties,
) -> None:
    # Given the properties the ingress sets on an event (as a backfill sends it again)
    # When they are encoded by the backfill's shortcut
    # Then the bytes are those of the general encoding of the same properties
    general = Basic.Properties(
        content_type=properties.content_type,
        headers=dict(properties.headers),
        delivery_mode=properties.delivery_mode,
        message_id=properties.message_id,
        timestamp=datetime.fromtimestamp(properties.timestamp, UTC),
    )
    assert encode_router(properties) == encode(general)


def besides_headers(properties: Properties) -> Properties:
    """The properties but the headers, the timestamp in UTC without its zone."""
    stamp = properties.timestamp
    if stamp is not None and stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC)
    naive = None if stamp is None else stamp.replace(tzinfo=None)
    return replace(properties, headers={}, timestamp=naive)


async def test_a_replay_sends_every_property_its_entry_came_with(
    sqlite_store: ParkedStore, names: Names, app_queue: AbstractQueue
) -> None:
    # Given a dead letter that came with every basic property set, and one with none
    full = parked_event(
        body_of("sms.subscribed", n=1), EVERY_PROPERTY, place="dlq", app=APP,
        routing_key="sms.subscribed.c1", seen_at=NOW,
    )  # fmt: skip
    bare = parked_event(
        b"{}", Basic.Properties(), place="dlq", app=APP, routing_key="x.c1", seen_at=NOW
    )
    assert await sqlite_store.add_many([full, bare]) == 2

    # When both are replayed
    runner = runner_for(sqlite_store, names)
    ended = await runner.run_job((await replay(sqlite_store)).id)
    await runner.close()

    # Then both arrive, each with the properties it had (and the replay counted)
    assert ended is not None and (ended.done, ended.failed) == (2, 0)
    by_body = {m.body: m for m in await take(app_queue, 2)}
    sent = Properties.from_amqp(by_body[full.body].properties)
    headers = {k: v for k, v in sent.headers.items() if k not in PER_DELIVERY_HEADERS}
    assert headers == envelope.replayed(full.headers)
    assert besides_headers(sent) == besides_headers(full.properties)
    plain = Properties.from_amqp(by_body[b"{}"].properties)
    assert (plain.content_type, plain.message_id, plain.timestamp) == (None, None, None)
    assert plain.headers[REPLAY_COUNT_HEADER] == 1


# -- several runners ---------------------------------------------------------------------------


async def test_two_runners_on_the_same_job_run_it_once(
    store: ParkedStore, names: Names, app_queue: AbstractQueue, amqp: AbstractRobustConnection
) -> None:
    await park(store, 200)
    job = await replay(store)
    one, two = runner_for(store, names, owner="one"), runner_for(store, names, owner="two")

    async with asyncio.timeout(TIMEOUT):
        ran = await asyncio.gather(one.run_job(job.id), two.run_job(job.id))

    assert sorted(r is None for r in ran) == [False, True]
    delivered = await take(app_queue, 200)
    assert len({m.message_id for m in delivered}) == 200
    assert await depth(amqp, names.app_queue(APP)) == 0
    assert (await store.job(job.id)).done == 200
    await one.close()
    await two.close()


CHILD = """
import asyncio, sys
from datetime import timedelta
from router.contract.names import Names
from router.parked.runner import JobRunner
from tests.parked_stores import Backend

async def main(kind, location, table, url, prefix, job_id, window):
    store = Backend(kind, location, table).make()
    await store.open()
    runner = JobRunner(store, url, Names(prefix), owner="doomed", lease=timedelta(seconds=2),
                       window=int(window) // 2, unmarked=int(window), settle_every=0.05)
    await runner.run_job(int(job_id))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_replay_killed_half_way_is_resumed_by_another_runner(
    backend: Backend, names: Names, app_queue: AbstractQueue, amqp: AbstractRobustConnection
) -> None:
    # Given a replay of 600 entries at 200 a second, run by a runner in another process
    store = await backend.opened()
    total = 600
    await park(store, total)
    job = await replay(store, rate=200)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        *(backend.kind, backend.location, backend.table, AMQP_URL),
        *(names.prefix, str(job.id), str(WINDOW)),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )

    # When that process is killed (SIGKILL) at about half
    try:
        await until(store, job.id, total // 2, child)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), TIMEOUT)
    assert child.returncode == -signal.SIGKILL
    killed = await store.job(job.id)
    assert killed.state is JobState.RUNNING and killed.lease_owner == "doomed"
    assert killed.done < total

    # And another runner takes the job once the dead one's lease expired
    heir = runner_for(store, names, owner="heir")
    async with asyncio.timeout(TIMEOUT):
        while (ended := await heir.run_job(job.id)) is None:
            await asyncio.sleep(0.1)

    # Then every entry is replayed once in the store, every event arrived, and no more than
    # the in-flight window (published, not yet marked) arrived twice
    assert (ended.state, ended.done, ended.failed) == (JobState.DONE, total, 0)
    assert await states(store) == {State.REPLAYED: total}
    arrived = await depth(amqp, names.app_queue(APP))
    delivered: list[AbstractIncomingMessage] = await take(app_queue, arrived)
    ids = Counter(m.message_id for m in delivered)
    assert len(ids) == total
    assert 0 <= arrived - total <= WINDOW
    await heir.close()
    await store.close()
