"""Tracing's switch and its sampler, without a broker: OpenTelemetry's standard variables
turn it on, a value that cannot work is refused in one line naming its variable, and a
delivery's span takes the sampling decision of the webhook it came from."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import Link, SpanContext, TraceFlags

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.settings import WorkerSettings
from router.contract.names import TRACEPARENT_HEADER, TRACESTATE_HEADER
from router.errors import ConfigError
from router.settings import Settings
from router.tracing.propagation import FIELDS, extract, parse_traceparent
from router.tracing.sampling import sampler_of
from router.tracing.settings import TracingSettings


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_TRACES_SAMPLER": "always_on"}, False),  # (a sampler alone exports nowhere)
    ],
)
def test_tracing_is_on_only_when_an_exporter_or_an_endpoint_is_set(
    env: dict[str, str], on: bool
) -> None:
    assert TracingSettings.from_env(env).enabled is on
    assert Settings.from_env(env).tracing.enabled is on
    assert WorkerSettings.from_env(env).tracing.enabled is on


def test_where_the_spans_go() -> None:
    base = TracingSettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert base.traces_url == "http://collector:4318/v1/traces"
    own = TracingSettings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://tempo.example/otlp/v1/traces",
        }
    )
    assert own.traces_url == "https://tempo.example/otlp/v1/traces"
    assert TracingSettings.from_env({"OTEL_TRACES_EXPORTER": "otlp"}).traces_url == (
        "http://localhost:4318/v1/traces"
    )
    both = TracingSettings.from_env({"OTEL_TRACES_EXPORTER": "otlp, console"})
    assert (both.otlp, both.console) == (True, True)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf (for gRPC, point it at the "
            "collector's OTLP/HTTP port, 4318), not 'grpc'",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "x"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must be http/protobuf",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "jaeger"},
            "OTEL_TRACES_EXPORTER must be a comma-separated list of otlp, console, none, "
            "not 'jaeger'",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "sometimes"},
            "OTEL_TRACES_SAMPLER must be one of always_on, always_off",
        ),
        (
            {"OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1, not '1.5'",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
            "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL, not 'collector:4318'",
        ),
    ],
)
def test_a_value_that_cannot_work_is_refused_naming_its_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)
    with pytest.raises(WorkerConfigError) as refused_worker:
        WorkerSettings.from_env(env)
    assert str(refused_worker.value).startswith(message)


def test_the_contract_names_the_headers_the_propagator_writes() -> None:
    assert {TRACEPARENT_HEADER, TRACESTATE_HEADER} == FIELDS
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    # AMQP tables carry text as str or bytes: both read the same
    for value in (traceparent, traceparent.encode()):
        context = extract({TRACEPARENT_HEADER: value})
        assert context is not None
        assert format(context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert parse_traceparent("00-not-a-context-01") is None
    assert extract({TRACEPARENT_HEADER: 7}) is None


def _created(sampled: bool) -> Link:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=flags)
    return Link(context, {"attentive.link.type": "created"})


@pytest.mark.parametrize("sampled", [True, False])
def test_a_delivery_follows_its_webhooks_sampling_decision_with_a_parent_based_sampler(
    sampled: bool,
) -> None:
    # A ratio of 1 %: a root would rarely be sampled; a delivery is exactly when its webhook was
    sampler = sampler_of(
        TracingSettings.from_env(
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}
        )
    )
    decisions = {
        sampler.should_sample(None, trace_id, "process", links=[_created(sampled)]).decision
        for trace_id in range(1, 2**63, 2**57)
    }
    assert decisions == {Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP}
    # a root without such a link is the ratio's to decide (the highest trace ids are dropped)
    assert sampler.should_sample(None, 2**128 - 1, "POST").decision == Decision.DROP


def test_a_sampler_not_parent_based_decides_for_deliveries_too() -> None:
    sampler = sampler_of(TracingSettings.from_env({"OTEL_TRACES_SAMPLER": "always_off"}))
    decision = sampler.should_sample(None, 1, "process", links=[_created(True)]).decision
    assert decision == Decision.DROP
