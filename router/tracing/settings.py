"""What turns tracing on and where its spans go: OpenTelemetry's own environment variables,
read once at the edge.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter, or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and off when
``OTEL_SDK_DISABLED`` is true or the exporter is ``none``. The variables mean what the
OpenTelemetry specification says; the SDK itself reads the ones not read here (the OTLP
headers, timeout, compression and certificate, ``OTEL_RESOURCE_ATTRIBUTES``, the batch
processor's ``OTEL_BSP_*``). Pure: nothing here imports OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from router import config
from router.config import Variable

#: The exporters ``OTEL_TRACES_EXPORTER`` may name (a comma-separated list of them).
EXPORTERS: Final = ("otlp", "console", "none")
#: The samplers ``OTEL_TRACES_SAMPLER`` may name, as the specification spells them.
SAMPLERS: Final = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
#: The one OTLP protocol spoken: protobuf over HTTP (a collector's port 4318).
PROTOCOL: Final = "http/protobuf"
#: Where OTLP goes when only the exporter is named (the specification's default).
DEFAULT_ENDPOINT: Final = "http://localhost:4318"


@dataclass(frozen=True, kw_only=True)
class TracingSettings:
    """Tracing's settings; the defaults: off."""

    #: ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` or both; ``none`` turns tracing off.
    exporters: tuple[str, ...] = ()
    #: ``OTEL_EXPORTER_OTLP_ENDPOINT``: the collector's base URL (``/v1/traces`` is added).
    endpoint: str = ""
    #: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: the traces URL itself (wins over the above).
    traces_endpoint: str = ""
    #: ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``.
    protocol: str = PROTOCOL
    #: ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` (the ratio, 0 to 1).
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    #: ``OTEL_SERVICE_NAME``: else each process names itself (``attentive-router``, a
    #: worker its application).
    service_name: str = ""
    #: ``OTEL_SDK_DISABLED``: off, whatever else is set.
    disabled: bool = False

    @property
    def enabled(self) -> bool:
        """Whether spans are made and exported."""
        if self.disabled or "none" in self.exporters:
            return False
        return bool(self.exporters or self.endpoint or self.traces_endpoint)

    @property
    def switched_on_by(self) -> str:
        """The variable that turned tracing on (for an error message)."""
        if self.exporters:
            return "OTEL_TRACES_EXPORTER"
        if self.traces_endpoint:
            return "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        return "OTEL_EXPORTER_OTLP_ENDPOINT"

    @property
    def otlp(self) -> bool:
        """Whether spans go to an OTLP endpoint (an endpoint set without an exporter named is
        OTLP's)."""
        return "otlp" in self.exporters or not self.exporters

    @property
    def console(self) -> bool:
        """Whether spans are also printed (``OTEL_TRACES_EXPORTER=console``), for a look."""
        return "console" in self.exporters

    @property
    def traces_url(self) -> str:
        """Where OTLP/HTTP export requests are POSTed."""
        if self.traces_endpoint:
            return self.traces_endpoint
        return (self.endpoint or DEFAULT_ENDPOINT).rstrip("/") + "/v1/traces"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TracingSettings:
        """The settings ``env`` sets; :class:`~router.errors.ConfigError` naming the variable
        of a value that cannot work."""
        variables = {
            **VARIABLES,
            "protocol": config.first_set(env, _TRACES_PROTOCOL, _PROTOCOL),
        }
        return config.load(cls, env, variables, {})


def _exporters(names: tuple[str, ...]) -> bool:
    return all(name in EXPORTERS for name in names)


def _http_url(url: str) -> bool:
    return not url or url.startswith(("http://", "https://"))


_URL = "an http:// or https:// URL"
_PROTOCOL_ACCEPTED = f"{PROTOCOL} (for gRPC, point it at the collector's OTLP/HTTP port, 4318)"
_PROTOCOL = Variable(
    "OTEL_EXPORTER_OTLP_PROTOCOL", _PROTOCOL_ACCEPTED, str, lambda p: p == PROTOCOL
)
_TRACES_PROTOCOL = Variable(
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", _PROTOCOL_ACCEPTED, str, lambda p: p == PROTOCOL
)

#: The variable each field is read from (field name → variable); ``protocol`` is read from
#: ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` when set, else from ``OTEL_EXPORTER_OTLP_PROTOCOL``.
VARIABLES: Final[Mapping[str, Variable[Any]]] = {
    "exporters": Variable(
        "OTEL_TRACES_EXPORTER",
        f"a comma-separated list of {', '.join(EXPORTERS)}",
        config.split_commas,
        _exporters,
    ),
    "endpoint": config.text("OTEL_EXPORTER_OTLP_ENDPOINT", accepted=_URL, valid=_http_url),
    "traces_endpoint": config.text(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", accepted=_URL, valid=_http_url
    ),
    "protocol": _PROTOCOL,
    "sampler": config.choice("OTEL_TRACES_SAMPLER", SAMPLERS),
    "sampler_arg": Variable(
        "OTEL_TRACES_SAMPLER_ARG", "a number between 0 and 1", float, lambda r: 0 <= r <= 1
    ),
    "service_name": config.text("OTEL_SERVICE_NAME"),
    "disabled": config.boolean("OTEL_SDK_DISABLED"),
}


__all__ = [
    "DEFAULT_ENDPOINT",
    "EXPORTERS",
    "PROTOCOL",
    "SAMPLERS",
    "VARIABLES",
    "TracingSettings",
]
