"""Traces against a real OTLP endpoint (tests.otlp_receiver) and the real RabbitMQ: one event
followed from its webhook through a worker's attempts, its dead letter and its replay, by
parents and links; nothing exported, nothing of OpenTelemetry loaded, with tracing off."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import structlog
from aio_pika.abc import AbstractRobustConnection

from consumers import Event, RetryPolicy, Worker
from router.contract.examples import example_body
from router.contract.names import SIGNATURE_HEADER, WEBHOOK_PATH, Names
from router.contract.signing import sign
from router.observability import configure_logging
from router.parked.jobs import JobRequest
from router.parked.open import parked_store_from_url
from router.parked.query import Query
from router.parked.runner import JobRunner
from router.settings import Settings
from router.tracing.settings import TracingSettings
from tests.conftest import (
    AMQP_URL,
    SIGNING_KEY,
    Client,
    MakeIngress,
    StartWorker,
    Tap,
    served_ingress,
    signed,
    take,
)
from tests.otlp_receiver import OtlpReceiver, otlp
from tests.steps import park, until

#: ``otlp``: the tests' OTLP/HTTP endpoint.
__all__ = ["otlp"]

pytestmark = pytest.mark.broker

APP = "traced"
FAST = RetryPolicy(delays=(0.2, 0.4), max_attempts=3)
PHONE = "+15555555555"


def tracing_to(receiver: OtlpReceiver) -> TracingSettings:
    """Tracing on, every span sampled, exported to ``receiver``: what
    ``OTEL_EXPORTER_OTLP_ENDPOINT=<its url>`` sets."""
    return TracingSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})


async def flush(*tracers: object) -> None:
    """Export what every tracer holds (from a thread: the endpoint answers on this loop)."""
    for tracing in tracers:
        flush = getattr(tracing, "flush", None)
        assert flush is not None, "tracing is on"
        assert await asyncio.to_thread(flush)


async def test_one_event_from_its_webhook_through_retries_a_dead_letter_and_a_replay(
    otlp: OtlpReceiver,
    make_ingress: MakeIngress,
    settings: Settings,
    start_worker: StartWorker,
    amqp: AbstractRobustConnection,
    names: Names,
    tmp_path: Path,
) -> None:
    # Given an ingress and a worker tracing to an OTLP endpoint, the worker's handler failing
    tracing = tracing_to(otlp)
    ingress = await make_ingress(replace(settings, tracing=tracing))
    failing, handled = [True], []
    worker = Worker(APP, retry=FAST)

    @worker.on("sms.sent")
    async def send_receipt(event: Event) -> None:
        if failing[0]:
            raise ConnectionError(f"the CRM refused {PHONE}")
        handled.append(event.attempt)

    running = await start_worker(worker, tracing=tracing)

    # When Attentive sends an event, which fails three times and is dead-lettered
    body = example_body("sms.sent", "acme")
    response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
    assert response.status == 200
    dlq = await (await amqp.channel()).get_queue(names.app_dead_letter_queue(APP))
    (dead,) = await take(dlq, 1, timeout=20)

    # And ops replay it once the CRM is back (parked as the keeper parks it, replayed by a job)
    store = parked_store_from_url(f"sqlite:///{tmp_path / 'parked.db'}")
    await store.open()
    await store.upgrade()
    await park(store, dead, APP)
    failing[0] = False
    job = await store.create_job(
        JobRequest.build("replay", Query.build(place="dlq", app=APP), "ops")
    )
    await JobRunner(store, AMQP_URL, names, settle_every=0.05).run_job(job.id)
    await store.close()
    await until(lambda: handled == [1])

    # Then the endpoint receives the webhook's trace and one trace per delivery
    await flush(served_ingress(ingress).tracing, running.runner.tracing)
    process = f"process {names.app_queue(APP)}"
    await otlp.until(lambda spans: len([s for s in spans if s.name == process]) == 4)

    # The webhook: a server span, its verify, parse and publish-and-confirm as children
    (server,) = otlp.named(f"POST {WEBHOOK_PATH}")
    assert (server.kind, server.parent_id, server.service) == ("server", "", "attentive-router")
    assert server.attributes == {
        "http.request.method": "POST",
        "http.route": WEBHOOK_PATH,
        "url.path": WEBHOOK_PATH,
        "url.scheme": "http",
        "http.response.status_code": 200,
        "attentive.outcome": "accepted",
        "attentive.event_type": "sms.sent",
        "attentive.company_id": "acme",
        "attentive.message_id": dead.message_id,
    }
    children = {s.name: s for s in otlp.children(server)}
    publish_name = f"publish {names.events_exchange}"
    assert set(children) == {"verify", "parse", publish_name}
    assert children["verify"].attributes == {"attentive.signature.valid": True}
    publish = children[publish_name]
    assert publish.kind == "producer"
    assert publish.attributes["messaging.system"] == "rabbitmq"
    assert publish.attributes["messaging.operation.type"] == "send"
    assert publish.attributes["messaging.destination.name"] == names.events_exchange
    assert publish.attributes["messaging.rabbitmq.destination.routing_key"] == "sms.sent.acme"
    assert publish.attributes["messaging.message.id"] == dead.message_id
    # the message carries the publish span's context: the context it was created in
    version, trace_id, span_id, flags = str(dead.headers["traceparent"]).split("-")
    assert (version, trace_id, span_id) == ("00", publish.trace_id, publish.span_id)
    assert int(flags, 16) & 1  # sampled

    # The deliveries: each a trace of its own, linked to the publish span
    deliveries = sorted(
        otlp.named(process),
        key=lambda s: (s.attributes["attentive.replay_count"], s.attributes["attentive.attempt"]),
    )
    first, second, third, replayed = deliveries
    for delivery in deliveries:
        assert (delivery.kind, delivery.parent_id, delivery.service) == ("consumer", "", APP)
        assert delivery.trace_id != server.trace_id
        created = delivery.link("created")
        assert created is not None
        assert (created.trace_id, created.span_id) == (publish.trace_id, publish.span_id)
        assert delivery.attributes["messaging.destination.name"] == names.app_queue(APP)
        assert delivery.attributes["messaging.rabbitmq.destination.routing_key"] == (
            "sms.sent.acme"
        )
        # and the handler, named after it, is its child
        (handler,) = otlp.children(delivery)
        assert handler.name.startswith("handle ") and "send_receipt" in handler.name

    # Attempts 1 and 2 were retried, 3 dead-lettered; 2 and 3 link to the first delivery
    assert [d.attributes["attentive.attempt"] for d in deliveries] == [1, 2, 3, 1]
    assert first.link("first_delivery") is None and first.link("replayed_from") is None
    for retried in (second, third):
        link = retried.link("first_delivery")
        assert link is not None and link.span_id == first.span_id
    assert [name for name, _ in first.events] == ["retry"]
    assert first.events[0][1] == {"attentive.retry.delay_ms": 200, "error.type": "ConnectionError"}
    assert [name for name, _ in second.events] == ["retry"]
    assert [name for name, _ in third.events] == ["dead_letter"]
    assert third.events[0][1]["attentive.dead_letter.reason"] == "exhausted"
    assert (third.attributes["attentive.outcome"], third.status) == ("dead_letter", "error")
    for failed in (first, second, third):
        (handler,) = otlp.children(failed)
        assert handler.status == "error"
        assert handler.status_message == "ConnectionError: the CRM refused +1******5555"

    # The replayed delivery links to the webhook's publish and to the first delivery before
    assert replayed.attributes["attentive.replay_count"] == 1
    assert replayed.attributes["attentive.outcome"] == "handled"
    link = replayed.link("replayed_from")
    assert link is not None and (link.trace_id, link.span_id) == (first.trace_id, first.span_id)
    (handler,) = otlp.children(replayed)
    assert handler.status == "unset"

    # Nothing secret or personal in any span
    signature = sign(body, SIGNING_KEY)
    for span in otlp.spans:
        for text in span.texts():
            assert PHONE not in text and signature not in text, (span.name, text)
            assert "@" not in text, (span.name, text)


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """What the process logs as JSON lines (structlog configured as ``serve`` does)."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, write_through=True))
    configure_logging("json", "info")
    yield raw
    structlog.reset_defaults()


