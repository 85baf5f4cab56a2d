"""Newest wins in a worker, without a broker (issue 29, items 2-4): a handler opts in with one
argument; the harness delivers a history reordered, duplicated, concurrent and retried, as
Attentive and the runtime may; the example workers keep their state right whatever the order.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumers import Event, RetryPolicy, Worker
from consumers.attribute_forwarder import build_worker as build_forwarder
from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.newest_stores import MemoryNewestStore
from consumers.runtime.settings import WorkerSettings
from consumers.sms_audit import build_worker as build_audit
from consumers.sms_audit.query import query
from consumers.sms_audit.store import iso_utc, status_of, subscriber_name
from consumers.testing import Handled, RetryLater, Skipped, WorkerHarness
from router.contract.examples import example_payload

T0 = 1_700_000_000_000
PHONES = ("+15555550100", "+15555550101", "+15555550102")
#: Seeds of the reordered histories (each a different order, duplicates and interleaving).
SEEDS = range(12)


def sms(event_type: str, at: int, phone: str = PHONES[0]) -> dict[str, Any]:
    payload = example_payload(event_type, "acme", timestamp_ms=at)
    payload["subscriber"]["phone"] = phone
    return payload


def attribute(name: str, value: str, at: int, external_id: int = 7) -> dict[str, Any]:
    payload = example_payload("custom_attribute.set", "acme", timestamp_ms=at)
    payload["subscriber"]["external_id"] = external_id
    payload["user_property"] = {"name": name, "value": value}
    return payload


class Statuses:
    """A worker keeping each phone's subscription status, the simplest way (last write wins),
    opted in to newest wins; it counts how many handlers of one phone run at once."""

    def __init__(self, *, fail_first: Iterable[str] = (), **worker: Any) -> None:
        self.worker = Worker("statuses", **worker)
        self.status: dict[str, str] = {}
        self.running: dict[str, int] = {}
        self.overlaps = 0
        self._fail_first = set(fail_first)

        @self.worker.on("sms.subscribed", newest="subscription")
        @self.worker.on("sms.unsubscribed", newest="subscription")
        async def keep(event: Event) -> None:
            phone = event.subscriber["phone"]
            self.running[phone] = self.running.get(phone, 0) + 1
            self.overlaps += self.running[phone] > 1
            try:
                await asyncio.sleep(0)  # let any other handler of the phone in, if it could
                if event.message_id in self._fail_first:
                    self._fail_first.discard(event.message_id)
                    raise ConnectionError("the downstream failed once")
                self.status[phone] = event.type.removeprefix("sms.")
            finally:
                self.running[phone] -= 1

    def stale(self) -> float:
        labels = {"app": "statuses", "family": "subscription", "verdict": "stale"}
        value = self.worker.registry.get_sample_value(
            "attentive_worker_newest_verdicts_total", labels
        )
        return value or 0.0


def newest_status(history: list[dict[str, Any]], phone: str) -> str:
    """What a phone's newest event says (an unsubscribe wins a tie)."""
    mine = [e for e in history if e["subscriber"]["phone"] == phone]
    newest = max(mine, key=lambda e: (e["timestamp"], e["type"] == "sms.unsubscribed"))
    return str(newest["type"]).removeprefix("sms.")


# --- opting in --------------------------------------------------------------------------


async def test_an_older_subscribe_after_a_newer_unsubscribe_is_skipped_stale_and_counted() -> None:
    # Given a worker keeping statuses with newest wins, which handled an unsubscribe
    kept = Statuses()
    harness = WorkerHarness(kept.worker)
    assert await harness.deliver(sms("sms.unsubscribed", T0 + 10)) == Handled()

    # When an older subscribe arrives (Attentive's retry of it, say)
    outcome = await harness.deliver(sms("sms.subscribed", T0))

    # Then it is acked unhandled, counted, and the opt-out stands
    assert outcome == Skipped("stale")
    assert kept.status == {PHONES[0]: "unsubscribed"}
    assert kept.stale() == 1


