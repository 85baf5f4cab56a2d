"""The envelope of one event through a worker's retry, its dead-lettering and a replay.

Pure: the headers each step writes, and what a listing reads back from them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from router.contract import envelope
from router.contract import names as h

FROM_INGRESS = {h.COMPANY_HEADER: "c1", h.RECEIVED_AT_HEADER: 1_764_000_000_000}
KEY = "sms.subscribed.c1"


def test_an_event_fails_twice_is_dead_lettered_then_replayed_clean() -> None:
    # the first delivery: attempt 1, nothing failed yet
    delivered = {**FROM_INGRESS, h.DELIVERY_COUNT_HEADER: 0}
    assert envelope.attempt(delivered) == 1

    # the handler raised: the copy for the retry tier counts the next attempt, keeps the
    # error and the event's routing key, and leaves the broker's count behind
    first = envelope.retried(
        delivered, KEY, attempt=1, error="ValueError: down", now="2026-12-07T10:00:00.000Z"
    )
    assert first[h.ATTEMPT_HEADER] == 2
    assert first[h.ERROR_HEADER] == "ValueError: down"
    assert first[h.ROUTING_KEY_HEADER] == KEY
    assert first[h.FIRST_FAILED_AT_HEADER] == first[h.LAST_FAILED_AT_HEADER]
    assert h.DELIVERY_COUNT_HEADER not in first
    assert envelope.attempt(first) == 2

    # it fails again: the first failure's time stays, the last one moves
    second = envelope.retried(
        first, KEY, attempt=2, error="ValueError: down", now="2026-12-07T10:00:05.000Z"
    )
    assert second[h.FIRST_FAILED_AT_HEADER] == "2026-12-07T10:00:00.000Z"
    assert second[h.LAST_FAILED_AT_HEADER] == "2026-12-07T10:00:05.000Z"

    # the worker gives up: the dead letter says why, by whom and when
    dead = envelope.dead_lettered(
        second,
        KEY,
        attempt=3,
        error="ValueError: down",
        traceback="Traceback ...",
        reason="exhausted",
        app="crm",
        now="2026-12-07T10:00:35.000Z",
    )
    assert dead[h.APP_HEADER] == "crm"
    assert envelope.attempts(dead, deliveries_count=True) == 3
    assert envelope.reason(dead) == "exhausted"
    assert envelope.error(dead) == "ValueError: down"
    assert envelope.parked_at(dead) == datetime(2026, 12, 7, 10, 0, 35, tzinfo=UTC)
    assert envelope.company(dead) == "c1"
    assert envelope.event_routing_key(dead) == KEY

    # a replay starts clean: no failure left, one replay counted, the ingress's headers kept
    replay = envelope.replayed(dead)
    for name in (
        h.ATTEMPT_HEADER,
        h.ERROR_HEADER,
        h.TRACEBACK_HEADER,
        h.APP_HEADER,
        h.LAST_FAILED_AT_HEADER,
    ):
        assert name not in replay
    assert replay[h.REPLAY_COUNT_HEADER] == 1
    assert replay[h.COMPANY_HEADER] == "c1"
    assert envelope.attempt(replay) == 1
    assert envelope.replays(envelope.replayed(replay)) == 2


def test_a_deferred_copy_keeps_its_attempt_and_says_nothing_failed() -> None:
    copy = envelope.deferred({h.ATTEMPT_HEADER: 2, h.DELIVERY_COUNT_HEADER: 4}, KEY, attempt=2)
    assert copy == {h.ATTEMPT_HEADER: 2, h.ROUTING_KEY_HEADER: KEY}


def test_what_rabbitmq_wrote_is_read_when_no_worker_did() -> None:
    # dead-lettered by the delivery limit: no attempt header, RabbitMQ's count and death
    died = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    headers = {
        h.DELIVERY_COUNT_HEADER: 20,
        "x-first-death-reason": "delivery_limit",
        h.DEATH_HEADER: [{"reason": "delivery_limit", "time": died.replace(tzinfo=None)}],
    }
    assert envelope.attempts(headers, deliveries_count=True) == 20
    assert envelope.attempts(headers, deliveries_count=False) is None
    assert envelope.reason(headers) == "delivery_limit"
    assert envelope.parked_at(headers) == died
    assert h.DEATH_HEADER not in envelope.replayed(headers)
    assert "x-first-death-reason" not in envelope.replayed(headers)


def test_quarantined_events_read_their_reason_and_bad_values_read_as_nothing() -> None:
    assert envelope.error({h.INVALID_REASON_HEADER: b"not json"}) == "not json"
    assert envelope.attempt({h.ATTEMPT_HEADER: "x"}) == 1
    assert envelope.attempt({h.ATTEMPT_HEADER: True}) == 1
    assert envelope.replays({h.REPLAY_COUNT_HEADER: "many"}) == 0
    assert envelope.parked_at({h.RECEIVED_AT_HEADER: 1_764_000_000_000}) == datetime.fromtimestamp(
        1_764_000_000, tz=UTC
    )