async def test_a_webhooks_log_line_carries_its_trace_and_span_ids(
    otlp: OtlpReceiver, make_ingress: MakeIngress, settings: Settings, json_lines: io.BytesIO
) -> None:
    # Given an ingress tracing every webhook
    ingress = await make_ingress(replace(settings, tracing=tracing_to(otlp)))

    # When a webhook is accepted and another comes unsigned
    body = example_body("email.opened", "acme")
    assert (await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))).status == 200
    unsigned = {SIGNATURE_HEADER: "0" * 64}
    assert (await ingress.post(WEBHOOK_PATH, data=body, headers=unsigned)).status == 401
    await flush(served_ingress(ingress).tracing)
    await otlp.until(lambda spans: len([s for s in spans if s.kind == "server"]) == 2)

    # Then each one's `webhook` line names its server span
    lines = [orjson.loads(line) for line in json_lines.getvalue().splitlines()]
    webhooks = {line["outcome"]: line for line in lines if line.get("event") == "webhook"}
    servers = {s.attributes["attentive.outcome"]: s for s in otlp.spans if s.kind == "server"}
    assert set(servers) == {"accepted", "unauthorized"}
    for outcome, span in servers.items():
        line = webhooks[outcome]
        assert (line["trace_id"], line["span_id"]) == (span.trace_id, span.span_id)
    # and the unsigned one says no more than its outcome and status
    unauthorized = servers["unauthorized"]
    assert unauthorized.attributes["http.response.status_code"] == 401
    assert not any(
        k.startswith("attentive.") and k != "attentive.outcome" for k in unauthorized.attributes
    )
    assert [s.attributes for s in otlp.children(unauthorized)] == [
        {"attentive.signature.valid": False}
    ]