async def test_on_equal_times_the_unsubscribe_wins_whichever_comes_first() -> None:
    for first, second in (
        ("sms.subscribed", "sms.unsubscribed"),
        ("sms.unsubscribed", "sms.subscribed"),
    ):
        # Given a subscribe and an unsubscribe of one phone at the same millisecond
        kept = Statuses()
        harness = WorkerHarness(kept.worker)

        # When they arrive in either order
        await harness.deliver(sms(first, T0))
        await harness.deliver(sms(second, T0))

        # Then the phone ends unsubscribed
        assert kept.status == {PHONES[0]: "unsubscribed"}


async def test_a_subscribe_that_failed_and_is_retried_after_a_newer_unsubscribe_is_stale() -> None:
    # Given a subscribe whose handling fails once
    subscribe = sms("sms.subscribed", T0)
    kept = Statuses(fail_first={Event.from_body(_body(subscribe)).message_id})
    harness = WorkerHarness(kept.worker)
    assert isinstance(await harness.deliver(_body(subscribe)), RetryLater)

    # When the unsubscribe that followed it is handled before the subscribe's retry
    assert await harness.deliver(sms("sms.unsubscribed", T0 + 1000)) == Handled()
    retried = await harness.deliver(_body(subscribe), attempt=2)

    # Then the retry is stale and the subscriber stays opted out
    assert retried == Skipped("stale")
    assert kept.status == {PHONES[0]: "unsubscribed"}


async def test_a_handler_without_a_family_handles_every_event_in_any_order() -> None:
    # Given a handler that did not opt in
    seen: list[int] = []
    worker = Worker("plain")

    @worker.on("sms.*")
    async def keep(event: Event) -> None:
        seen.append(event.payload["timestamp"])

    # When an older event comes after a newer one, Then both are handled
    harness = WorkerHarness(worker)
    assert await harness.deliver(sms("sms.unsubscribed", T0 + 1)) == Handled()
    assert await harness.deliver(sms("sms.subscribed", T0)) == Handled()
    assert seen == [T0 + 1, T0]


def test_a_family_must_be_a_name() -> None:
    worker = Worker("named")
    for family in ("", "  "):
        with pytest.raises(WorkerConfigError, match="key family"):
            worker.on("sms.*", newest=family)


async def test_a_new_store_after_handling_is_used_without_registering_the_metrics_twice() -> None:
    # Given a worker that handled an event with its own memory store
    kept = Statuses()
    harness = WorkerHarness(kept.worker)
    await harness.deliver(sms("sms.unsubscribed", T0 + 10))

    # When it is given another store (as the runner does at start), Then the guard uses it:
    # the old store's newest is not there, so an older subscribe is applied
    kept.worker.use_newest(MemoryNewestStore(), skew=60, lease=5)
    assert await harness.deliver(sms("sms.subscribed", T0)) == Handled()
    assert kept.status == {PHONES[0]: "subscribed"}


def test_the_settings_read_the_retention_skew_and_lease() -> None:
    env = {"WORKER_NEWEST_RETENTION": "86400", "WORKER_NEWEST_SKEW": "30", "WORKER_KEY_LEASE": "5"}
    settings = WorkerSettings.from_env(env)
    assert (settings.newest_retention, settings.newest_skew, settings.key_lease) == (86400, 30, 5)
    defaults = WorkerSettings.from_env({})
    assert (defaults.newest_retention, defaults.newest_skew, defaults.key_lease) == (
        30 * 24 * 3600,
        300,
        60,
    )
    for variable in ("WORKER_NEWEST_RETENTION", "WORKER_NEWEST_SKEW", "WORKER_KEY_LEASE"):
        with pytest.raises(WorkerConfigError, match=variable):
            WorkerSettings.from_env({variable: "0"})


