"""The parked-event store's pure parts: header values through JSON and back, entries made from
deliveries, fingerprints, error kinds, queries, cursors, batches and database URLs. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import frame, header
from pamqp.commands import Basic

from router.contract import envelope
from router.contract.names import (
    DEATH_HEADER,
    DELIVERY_COUNT_HEADER,
    FIRST_DEATH_REASON_HEADER,
    INVALID_REASON_HEADER,
    RECEIVED_AT_HEADER,
)
from router.errors import ConfigError, InvalidInput
from router.parked import sql
from router.parked.fields import decode_table, decode_value, encode_table, encode_value
from router.parked.model import Place, Properties, State, error_kind, parked_event
from router.parked.open import parked_store_from_url
from router.parked.postgres import PostgresParkedStore
from router.parked.query import Cursor, Query
from router.parked.sqlite import SqliteParkedStore
from tests.parked_stores import NOW, body_of, dead_letter, same

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
KEYS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
SENDABLE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32, allow_nan=False),
    st.decimals(places=3, min_value=-1_000_000, max_value=1_000_000, allow_nan=False),
    TEXT,
    st.binary(max_size=8).map(bytearray),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda stamp: stamp.replace(microsecond=0)),
)
#: What a delivery's headers can hold: also strings that are not UTF-8 (bytes), naive times,
#: floats of any width, NaN.
ANY_SCALARS = st.one_of(
    SENDABLE_SCALARS,
    st.binary(max_size=8),
    st.floats(),
    st.datetimes(),
    st.decimals(allow_nan=False, allow_infinity=False),
)


def tables(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
        max_leaves=12,
    )
    return st.dictionaries(KEYS, values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(tables(ANY_SCALARS))
def test_any_header_table_comes_back_through_json_with_its_kinds_and_order(
    headers: dict[str, Any],
) -> None:
    stored = orjson.dumps(encode_table(headers))
    assert same(decode_table(orjson.loads(stored)), headers)


@settings(max_examples=200, deadline=None)
@given(tables(SENDABLE_SCALARS), st.binary(max_size=64))
def test_a_stored_delivery_marshals_to_the_same_bytes_it_came_in(
    headers: dict[str, Any], body: bytes
) -> None:
    """Given properties as the broker's decoder gives them, when they go through an entry,
    JSON and back, then republishing them writes the very bytes that came."""
    sent = Basic.Properties(
        content_type="application/json",
        headers=headers or None,
        delivery_mode=2,
        priority=4,
        message_id="m-1",
        expiration="1000",
        timestamp=datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
        message_type="t",
        app_id="ingress",
    )
    wire = frame.marshal(header.ContentHeader(0, len(body), sent), 1)
    _, _, received = frame.unmarshal(wire)
    assert isinstance(received, header.ContentHeader)
    entry = parked_event(
        body, received.properties, place="unrouted", app=None, routing_key="k", seen_at=NOW
    )

    kept = Properties.from_json(orjson.loads(orjson.dumps(entry.properties.to_json())))
    again = frame.marshal(header.ContentHeader(0, len(body), kept.as_amqp()), 1)

    assert again == wire


def test_a_string_that_is_not_utf8_is_republished_as_a_byte_array_of_the_same_bytes() -> None:
    kept = Properties(headers={"raw": b"\xff", "deep": {"list": [b"\xfe", "text"]}})
    sent = kept.as_amqp().headers
    assert same(sent, {"raw": bytearray(b"\xff"), "deep": {"list": [bytearray(b"\xfe"), "text"]}})


def test_a_table_whose_keys_look_like_markers_stays_a_table() -> None:
    table = {"$bytes": "AA==", "$table": {"$time": "x"}}
    assert same(decode_value(encode_value(table)), table)
    assert encode_value(Decimal("1.50")) == {"$decimal": "1.50"}
    assert encode_value(b"\x00") == {"$bytes": "AA=="}


@pytest.mark.parametrize(
    "data",
    [{"$bytes": "@@"}, {"$nope": 1}, {"a": 1, "b": 2}, {"$time": 5}, {"$table": [1]}, {}],
)
def test_what_is_not_an_encoded_value_is_refused(data: Any) -> None:
    with pytest.raises(InvalidInput, match="header is not an encoded AMQP value"):
        decode_value(data)


def test_a_value_amqp_cannot_carry_is_refused() -> None:
    with pytest.raises(InvalidInput, match="of a type AMQP cannot carry: set"):
        encode_table({"x": {1, 2}})
    with pytest.raises(InvalidInput, match="unknown names"):
        Properties.from_json({"colour": "red"})


def test_a_workers_dead_letter_says_what_happened() -> None:
    entry = dead_letter(body_of("sms.subscribed", "acme"), error="ValueError: no", attempt=4)
    assert (entry.place, entry.app, entry.message_id) == (Place.DLQ, "alerts", "m-1")
    assert (entry.event_type, entry.company, entry.channel) == ("sms.subscribed", "acme", "sms")
    assert (entry.reason, entry.error, entry.error_kind) == (
        "exhausted",
        "ValueError: no",
        "ValueError",
    )
    assert entry.attempts == 4 and entry.replays == 0
    assert entry.parked_at == NOW == entry.first_failed_at
    assert entry.state is State.PARKED and entry.id is None


def test_a_dead_letter_of_the_brokers_delivery_limit_is_dated_by_x_death() -> None:
    died = datetime(2026, 11, 26, 8, 0, 1, tzinfo=UTC)
    headers: dict[str, Any] = {
        DEATH_HEADER: [{"count": 1, "reason": "delivery_limit", "time": died}],
        FIRST_DEATH_REASON_HEADER: "delivery_limit",
        DELIVERY_COUNT_HEADER: 20,
    }
    entry = parked_event(
        body_of("email.sent"),
        Basic.Properties(message_id="m", headers=headers),
        place="dlq",
        app="mailer",
        routing_key="email.sent.c1",
        seen_at=NOW,
    )
    assert (entry.reason, entry.attempts, entry.parked_at) == ("delivery_limit", 20, died)
    assert entry.routing_key == "email.sent.c1" and entry.error is None


def test_invalid_and_unrouted_events_are_dated_by_the_ingress() -> None:
    received = datetime(2026, 11, 26, 7, 0, 0, 250_000, tzinfo=UTC)
    invalid = parked_event(
        b"\xffnot json",
        Basic.Properties(
            message_id="m",
            headers={
                INVALID_REASON_HEADER: "body is not valid JSON",
                RECEIVED_AT_HEADER: 1_795_676_400_250,
            },
        ),
        place="invalid",
        app=None,
        routing_key="attentive.invalid",
        seen_at=NOW,
    )
    assert (invalid.parked_at, invalid.event_type, invalid.company) == (received, None, None)
    assert invalid.error == "body is not valid JSON" == invalid.error_kind
    unrouted = parked_event(
        body_of("sms.sent"),
        Basic.Properties(timestamp=received, headers={DELIVERY_COUNT_HEADER: 3}),
        place="unrouted",
        app=None,
        routing_key="sms.sent.c1",
        seen_at=NOW,
    )
    assert (unrouted.parked_at, unrouted.attempts, unrouted.message_id) == (received, None, None)
    bare = parked_event(b"", Basic.Properties(), place="dlq", app="a", routing_key="", seen_at=NOW)
    assert bare.parked_at == NOW and bare.stored_at == NOW


@pytest.mark.parametrize(
    ("place", "app", "problem"),
    [
        ("dlq", None, "invalid application name"),
        ("dlq", "Not An App", "invalid application name"),
        ("unrouted", "alerts", "app is only for a DLQ"),
        ("archive", None, "place must be dlq, unrouted or invalid"),
    ],
)
def test_an_entry_needs_a_place_and_an_application_only_for_a_dlq(
    place: str, app: str | None, problem: str
) -> None:
    with pytest.raises(InvalidInput, match=problem):
        parked_event(b"", Basic.Properties(), place=place, app=app, routing_key="", seen_at=NOW)


def test_one_delivery_has_one_fingerprint_and_a_replayed_one_another() -> None:
    body = body_of("sms.sent")
    entry = dead_letter(body)
    for counted in ({DELIVERY_COUNT_HEADER: 5}, {"x-acquired-count": 2}):
        again = parked_event(
            body,
            Properties(**{**_fields(entry.properties), "headers": {**entry.headers, **counted}}),
            place="dlq",
            app="alerts",
            routing_key="other",
            seen_at=NOW + timedelta(hours=1),
        )
        assert again.fingerprint == entry.fingerprint
    others = [
        dead_letter(body, headers=envelope.replayed(entry.headers)),
        dead_letter(body, app="billing"),
        dead_letter(body_of("sms.sent", n=1)),
        dead_letter(body, at=NOW + timedelta(milliseconds=1)),
    ]
    assert len({entry.fingerprint, *(other.fingerprint for other in others)}) == 5


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("ValueError: bad phone +1 555", "ValueError"),
        ("requests.exceptions.HTTPError: 500 Server Error", "requests.exceptions.HTTPError"),
        ("KeyboardInterrupt", "KeyboardInterrupt"),
        ("  TimeoutError: slow\nsecond line", "TimeoutError"),
        ("crm answered 500", "crm answered 500"),
        ("x" * 100 + " y", "x" * 80),
        ("", None),
        (None, None),
    ],
)
def test_the_error_facet_buckets_by_exception_class(error: str | None, kind: str | None) -> None:
    assert error_kind(error) == kind


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"place": "archive"}, "place must be one of dlq, unrouted, invalid"),
        ({"state": "gone"}, "state must be one of parked, replayed, purged"),
        ({"app": "Bad App"}, "invalid application name"),
        ({"event": "sms"}, "invalid event pattern"),
        ({"since": "yesterday"}, "since must be an ISO 8601 time"),
        ({"until": "2026-13-01"}, "until must be an ISO 8601 time"),
    ],
)
def test_a_malformed_filter_is_refused_naming_it(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        Query.build(**fields)


def test_a_query_built_from_user_input() -> None:
    query = Query.build(
        place="dlq", app="alerts", event="sms.*", company="", since="2026-11-26T09:00Z", state=""
    )
    assert query.company is None and query.state is None
    assert query.since == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert Query.build(until=datetime(2026, 1, 1)).until == datetime(2026, 1, 1, tzinfo=UTC)
    entry = dead_letter(body_of("sms.sent"), error="Timeout: CRM")
    assert query.matches(entry) and Query.build(error="crm").matches(entry)
    assert not Query.build(event="email.*").matches(entry)
    assert not Query.build(state="purged").matches(entry)


def test_a_cursor_is_opaque_and_only_the_stores_own_is_taken() -> None:
    cursor = Cursor(datetime(2026, 11, 26, 9, 0, 0, 123_456, tzinfo=UTC), 42)
    text = cursor.encode()
    assert "42" not in text and Cursor.decode(text) == cursor
    for forged in ("", "abc", text[:-2], "Mi4xLjE", "MS54LjE"):  # "2.1.1", "1.x.1"
        with pytest.raises(InvalidInput, match="cursor is not a cursor this store gave"):
            Cursor.decode(forged)
    with pytest.raises(InvalidInput, match="cursor is for stored entries only"):
        Cursor.after(dead_letter(body_of("sms.sent")))


def test_a_batch_is_cut_where_a_message_comes_again() -> None:
    a, b, c = (dead_letter(body_of("sms.sent"), message_id=m) for m in "abc")
    a2 = dead_letter(body_of("sms.sent", n=2), message_id="a")
    a_elsewhere = dead_letter(body_of("sms.sent"), message_id="a", app="billing")
    no_id = dead_letter(body_of("sms.sent"), message_id=None)
    cuts = sql.rounds([a, b, no_id, no_id, a_elsewhere, a2, c, a])
    assert [list(cut) for cut in cuts] == [[a, b, no_id, no_id, a_elsewhere], [a2, c], [a]]
    assert [list(cut) for cut in sql.rounds([])] == [[]]


def test_a_database_url_names_the_backend() -> None:
    relative = parked_store_from_url("sqlite:///data/router.db")
    absolute = parked_store_from_url("SQLITE:////var/lib/router.db", table="parked")
    postgres = parked_store_from_url("postgres://u:pw@db:5432/router")
    assert isinstance(relative, SqliteParkedStore) and str(relative.path) == "data/router.db"
    assert isinstance(absolute, SqliteParkedStore) and str(absolute.path) == "/var/lib/router.db"
    assert absolute.table == "parked"
    assert isinstance(postgres, PostgresParkedStore) and postgres.url.endswith("/router")
    for url in ("sqlite:///", "sqlite:///:memory:", "sqlite:///a.db?mode=ro", "sqlite:///dir/"):
        with pytest.raises(ConfigError, match="invalid database URL"):
            parked_store_from_url(url)
    with pytest.raises(ConfigError, match="unsupported database URL 'mysql://u:\\*\\*\\*@h/d'"):
        parked_store_from_url("mysql://u:secret@h/d")
    with pytest.raises(ConfigError, match="invalid parked-event table name"):
        parked_store_from_url("sqlite:///a.db", table="Bad-Name")


def _fields(properties: Properties) -> dict[str, Any]:
    return {name: getattr(properties, name) for name in properties.__dataclass_fields__}
