"""Metric series stay bounded whatever event types come (issue 28 item 9).

The 11 documented types and the first ``ROUTER_METRICS_MAX_OTHER_TYPES`` undocumented ones get
a ``type`` label of their own; every later type is counted as ``other``: in the router's
``attentive_router_events_published_total`` and in a worker's
``attentive_worker_events_total``, each scraped from its ``/metrics``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace

import aiohttp
import orjson
import pytest

from consumers import Event, Worker
from router.contract.events import EVENT_TYPES
from router.contract.names import WEBHOOK_PATH
from router.contract.type_labels import DEFAULT_MAX_OTHER_TYPES, OTHER, TypeLabels
from router.settings import Settings
from tests.conftest import Client, MakeIngress, StartWorker, signed
from tests.probes import internal
from tests.wire import free_port

#: Undocumented types with a label of their own, in these tests.
MAX_OTHER = 5
#: Undocumented types beyond them: each of these must be counted as other.
BEYOND = 50


def undocumented_types(count: int) -> list[str]:
    """``count`` distinct well-formed types Attentive does not document."""
    return [f"loyalty.points_{n}" for n in range(count)]


def series(metrics: str, name: str) -> dict[str, float]:
    """The samples of ``name`` in a Prometheus text page, by their ``type`` label."""
    found: dict[str, float] = {}
    for labels, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", metrics, re.MULTILINE):
        (event_type,) = re.findall(r'type="([^"]*)"', labels)
        assert event_type not in found, f"two series of type {event_type}: {labels}"
        found[event_type] = float(value)
    return found


# -- the labels, pure ------------------------------------------------------------------------


def test_documented_types_and_the_first_others_get_their_own_label_the_rest_other() -> None:
    # Given labels with room for five undocumented types
    labels = TypeLabels(MAX_OTHER)
    others = undocumented_types(MAX_OTHER + BEYOND)

    # When the documented types and 55 undocumented ones come, twice over
    seen = [labels(t) for t in [*EVENT_TYPES, *others] * 2]

    # Then each documented type and the first five others are their own label, the rest other
    own = [*EVENT_TYPES, *others[:MAX_OTHER]]
    assert set(seen) == {*own, OTHER}
    assert [labels(t) for t in others[MAX_OTHER:]] == [OTHER] * BEYOND
    # And a type seen first keeps its label: the later ones do not take its place
    assert labels(others[0]) == others[0]


def test_what_is_no_event_type_is_other_and_takes_no_place() -> None:
    labels = TypeLabels(1)
    assert [labels(t) for t in ("", "SMS Sent", "sms", "x" * 300, OTHER)] == [OTHER] * 5
    assert labels("loyalty.joined") == "loyalty.joined"  # (the one place was still free)
    assert labels("loyalty.left") == OTHER


def test_with_no_room_every_undocumented_type_is_other() -> None:
    labels = TypeLabels(0)
    assert labels("loyalty.joined") == OTHER
    assert labels("sms.sent") == "sms.sent"
    assert TypeLabels().max_other == DEFAULT_MAX_OTHER_TYPES
    with pytest.raises(ValueError):
        TypeLabels(-1)


def test_the_setting_is_read_by_the_router_and_the_worker() -> None:
    from consumers.runtime.settings import WorkerSettings

    env = {"ROUTER_METRICS_MAX_OTHER_TYPES": "3"}
    assert Settings.from_env(env).metrics_max_other_types == 3
    assert WorkerSettings.from_env(env).metrics_max_other_types == 3
    assert Settings.from_env({}).metrics_max_other_types == DEFAULT_MAX_OTHER_TYPES


# -- the router and a worker, against the real broker -----------------------------------------


async def send_every_type(ingress: Client) -> list[str]:
    """Send one signed event of each documented type and of MAX_OTHER + BEYOND others; the
    types, in the order sent."""
    types = [*EVENT_TYPES, *undocumented_types(MAX_OTHER + BEYOND)]
    for n, event_type in enumerate(types):
        body = orjson.dumps({"type": event_type, "n": n, "company": {"company_id": "acme"}})
        response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
        assert response.status == 200, await response.text()
    return types


@pytest.mark.broker
async def test_the_routers_series_are_bounded_and_other_carries_the_rest(
    make_ingress: MakeIngress, settings: Settings
) -> None:
    # Given an ingress that gives five undocumented types a label of their own
    ingress = await make_ingress(replace(settings, metrics_max_other_types=MAX_OTHER))

    # When the 11 documented types and 55 undocumented ones are published
    types = await send_every_type(ingress)

    # Then /metrics has a series for each documented type, the first five others, and other
    published = series(
        await (await internal(ingress, "/metrics")).text(),
        "attentive_router_events_published_total",
    )
    assert set(published) == {*EVENT_TYPES, *types[11 : 11 + MAX_OTHER], OTHER}
    assert len(published) == len(EVENT_TYPES) + MAX_OTHER + 1
    # And other carries the 50 types beyond them, every other type exactly its one event
    assert published.pop(OTHER) == BEYOND
    assert set(published.values()) == {1.0}


@pytest.mark.broker
async def test_a_workers_series_are_bounded_and_other_carries_the_rest(
    ingress: Client, start_worker: StartWorker
) -> None:
    # Given a worker for every event, told (as ROUTER_METRICS_MAX_OTHER_TYPES would) to give
    # five undocumented types a label of their own, serving its /metrics
    worker = Worker("series")
    handled: list[str] = []

    @worker.on("*")
    async def record(event: Event) -> None:
        handled.append(event.type)

    port = free_port()
    await start_worker(worker, metrics_port=port, metrics_max_other_types=MAX_OTHER)

    # When it handles the 11 documented types and 55 undocumented ones
    types = await send_every_type(ingress)
    async with asyncio.timeout(30):
        while len(handled) < len(types):
            await asyncio.sleep(0.05)
    assert sorted(handled) == sorted(types)

    # Then its /metrics has a series for each documented type, five others, and other
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as answer,
    ):
        text = await answer.text()
    outcomes = series(text, "attentive_worker_events_total")
    # (deliveries run side by side: which five came first is the worker's to say)
    own_others = set(outcomes) - {*EVENT_TYPES, OTHER}
    assert len(own_others) == MAX_OTHER and own_others <= set(types[11:])
    assert set(EVENT_TYPES) | {OTHER} <= set(outcomes)
    assert len(outcomes) == len(EVENT_TYPES) + MAX_OTHER + 1
    # And other carries the 50 handled beyond them
    assert outcomes.pop(OTHER) == BEYOND
    assert set(outcomes.values()) == {1.0}