# --- the harness's reordered histories --------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
async def test_any_reordering_duplication_and_retry_ends_in_each_phones_newest_state(
    seed: int,
) -> None:
    # Given subscribe and unsubscribe events of three phones, ties included, and a worker
    # whose handler fails the first delivery of some of them
    history = [
        sms(kind, T0 + at, phone)
        for phone in PHONES
        for kind, at in (
            ("sms.subscribed", 0),
            ("sms.unsubscribed", 5),
            ("sms.subscribed", 9),
            ("sms.unsubscribed", 9),
            ("sms.subscribed", 3),
        )
    ]
    failing = {Event.from_body(_body(e)).message_id for e in history[seed % 5 :: 4]}
    kept = Statuses(fail_first=failing, retry=RetryPolicy(delays=(1.0,), max_attempts=5))

    # When the harness delivers it shuffled, with duplicates, eight at once
    outcomes = await WorkerHarness(kept.worker).deliver_history(history, seed=seed)

    # Then every phone ends in its newest event's state (the tie's unsubscribe), no two
    # handlers of a phone ever ran at once, and every delivery settled
    assert kept.status == {phone: newest_status(history, phone) for phone in PHONES}
    assert kept.overlaps == 0
    assert {type(o) for o in outcomes} <= {Handled, Skipped}
    assert len(outcomes) >= len(history)


async def test_a_history_is_the_same_for_the_same_seed() -> None:
    history = [sms("sms.subscribed", T0 + i, PHONES[i % 3]) for i in range(10)]
    runs = []
    for _ in range(2):
        kept = Statuses()
        runs.append(await WorkerHarness(kept.worker).deliver_history(history, seed=3))
    assert runs[0] == runs[1]


# --- the example workers ----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
async def test_sms_audit_keeps_every_event_and_the_newest_status(tmp_path: Path, seed: int) -> None:
    # Given the sms-audit worker and a phone's subscribes and unsubscribes, ending opted out
    db = tmp_path / "audit.db"
    history = [
        sms("sms.subscribed", T0),
        sms("sms.sent", T0 + 1),
        sms("sms.unsubscribed", T0 + 2),
        sms("sms.subscribed", T0 + 3),
        sms("sms.unsubscribed", T0 + 4),
        sms("sms.subscribed", T0 + 4),
    ]
    worker = build_audit({"SMS_AUDIT_DB": str(db)})

    # When they arrive in any order, some twice
    async with WorkerHarness(worker) as harness:
        await harness.deliver_history(history, seed=seed)

    # Then the status is the newest (the tie's unsubscribe), and the log has every event once
    assert status_of(db, "acme", subscriber_name(phone=PHONES[0]) or "") == "unsubscribed"
    rows = query(db)
    assert sorted((r.occurred_at, r.event_type) for r in rows) == sorted(
        (_iso(e["timestamp"]), e["type"]) for e in history
    )


@pytest.mark.parametrize("seed", SEEDS)
async def test_the_attribute_forwarder_never_sends_an_older_value_last(seed: int) -> None:
    # Given the forwarder (its POST recorded instead of sent) and two attributes set in turn
    sent: list[tuple[str, str]] = []
    worker = build_forwarder({"ATTRIBUTE_FORWARDER_URL": "http://127.0.0.1:9/attributes"})

    async def post(event: Event) -> None:
        prop = event.payload["user_property"]
        sent.append((prop["name"], prop["value"]))

    worker.routes[0] = dataclasses.replace(worker.routes[0], handler=post)
    history = [attribute(name, f"{name}{i}", T0 + i) for name in ("tier", "city") for i in range(4)]

    # When they arrive in any order, some twice
    await WorkerHarness(worker).deliver_history(history, seed=seed)

    # Then the last value sent of each attribute is its newest, whatever came before it
    last = {name: value for name, value in sent}
    assert last == {"tier": "tier3", "city": "city3"}


def _body(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


def _iso(ms: int) -> str:
    return iso_utc(datetime.fromtimestamp(ms / 1000, tz=UTC))
