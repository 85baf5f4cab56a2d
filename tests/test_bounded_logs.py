"""Strangers cannot fill the logs (issue 28 item 4).

A line about a request that is no authentic webhook carries its path cut to
:data:`~router.ingress.refused_log.PATH_CHARS` characters, and such lines are written at
``ROUTER_REFUSED_LOG_RATE`` a second after a burst; those held back are counted in a
``log_lines_dropped`` line. Lines about authentic webhooks are always written, and
``/metrics`` counts every request. Last, 10,000 refused requests against the real ingress
process: the bytes it logs stay under the bound the rate gives.
"""

from __future__ import annotations

import asyncio
import random
import string
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from router.contract.examples import example_body
from router.contract.names import WEBHOOK_PATH, Names
from router.ingress import refused_log
from router.ingress.refused_log import (
    BURST_SECONDS,
    PATH_CHARS,
    SUMMARY_EVERY,
    RefusedLog,
    cut_path,
)
from router.settings import Settings
from tests.conftest import AMQP_URL, SIGNING_KEY, MakeIngress, served_ingress, signed
from tests.hostile import Ingress, event, running_ingress, split_responses, webhook

# -- the path, cut ---------------------------------------------------------------------------


def test_a_short_path_is_kept_whole_and_a_long_one_cut_with_a_marker() -> None:
    assert cut_path("/webhooks/attentive") == "/webhooks/attentive"
    assert cut_path("/" + "a" * (PATH_CHARS - 1)) == "/" + "a" * (PATH_CHARS - 1)
    long = "/" + "b" * 5000
    assert cut_path(long) == long[:PATH_CHARS] + f"…(+{len(long) - PATH_CHARS})"


# -- the token bucket, on a clock of the test's own --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_let_through_then_the_rate_and_the_rest_is_counted_by_kind() -> None:
    # Given two lines a second, so a burst of twenty
    clock = Clock()
    gate = RefusedLog(2, clock=clock)
    assert gate.burst == 2 * BURST_SECONDS

    # When 25 lines come at once, then 5 more a second later
    first = [gate.allow("unauthorized") for _ in range(25)]
    clock.now += 1.0
    later = [gate.allow("not_found") for _ in range(5)]

    # Then the burst is written, then two a second; the rest is counted by kind
    assert first == [True] * 20 + [False] * 5
    assert later == [True, True, False, False, False]
    assert gate.dropped == {"unauthorized": 5, "not_found": 3}

    # And a flush writes one summary, then nothing until more are held back
    clock.now += 0.5
    with capture_logs() as logs:
        gate.flush()
        gate.flush()
    assert logs == [
        {
            "event": "log_lines_dropped",
            "log_level": "warning",
            "dropped": {"not_found": 3, "unauthorized": 5},
            "total": 8,
            "seconds": 1.5,
            "rate": 2,
        }
    ]
    assert gate.dropped == {}


def test_an_idle_bucket_fills_up_to_the_burst_only() -> None:
    clock = Clock()
    gate = RefusedLog(1, clock=clock)
    clock.now += 3600  # an hour of quiet
    allowed = sum(gate.allow("not_found") for _ in range(100))
    assert allowed == BURST_SECONDS


def test_a_rate_of_zero_writes_none_and_counts_all() -> None:
    gate = RefusedLog(0, clock=Clock())
    assert not any(gate.allow("bad_request") for _ in range(50))
    assert gate.dropped == {"bad_request": 50}
    with pytest.raises(ValueError):
        RefusedLog(-1)


async def test_the_summary_follows_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a gate that has no room left, and summaries every 50 ms
    monkeypatch.setattr(refused_log, "SUMMARY_EVERY", 0.05)
    gate = RefusedLog(0)
    with capture_logs() as logs:
        # When lines are held back
        for _ in range(3):
            gate.allow("method_not_allowed")
        # Then, with no flush asked for, one summary says so
        async with asyncio.timeout(5):
            while not logs:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    assert [(e["event"], e["dropped"]) for e in logs] == [
        ("log_lines_dropped", {"method_not_allowed": 3})
    ]


# -- the ingress in this process -------------------------------------------------------------


