"""Traces with OpenTelemetry, off unless its standard variables ask for them.

:class:`~router.tracing.settings.TracingSettings` reads ``OTEL_*`` once at the edge, with
the rest of the settings; :func:`start_tracing` gives the process its tracer, or None when
tracing is off. Nothing imports ``opentelemetry`` until then: with tracing off (or the
``otel`` extra not installed) the ingress and the workers never load it. The spans
themselves are made where the work is: :mod:`router.ingress.spans` for each webhook,
:mod:`consumers.runtime.tracing` for each delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.errors import ConfigError
from router.tracing.settings import TracingSettings

if TYPE_CHECKING:
    from router.tracing.provider import Tracing


def start_tracing(settings: TracingSettings, service: str) -> Tracing | None:
    """The process's tracing, exporting as ``settings`` say under the service name
    ``service`` (unless ``OTEL_SERVICE_NAME`` names another); None when tracing is off.
    :class:`ConfigError` when it is on and the ``otel`` extra is not installed."""
    if not settings.enabled:
        return None
    try:
        from router.tracing.provider import Tracing
    except ImportError as error:
        raise ConfigError(
            f"tracing is on ({settings.switched_on_by}) but OpenTelemetry is not installed: "
            f"pip install 'attentive-router[otel]' ({error.name} is missing)"
        ) from None
    return Tracing(settings, service)


__all__ = ["TracingSettings", "start_tracing"]
