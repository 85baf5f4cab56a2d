"""A process's tracer: an OpenTelemetry SDK tracer provider of its own, exporting in batches
(a thread of the SDK's, never the event loop) to an OTLP/HTTP endpoint, or to stdout.

The provider is also made the process's global one if none is yet, so that spans a handler
makes with ``opentelemetry.trace.get_tracer()`` join the handler's span and go to the same
place.
"""

from __future__ import annotations

import asyncio
import importlib.metadata

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from router.tracing.sampling import sampler_of
from router.tracing.settings import TracingSettings

#: The instrumentation scope of every span the router and the worker runtime make.
SCOPE = "attentive-router"


def _version() -> str:
    try:
        return importlib.metadata.version("attentive-router")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover (a source checkout)
        return "0"


class Tracing:
    """The tracer of one process (``service``: its service name unless ``OTEL_SERVICE_NAME``
    gives one) and what exports its spans."""

    def __init__(self, settings: TracingSettings, service: str) -> None:
        resource = Resource.create(
            {SERVICE_NAME: settings.service_name or service, SERVICE_VERSION: _version()}
        )
        provider = TracerProvider(sampler=sampler_of(settings), resource=resource)
        if settings.otlp:
            exporter = OTLPSpanExporter(endpoint=settings.traces_url)
            provider.add_span_processor(BatchSpanProcessor(exporter))
        if settings.console:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        self.settings = settings
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE, _version())
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)

    def flush(self, timeout: float = 10.0) -> bool:
        """Export every span ended so far (blocking: at most ``timeout`` seconds); whether
        all went."""
        return self.provider.force_flush(int(timeout * 1000))

    async def close(self) -> None:
        """Export what is left and stop (in a thread: an export is a blocking request)."""
        await asyncio.to_thread(self.provider.shutdown)


__all__ = ["SCOPE", "Tracing"]