@pytest.mark.broker
async def test_refused_requests_are_logged_within_the_rate_and_webhooks_always(
    make_ingress: MakeIngress, settings: Settings
) -> None:
    # Given an ingress that writes one refused line a second (ten at once)
    ingress = await make_ingress(replace(settings, refused_log_rate=1))
    body = example_body("sms.sent")

    with capture_logs() as logs:
        # When 40 unsigned webhooks and 40 requests for long paths come, a signed one among them
        started = time.monotonic()
        for n in range(40):
            await ingress.post(WEBHOOK_PATH, data=body)
            assert (await ingress.get("/" + "x" * 3000 + str(n))).status == 404
            if n == 20:
                assert (await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))).ok
        elapsed = time.monotonic() - started
        # And the ingress stops
        await ingress.close()

    # Then the signed webhook was logged, and at most the burst and the rate of the others
    lines = [e for e in logs if e["event"] == "webhook"]
    assert [e["outcome"] for e in lines].count("accepted") == 1
    refused = [e for e in lines if e["outcome"] != "accepted"]
    assert len(refused) <= BURST_SECONDS + elapsed + 1
    # And no path is longer than the cut and its marker
    assert all(len(e["path"]) <= PATH_CHARS + 8 for e in refused)
    assert any(e["path"].endswith("…(+2938)") for e in refused)
    # And the summary at the stop counts every line held back, by outcome
    (summary,) = [e for e in logs if e["event"] == "log_lines_dropped"]
    counted = {"unauthorized": 0, "not_found": 0}
    for line in refused:
        counted[line["outcome"]] += 1
    assert {k: counted[k] + summary["dropped"].get(k, 0) for k in counted} == {
        "unauthorized": 40,
        "not_found": 40,
    }
    # And the metrics counted every request
    page = served_ingress(ingress).metrics.render().decode()
    assert 'attentive_router_requests_total{outcome="unauthorized"} 40.0' in page
    assert 'attentive_router_requests_total{outcome="not_found"} 40.0' in page


@pytest.mark.broker
async def test_the_connections_own_lines_go_through_the_same_bound(
    make_ingress: MakeIngress, settings: Settings
) -> None:
    # Given an ingress that writes no refused line at all (rate 0: summaries only)
    ingress = await make_ingress(replace(settings, refused_log_rate=0))
    served = served_ingress(ingress)

    with capture_logs() as logs:
        # When clients hang up half-way through a body sent to a long path
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(
                b"POST /webhooks/attentive/%s HTTP/1.1\r\nHost: r\r\n" % (b"c" * 4000)
                + b"Content-Length: 1000\r\n\r\n{"
            )
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
        async with asyncio.timeout(5):
            while served.routes.refused_log.dropped.get("bad_request", 0) < 3:
                await asyncio.sleep(0.02)
        await ingress.close()

    # Then neither the connection's line nor the request's is written, and the summary
    # counts both
    assert [e["event"] for e in logs] == ["log_lines_dropped"]
    assert logs[0]["dropped"] == {"bad_request": 3, "webhook_client_gone": 3}


# -- 10,000 refused requests against the ingress process ---------------------------------------

#: Refused lines a second the ingress process runs with here.
RATE = 20
REQUESTS = 10_000
CONNECTIONS = 20
#: Requests written at once on a connection before its answers are read.
BATCH = 50
#: The longest ``webhook`` line about a refused request: its fields (time, level, outcome,
#: status, method, latency, error, the process) take under 400 bytes, and the path at most
#: PATH_CHARS characters of up to 6 bytes each in JSON (``\u001b``) and its marker.
MAX_LINE = 400 + 6 * PATH_CHARS + 16
#: The longest ``log_lines_dropped`` line: a count for each kind of line (fewer than 20).
MAX_SUMMARY = 1024


def random_path(rng: random.Random) -> bytes:
    """A path of 1,000 to 3,000 characters, some of them percent-encoded escapes."""
    letters = "".join(rng.choices(string.ascii_letters, k=rng.randint(1000, 3000)))
    return ("/" + letters[:500] + "%1b%0d" + letters[500:]).encode()


def refused_request(n: int, rng: random.Random) -> bytes:
    """An unsigned webhook (401) for even ``n``, a GET of a long random path (404) for odd."""
    if n % 2 == 0:
        body = b'{"type": "sms.sent", "company": {"company_id": "stranger"}}'
        return (
            b"POST %s HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
            % WEBHOOK_PATH.encode()
            + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    return b"GET %s HTTP/1.1\r\nHost: r\r\n\r\n" % random_path(rng)


async def flood(ingress: Ingress, requests: list[bytes]) -> list[int]:
    """Send ``requests`` on one kept-alive connection, BATCH at a time; their statuses."""
    reader, writer = await ingress.connect()
    statuses: list[int] = []
    try:
        for at in range(0, len(requests), BATCH):
            batch = requests[at : at + BATCH]
            writer.write(b"".join(batch))
            received, answered = b"", 0
            async with asyncio.timeout(30):
                while answered < len(batch):
                    chunk = await reader.read(256 * 1024)
                    assert chunk, "the ingress closed a kept-alive connection"
                    responses, received = split_responses(received + chunk)
                    statuses += [r.status for r in responses]
                    answered += len(responses)
    finally:
        writer.close()
    return statuses


def log_lines(log: Path, start: int) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in log.read_bytes()[start:].splitlines() if line]


