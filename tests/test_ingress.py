"""The ingress against the real RabbitMQ: every answer it gives, and what it published for it."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import aiohttp
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection
from structlog.testing import capture_logs

from router.contract.events import EVENT_TYPES
from router.contract.examples import example_body
from router.contract.names import WEBHOOK_PATH, Names
from router.ingress.metrics import PAGE_MAX_AGE
from router.ingress.service import Ingress
from router.settings import Settings
from tests.amqp_proxy import AmqpProxy
from tests.conftest import (
    AMQP_URL,
    OLD_SIGNING_KEY,
    Client,
    MakeIngress,
    TapFactory,
    depth,
    signed,
    take,
)
from tests.probes import internal

pytestmark = pytest.mark.broker

URL = WEBHOOK_PATH


async def nothing_published(amqp: AbstractRobustConnection, names: Names) -> bool:
    return (
        await depth(amqp, names.unrouted_queue) == 0 and await depth(amqp, names.invalid_queue) == 0
    )


async def test_a_signed_event_is_confirmed_then_answered_with_its_message_id(
    ingress: Client, tap_factory: TapFactory
) -> None:
    # Given a service bound to every SMS event
    sms = await tap_factory("sms.#")
    body = example_body("sms.subscribed", "MDc6Q29tcGFueTU", timestamp_ms=1632945178104)

    # When Attentive posts a signed sms.subscribed
    response = await ingress.post(URL, data=body, headers=signed(body))

    # Then the answer is 200 with the message id, the SHA-256 of the body
    assert response.status == 200
    answer = await response.json()
    assert answer["status"] == "accepted"
    assert answer["message_id"] == hashlib.sha256(body).hexdigest()

    # And the service's queue holds the raw body with the documented properties
    (message,) = await sms.take(1)
    assert message.body == body
    assert message.routing_key == "sms.subscribed.MDc6Q29tcGFueTU"
    assert message.delivery_mode == 2
    assert message.content_type == "application/json"
    assert message.message_id == answer["message_id"]
    assert message.timestamp == datetime(2021, 9, 29, 19, 52, 58, tzinfo=UTC)
    headers = dict(message.headers)
    headers.pop("x-delivery-count", None)  # added by the quorum queue itself
    assert headers.pop("x-attentive-subject-key")  # (its value: tests/test_ordering_ingress.py)
    assert headers == {
        "cloudEvents:specversion": "1.0",
        "cloudEvents:id": answer["message_id"],
        "cloudEvents:type": "sms.subscribed",
        "cloudEvents:source": "https://api.attentivemobile.com/webhooks",
        "cloudEvents:time": "2021-09-29T19:52:58.104Z",
        "x-attentive-company-id": "MDc6Q29tcGFueTU",
        "x-attentive-event-time": 1632945178104,
    }


async def test_every_type_is_routed_by_type_and_company(
    ingress: Client, tap_factory: TapFactory
) -> None:
    # Given one service per channel and one for a single company
    sms, email, attributes = (
        await tap_factory("sms.#"),
        await tap_factory("email.*.*"),
        await tap_factory("custom_attribute.#"),
    )
    acme = await tap_factory("*.*.acme_co")

    # When one event of each type arrives for company "acme.co"
    for event_type in EVENT_TYPES:
        body = example_body(event_type, "acme.co")
        assert (await ingress.post(URL, data=body, headers=signed(body))).status == 200

    # Then each service got exactly its types, and the company binding got all 11
    assert {m.routing_key for m in await sms.take(5)} == {
        f"{t}.acme_co" for t in EVENT_TYPES if t.startswith("sms.")
    }
    assert len(await email.take(5)) == 5
    assert len(await attributes.take(1)) == 1
    assert len(await acme.take(11)) == 11


async def test_an_event_no_queue_is_bound_for_lands_in_unrouted(
    ingress: Client, amqp: AbstractRobustConnection, names: Names
) -> None:
    body = example_body("email.opened")
    response = await ingress.post(URL, data=body, headers=signed(body))
    assert response.status == 200
    channel = await amqp.channel()
    unrouted = await channel.get_queue(names.unrouted_queue)
    (message,) = await take(unrouted, 1)
    assert message.body == body
    assert message.routing_key == "email.opened.MDc6Q29tcGFueTU"


async def test_a_rotated_out_key_still_verifies_while_configured(
    ingress: Client, tap_factory: TapFactory
) -> None:
    tap = await tap_factory("#")
    body = example_body("sms.sent")
    response = await ingress.post(URL, data=body, headers=signed(body, OLD_SIGNING_KEY))
    assert response.status == 200
    assert len(await tap.take(1)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-attentive-hmac-sha256": "0" * 64},
        {"x-attentive-hmac-sha256": "not hex at all"},
        {"x-attentive-hmac-sha256": "sign-me-with-another-key"},
    ],
    ids=["missing", "wrong", "garbage", "other-key"],
)
async def test_an_unsigned_request_gets_401_with_no_hint_and_publishes_nothing(
    ingress: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    tap_factory: TapFactory,
    headers: dict[str, str],
) -> None:
    tap = await tap_factory("#")
    body = example_body("sms.sent")
    if headers.get("x-attentive-hmac-sha256") == "sign-me-with-another-key":
        headers = signed(body, "somebody-elses-key")
    response = await ingress.post(URL, data=body, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "unauthorized"}
    assert await depth(amqp, tap.queue.name) == 0
    assert await nothing_published(amqp, names)


async def test_a_subscription_url_accepts_its_own_company_only(
    ingress: Client, amqp: AbstractRobustConnection, names: Names, tap_factory: TapFactory
) -> None:
    tap = await tap_factory("#")
    ours = example_body("sms.sent", "company-a")
    response = await ingress.post(f"{URL}/company-a", data=ours, headers=signed(ours))
    assert response.status == 200

    theirs = example_body("sms.sent", "company-b")
    response = await ingress.post(f"{URL}/company-a", data=theirs, headers=signed(theirs))
    assert response.status == 403
    assert (await response.json())["error"] == "forbidden"

    (only,) = await tap.take(1)
    assert only.body == ours
    assert await depth(amqp, tap.queue.name) == 0
    assert await nothing_published(amqp, names)


async def test_a_body_over_the_limit_gets_413_and_publishes_nothing(
    make_ingress: MakeIngress,
    settings: Settings,
    amqp: AbstractRobustConnection,
    names: Names,
) -> None:
    ingress = await make_ingress(replace(settings, max_body_bytes=4096))
    big = orjson.dumps({"type": "sms.sent", "company": {"company_id": "c"}, "pad": "x" * 5000})
    response = await ingress.post(URL, data=big, headers=signed(big))
    assert response.status == 413
    assert await nothing_published(amqp, names)


async def test_other_methods_get_405(ingress: Client) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = await ingress.request(method, URL)
        assert response.status == 405, method


UNUSABLE = [
    (b"not json", "body is not valid JSON"),
    (b"\xff\xfe{}", "body is not valid JSON"),
    (b'[{"type": "sms.sent"}]', "body is not a JSON object"),
    (b'{"company": {"company_id": "c"}}', "no 'type'"),
    (b'{"type": "SMS Sent", "company": {"company_id": "c"}}', "'type' is not dot-separated"),
    (b'{"type": "sms.sent", "subscriber": {}}', "no 'company.company_id'"),
]


@pytest.mark.parametrize(("body", "reason"), UNUSABLE, ids=[r for _, r in UNUSABLE])
async def test_an_authentic_but_unusable_body_is_quarantined_raw_with_202(
    ingress: Client,
    amqp: AbstractRobustConnection,
    names: Names,
    body: bytes,
    reason: str,
) -> None:
    with capture_logs() as logs:
        response = await ingress.post(f"{URL}/c", data=body, headers=signed(body))
    assert response.status == 202
    answer = await response.json()
    assert answer["status"] == "quarantined"
    assert answer["reason"].startswith(reason)
    assert answer["message_id"] == hashlib.sha256(body).hexdigest()

    channel = await amqp.channel()
    (parked,) = await take(await channel.get_queue(names.invalid_queue), 1)
    assert parked.body == body
    assert parked.delivery_mode == 2
    assert parked.headers["x-attentive-invalid-reason"] == answer["reason"]
    assert parked.headers["x-attentive-received-path"] == f"{URL}/c"
    assert any(e["event"] == "webhook_quarantined" and e["log_level"] == "warning" for e in logs)

    metrics = await (await internal(ingress, "/metrics")).text()
    assert 'attentive_router_requests_total{outcome="quarantined"} 1.0' in metrics
    assert "attentive_router_events_quarantined_total{reason=" in metrics


async def test_an_unknown_well_formed_type_is_routed_and_counted_as_unknown(
    ingress: Client, tap_factory: TapFactory
) -> None:
    tap = await tap_factory("sms.#")
    body = orjson.dumps({"type": "sms.delivered", "company": {"company_id": "c1"}})
    response = await ingress.post(URL, data=body, headers=signed(body))
    assert response.status == 200
    (message,) = await tap.take(1)
    assert message.routing_key == "sms.delivered.c1"
    metrics = await (await internal(ingress, "/metrics")).text()
    assert (
        'attentive_router_events_published_total{known="false",type="sms.delivered"} 1.0' in metrics
    )


async def test_health_readiness_and_metrics(ingress: Client) -> None:
    assert (await ingress.get("/healthz")).status == 200
    ready = await internal(ingress, "/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "connected": True, "blocked": False}

    body = example_body("custom_attribute.set")
    await ingress.post(URL, data=body, headers=signed(body))
    await ingress.post(URL, data=body)
    text = await (await internal(ingress, "/metrics")).text()
    assert 'attentive_router_requests_total{outcome="accepted"} 1.0' in text
    assert 'attentive_router_requests_total{outcome="unauthorized"} 1.0' in text
    assert (
        'attentive_router_events_published_total{known="true",type="custom_attribute.set"} 1.0'
        in text
    )
    assert "attentive_router_confirm_seconds_count 1.0" in text
    assert "attentive_router_publishes_in_flight 0.0" in text
    assert "attentive_router_broker_ready 1.0" in text


async def test_each_request_is_logged_once_without_secrets_or_contact_details(
    ingress: Client,
) -> None:
    body = example_body("sms.subscribed")
    headers = signed(body)
    with capture_logs() as logs:
        await ingress.post(URL, data=body, headers=headers)
        await ingress.post(URL, data=body, headers={"x-attentive-hmac-sha256": "f" * 64})
    requests = [e for e in logs if e["event"] == "webhook"]
    assert [e["outcome"] for e in requests] == ["accepted", "unauthorized"]
    accepted = requests[0]
    assert accepted["event_type"] == "sms.subscribed"
    assert accepted["company_id"] == "MDc6Q29tcGFueTU"
    assert accepted["message_id"] == hashlib.sha256(body).hexdigest()
    assert accepted["latency_ms"] >= 0
    everything = repr(logs)
    for secret in ("+15555555555", "test@gmail.com", headers["x-attentive-hmac-sha256"], "f" * 64):
        assert secret not in everything


async def test_without_a_broker_it_answers_503_with_retry_after(
    make_ingress: MakeIngress, settings: Settings
) -> None:
    # Given an ingress whose broker does not exist
    nowhere = replace(settings, amqp_url="amqp://guest:guest@127.0.0.1:1/")
    ingress = await make_ingress(nowhere, wait_ready=False)

    # Then it is alive but not ready, and answers webhooks 503 with Retry-After
    assert (await ingress.get("/healthz")).status == 200
    assert (await internal(ingress, "/readyz")).status == 503
    body = example_body("sms.sent")
    response = await ingress.post(URL, data=body, headers=signed(body))
    assert response.status == 503
    assert response.headers["Retry-After"] == "3"
    # A signed but unusable body cannot be quarantined either: 503, not 202
    response = await ingress.post(URL, data=b"nope", headers=signed(b"nope"))
    assert response.status == 503
    # Unsigned requests are still refused first
    assert (await ingress.post(URL, data=body)).status == 401


async def test_metrics_are_rendered_at_most_once_per_page_age(ingress: Client) -> None:
    # Given a page of /metrics just rendered
    first = await (await internal(ingress, "/metrics")).text()

    # When a webhook is answered and /metrics asked again at once, the same page comes back
    body = example_body("sms.sent")
    assert (await ingress.post(URL, data=body, headers=signed(body))).status == 200
    assert await (await internal(ingress, "/metrics")).text() == first

    # And once the page is older than its age, it is rendered anew, with the webhook in it
    await asyncio.sleep(PAGE_MAX_AGE)
    text = await (await internal(ingress, "/metrics")).text()
    assert 'attentive_router_requests_total{outcome="accepted"} 1.0' in text


async def test_stop_answers_the_webhook_in_flight_then_closes_the_broker_connection(
    settings: Settings, test_id: str, tap_factory: TapFactory
) -> None:
    # Given an ingress started on its own, publishing through a proxy that can hold confirms
    tap = await tap_factory("#")
    async with AmqpProxy.running() as proxy, aiohttp.ClientSession() as session:
        local = replace(
            settings, amqp_url=proxy.url(AMQP_URL), host="127.0.0.1", port=0, internal_port=0
        )
        ingress = Ingress(local, connection_name=test_id)
        await ingress.start()
        await ingress.broker.wait_ready(timeout=15)
        port = ingress.port

        # And a webhook published, its confirm held back by the proxy
        proxy.freeze(to_client=True)
        body = example_body("sms.sent")
        webhook = session.post(f"http://127.0.0.1:{port}{URL}", data=body, headers=signed(body))
        posting = asyncio.create_task(webhook)
        async with asyncio.timeout(5):
            while ingress.broker.in_flight < 1:
                await asyncio.sleep(0.01)

        # When the ingress is stopped
        stopping = asyncio.create_task(ingress.stop())

        # Then it takes no more connections, and waits for the webhook under way
        async with asyncio.timeout(5):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:  # refused (or reset, while the listener was closing)
                    break
                writer.close()
                await asyncio.sleep(0.01)
        assert not posting.done() and not stopping.done()
        assert ingress.broker.connected

        # And once RabbitMQ's confirm comes through, the webhook is answered 200, then the
        # broker connection closes and the stop ends
        proxy.thaw()
        async with asyncio.timeout(10):
            response = await posting
            assert response.status == 200
            await stopping
        assert not ingress.broker.connected
    assert [m.body for m in await tap.take(1)] == [body]
