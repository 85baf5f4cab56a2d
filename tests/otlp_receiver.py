"""An OTLP/HTTP endpoint of the tests' own: what a collector receives, decoded.

It serves ``POST /v1/traces`` on 127.0.0.1, decodes each ``ExportTraceServiceRequest`` (the
protobuf the OpenTelemetry SDK's exporter sends) with ``opentelemetry-proto``, keeps every
span as a :class:`ReceivedSpan`, and answers as a collector does.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

#: Span kinds as OTLP numbers them.
KINDS = {
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the endpoint received it (ids in hex, as trace viewers show them)."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    #: The parent's span id; empty for a root.
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[ReceivedLink]
    #: ``unset``, ``ok`` or ``error``.
    status: str
    status_message: str

    def link(self, kind: str) -> ReceivedLink | None:
        """The link whose ``attentive.link.type`` is ``kind``, if the span has one."""
        return next(
            (k for k in self.links if k.attributes.get("attentive.link.type") == kind), None
        )

    def texts(self) -> list[str]:
        """Every text the span carries: its name, attribute and event values, status."""
        values = [self.name, self.status_message, *map(str, self.attributes.values())]
        for _, attributes in self.events:
            values += map(str, attributes.values())
        return values


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass
class OtlpReceiver:
    """The endpoint: ``url`` is what ``OTEL_EXPORTER_OTLP_ENDPOINT`` would be set to."""

    url: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    #: Export requests received (any path, decodable or not).
    requests: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        data = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        export = ExportTraceServiceRequest()
        export.ParseFromString(data)
        for resource_spans in export.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name"))
            for scope_spans in resource_spans.scope_spans:
                self.spans += [_received(service, span) for span in scope_spans.spans]
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def until(
        self, enough: Callable[[list[ReceivedSpan]], bool], timeout: float = 15
    ) -> None:
        """Return once ``enough(spans)`` holds; ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not enough(self.spans):
                await asyncio.sleep(0.05)

    def named(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]

    def by_id(self, span_id: str) -> ReceivedSpan:
        (span,) = (s for s in self.spans if s.span_id == span_id)
        return span

    def children(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [
            s for s in self.spans if s.trace_id == parent.trace_id and s.parent_id == parent.span_id
        ]


def _received(service: str, span: Span) -> ReceivedSpan:
    status = {Status.STATUS_CODE_OK: "ok", Status.STATUS_CODE_ERROR: "error"}
    return ReceivedSpan(
        service=service,
        name=span.name,
        kind=KINDS.get(span.kind, "unspecified"),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        attributes=_attributes(span.attributes),
        events=[(event.name, _attributes(event.attributes)) for event in span.events],
        links=[
            ReceivedLink(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
            for link in span.links
        ],
        status=status.get(span.status.code, "unset"),
        status_message=span.status.message,
    )


@pytest.fixture
async def otlp() -> AsyncIterator[OtlpReceiver]:
    """An OTLP/HTTP endpoint on a port of its own, for the test's spans."""
    receiver = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}"
    yield receiver
    await runner.cleanup()


__all__ = ["OtlpReceiver", "ReceivedLink", "ReceivedSpan", "otlp"]
