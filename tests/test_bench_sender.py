"""The benchmark's open-loop sender (phase c of ``make bench``), against a real ingress: what
it sends must be what the end-to-end figure assumes."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import orjson
import pytest

from bench.common import KEY, SENT_AT, WARMUP
from bench.sender import OpenLoopSender
from router.contract.names import WEBHOOK_PATH
from router.settings import Settings
from tests.conftest import MakeIngress, TapFactory

pytestmark = pytest.mark.broker


async def test_each_body_carries_the_moment_it_was_due_and_every_answer_is_counted(
    make_ingress: MakeIngress, settings: Settings, tap_factory: TapFactory
) -> None:
    # Given an ingress that knows the bench's signing key, and a service taking every event
    ingress = await make_ingress(replace(settings, signing_keys=(KEY,)))
    everything = await tap_factory("#")

    # When the sender sends 200 events a second for 0.5 s after 0.1 s of warm-up
    url = str(ingress.make_url(WEBHOOK_PATH))
    before = time.time()
    result = await OpenLoopSender(url, rate=200, seconds=0.5, warmup=0.1).run()

    # Then every measured request was answered 200, and only those were counted
    assert (result["requests"], result["statuses"], result["errors"]) == (100, {"200": 100}, 0)
    assert result["http"]["count"] == 100

    # And each of the 120 events carries its due moment: 5 ms apart, from when it started;
    # the first 20 are marked as warm-up, so the worker does not count them
    payloads = sorted(
        (orjson.loads(m.body) for m in await everything.take(120)), key=lambda p: p[SENT_AT]
    )
    due = [p[SENT_AT] for p in payloads]
    assert before < due[0] < before + 1
    assert all(abs(later - earlier - 0.005) < 1e-5 for earlier, later in itertools.pairwise(due))
    assert [bool(p.get(WARMUP)) for p in payloads] == [True] * 20 + [False] * 100