@pytest.mark.broker
async def test_ten_thousand_refused_requests_log_no_more_than_the_rate_allows(
    names: Names, tmp_path: Path
) -> None:
    # Given the ingress process, logging every line at info as JSON, 20 refused lines a second
    env = {"ROUTER_LOG_LEVEL": "info", "ROUTER_REFUSED_LOG_RATE": str(RATE)}
    with running_ingress(names.prefix, tmp_path, AMQP_URL, SIGNING_KEY, **env) as ingress:
        await ingress.wait_ready()
        before = ingress.log.stat().st_size
        started = time.monotonic()

        # When strangers send 10,000 refused requests (unsigned webhooks, long random paths)
        # on 20 kept-alive connections, and Attentive a signed webhook in the middle
        rng = random.Random(28)
        requests = [refused_request(n, rng) for n in range(REQUESTS)]
        share = REQUESTS // CONNECTIONS
        floods = [
            asyncio.create_task(flood(ingress, requests[i * share : (i + 1) * share]))
            for i in range(CONNECTIONS)
        ]
        await asyncio.sleep(0.2)
        signed_body = event("attentive", 1)
        (answer,) = await ingress.ask(webhook(signed_body, SIGNING_KEY))
        statuses = [status for statuses in await asyncio.gather(*floods) for status in statuses]
        assert answer.status == 200
        assert sorted(set(statuses)) == [401, 404] and len(statuses) == REQUESTS

        # Then, once the last summary is out, every refused request is either logged or counted
        async with asyncio.timeout(SUMMARY_EVERY + 15):
            while True:
                lines = log_lines(ingress.log, before)
                refused = [e for e in lines if e["event"] == "webhook" and e["status"] >= 400]
                summaries = [e for e in lines if e["event"] == "log_lines_dropped"]
                dropped = sum(s["total"] for s in summaries)
                if len(refused) + dropped == REQUESTS:
                    break
                assert len(refused) + dropped < REQUESTS
                await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
        logged = ingress.log.stat().st_size - before
        outcomes = await ingress.outcomes()

    # And the bytes logged are within what the rate allows over the time it took: the
    # burst and RATE lines a second, each at most MAX_LINE, one summary per SUMMARY_EVERY
    assert len(refused) <= RATE * BURST_SECONDS + RATE * elapsed
    assert all(len(orjson.dumps(e)) <= MAX_LINE for e in refused)
    bound = (
        (RATE * BURST_SECONDS + RATE * elapsed) * MAX_LINE
        + (elapsed / SUMMARY_EVERY + 1) * MAX_SUMMARY
        + MAX_LINE  # the signed webhook's line
    )
    assert logged <= bound, f"{logged} bytes logged in {elapsed:.1f} s: over {bound:.0f}"

    # And the summaries say how many of each outcome were not logged
    by_outcome = {"unauthorized": 0, "not_found": 0}
    for line in refused:
        by_outcome[line["outcome"]] += 1
    for summary in summaries:
        for outcome, count in summary["dropped"].items():
            by_outcome[outcome] += count
    assert by_outcome == {"unauthorized": REQUESTS // 2, "not_found": REQUESTS // 2}
    assert dropped > 0

    # And the signed webhook was logged all the same
    accepted = [e for e in lines if e["event"] == "webhook" and e["outcome"] == "accepted"]
    assert (
        len(accepted) == 1 and accepted[0]["message_id"] == orjson.loads(answer.body)["message_id"]
    )

    # And /metrics counted every request
    assert outcomes["unauthorized"] == REQUESTS // 2
    assert outcomes["not_found"] == REQUESTS // 2


def test_the_settings_default_rate_is_the_ingress_own() -> None:
    # settings sit below the ingress and cannot import its default: they repeat it
    from router.settings import DEFAULT_REFUSED_LOG_RATE

    assert Settings().refused_log_rate == DEFAULT_REFUSED_LOG_RATE == refused_log.DEFAULT_RATE