async def test_with_tracing_off_nothing_is_exported(
    otlp: OtlpReceiver,
    ingress: Client,
    start_worker: StartWorker,
) -> None:
    # Given an ingress and a worker with no OTEL_* variable set, an endpoint listening
    handled: list[str] = []
    worker = Worker(APP)

    @worker.on("sms.sent")
    async def handle(event: Event) -> None:
        handled.append(event.message_id)

    running = await start_worker(worker)

    # When an event goes through
    body = example_body("sms.sent", "acme")
    assert (await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))).status == 200
    await until(lambda: len(handled) == 1)

    # Then neither has a tracer, and nothing reached the endpoint
    assert served_ingress(ingress).tracing is None
    assert running.runner.tracing is None
    await asyncio.sleep(0.5)
    assert otlp.requests == 0


def test_with_tracing_off_none_of_the_tracing_code_is_loaded() -> None:
    # An ingress, then a worker runner, made in a fresh interpreter without OTEL_* variables
    script = (
        "import sys\n"
        "from router.ingress.service import Ingress\n"
        "from router.settings import Settings\n"
        "Ingress(Settings.from_env({'ROUTER_SIGNING_KEYS': 'k'}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
        "from consumers import Worker\n"
        "from consumers.runtime.runner import WorkerRunner\n"
        "from consumers.runtime.settings import WorkerSettings\n"
        "runner = WorkerRunner(Worker('quiet'), WorkerSettings.from_env({}))\n"
        "assert runner._trace() is None\n"
        "ours = ('router.tracing.', 'router.ingress.spans', 'consumers.runtime.tracing')\n"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    ingress, worker = done.stdout.splitlines()
    # the ingress loads nothing of OpenTelemetry
    assert ingress == "[]"
    # the worker none of the tracing code (redis-py loads OpenTelemetry's metrics by itself
    # when it is installed, with or without us)
    assert worker == "['router.tracing.settings']"


async def test_a_webhook_not_sampled_makes_no_span_and_its_message_says_so(
    otlp: OtlpReceiver, make_ingress: MakeIngress, settings: Settings, tap: Tap
) -> None:
    # Given an ingress tracing with a sampler that samples no webhook
    tracing = TracingSettings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_TRACES_SAMPLER": "parentbased_always_off"}
    )
    ingress = await make_ingress(replace(settings, tracing=tracing))

    # When a webhook is accepted
    body = example_body("sms.subscribed", "acme")
    assert (await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))).status == 200

    # Then its message carries a context that is not sampled (its deliveries follow it)
    (message,) = await tap.take(1)
    version, _, _, flags = str(message.headers["traceparent"]).split("-")
    assert (version, flags) == ("00", "00")
    # and nothing is exported
    await flush(served_ingress(ingress).tracing)
    assert otlp.spans == []


async def test_an_unsampled_webhook_quarantined_says_so_too(
    make_ingress: MakeIngress, settings: Settings, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given an ingress tracing with a sampler that samples no webhook
    tracing = TracingSettings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_SAMPLER": "always_off"}
    )
    ingress = await make_ingress(replace(settings, tracing=tracing))

    # When an authentic body that is no event is quarantined
    body = b"not json"
    assert (await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))).status == 202

    # Then the quarantined message carries a context that is not sampled, beside its reason
    channel = await amqp.channel()
    (parked,) = await take(await channel.get_queue(names.invalid_queue), 1)
    version, trace_id, span_id, flags = str(parked.headers["traceparent"]).split("-")
    assert (version, flags) == ("00", "00")
    assert int(trace_id, 16) and int(span_id, 16)
    assert parked.headers["x-attentive-invalid-reason"]
    assert parked.body == body
