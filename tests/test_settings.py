"""Settings from ``ROUTER_*``, ``WORKER_*`` and ``ATTENTIVE_API_*`` variables and flags, and the
configurations that are refused."""

from __future__ import annotations

import dataclasses
import ssl

import pytest

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.settings import VARIABLES as WORKER_VARIABLES
from consumers.runtime.settings import WorkerSettings
from router.amqp.url import AmqpUrl
from router.attentive.settings import VARIABLES as ATTENTIVE_VARIABLES
from router.attentive.settings import AttentiveSettings
from router.errors import ConfigError
from router.parked.settings import VARIABLES as KEEPER_VARIABLES
from router.secret import revealed
from router.settings import ADMIN_TOKEN_FILE, DEFAULT_AMQP_URL, Settings, parse_keys
from router.settings import VARIABLES as ROUTER_VARIABLES
from router.tracing.settings import VARIABLES as TRACING_VARIABLES
from router.tracing.settings import TracingSettings
from tests.test_deploy_files import undocumented


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    settings = Settings.from_env({})

    assert settings.amqp_url.reveal() == DEFAULT_AMQP_URL == "amqp://guest:guest@localhost:5672/"
    assert settings.signing_keys == ()
    assert settings.host == "0.0.0.0"
    assert settings.port == 8080
    assert settings.max_body_bytes == 256 * 1024
    assert settings.confirm_timeout == 5.0
    assert settings.retry_after == 5
    assert settings.confirm_timeouts_to_recycle == 3
    assert settings.confirm_timeout_window == 30.0
    assert settings.namespace == "attentive"
    assert settings.log_format == "auto"
    assert settings.log_level == "info"


def test_variables_without_the_router_prefix_are_ignored() -> None:
    settings = Settings.from_env({"PORT": "9999", "SIGNING_KEYS": "k", "router_port": "9999"})

    assert settings.port == 8080
    assert settings.signing_keys == ()


def test_signing_keys_are_comma_separated_with_blanks_dropped() -> None:
    """Given "a, b,,c", the keys are a, b and c: spaces trimmed, the empty one dropped."""
    settings = Settings.from_env({"ROUTER_SIGNING_KEYS": "a, b,,c"})

    assert revealed(settings.signing_keys) == ("a", "b", "c")


@pytest.mark.parametrize(
    ("raw", "keys"),
    [
        ("only", ("only",)),
        (" new , old ", ("new", "old")),
        (",,", ()),
        ("a,a", ("a", "a")),
    ],
)
def test_parse_keys(raw: str, keys: tuple[str, ...]) -> None:
    assert parse_keys(raw) == keys


def test_numbers_are_read_as_numbers() -> None:
    env = {
        "ROUTER_PORT": "9090",
        "ROUTER_CONFIRM_TIMEOUT": "2.5",
        "ROUTER_MAX_BODY_BYTES": "1024",
        "ROUTER_RETRY_AFTER": "0",
    }

    settings = Settings.from_env(env)

    assert settings.port == 9090
    assert isinstance(settings.port, int)
    assert settings.confirm_timeout == 2.5
    assert settings.max_body_bytes == 1024
    assert settings.retry_after == 0


def test_strings_are_taken_as_given_with_surrounding_blanks_trimmed() -> None:
    env = {
        "ROUTER_AMQP_URL": " amqp://u:p@rabbit:5672/vh ",
        "ROUTER_HOST": "127.0.0.1",
        "ROUTER_PORT": " 9090\n",
        "ROUTER_NAMESPACE": "staging",
        "ROUTER_LOG_FORMAT": "json",
        "ROUTER_LOG_LEVEL": "debug",
    }

    settings = Settings.from_env(env)

    assert settings.amqp_url.reveal() == "amqp://u:p@rabbit:5672/vh"
    assert settings.host == "127.0.0.1"
    assert settings.port == 9090
    assert settings.namespace == "staging"
    assert settings.log_format == "json"
    assert settings.log_level == "debug"


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_variable_counts_as_unset(blank: str) -> None:
    settings = Settings.from_env({"ROUTER_PORT": blank, "ROUTER_NAMESPACE": blank})

    assert settings.port == 8080
    assert settings.namespace == "attentive"


def test_flags_win_over_the_environment() -> None:
    """Given a port and keys in the environment, the flags' values are the ones used."""
    env = {"ROUTER_PORT": "9090", "ROUTER_SIGNING_KEYS": "from-env", "ROUTER_HOST": "::"}

    settings = Settings.from_env(env, port=7070, signing_keys=("from-flag",))

    assert settings.port == 7070
    assert revealed(settings.signing_keys) == ("from-flag",)
    assert settings.host == "::"  # not overridden: still the environment's


def test_a_flag_that_was_not_given_leaves_the_environment_value() -> None:
    """argparse passes None for an absent flag; None must not replace the environment's value."""
    env = {"ROUTER_PORT": "9090", "ROUTER_SIGNING_KEYS": "k1,k2"}

    settings = Settings.from_env(env, port=None, signing_keys=None, host=None, amqp_url=None)

    assert settings.port == 9090
    assert revealed(settings.signing_keys) == ("k1", "k2")
    assert settings.host == "0.0.0.0"
    assert settings.amqp_url.reveal() == DEFAULT_AMQP_URL


@pytest.mark.parametrize(
    ("env", "names_variable"),
    [
        pytest.param({"ROUTER_PORT": "eighty"}, "ROUTER_PORT", id="port-not-a-number"),
        pytest.param({"ROUTER_PORT": "80.5"}, "ROUTER_PORT", id="port-not-an-integer"),
        pytest.param({"ROUTER_PORT": "0"}, "ROUTER_PORT", id="port-0"),
        pytest.param({"ROUTER_PORT": "70000"}, "ROUTER_PORT", id="port-70000"),
        pytest.param({"ROUTER_PORT": "65536"}, "ROUTER_PORT", id="port-65536"),
        pytest.param({"ROUTER_PORT": "-1"}, "ROUTER_PORT", id="port-negative"),
        pytest.param(
            {"ROUTER_CONFIRM_TIMEOUT": "-1"}, "ROUTER_CONFIRM_TIMEOUT", id="negative-timeout"
        ),
        pytest.param({"ROUTER_CONFIRM_TIMEOUT": "0"}, "ROUTER_CONFIRM_TIMEOUT", id="zero-timeout"),
        pytest.param({"ROUTER_CONFIRM_TIMEOUT": "nan"}, "ROUTER_CONFIRM_TIMEOUT", id="nan-timeout"),
        pytest.param({"ROUTER_CONFIRM_TIMEOUT": "inf"}, "ROUTER_CONFIRM_TIMEOUT", id="inf-timeout"),
        pytest.param({"ROUTER_LOG_LEVEL": "loud"}, "ROUTER_LOG_LEVEL", id="bad-log-level"),
        pytest.param(
            {"ROUTER_CONFIRM_TIMEOUT": "soon"}, "ROUTER_CONFIRM_TIMEOUT", id="timeout-not-a-number"
        ),
        pytest.param(
            {"ROUTER_MAX_BODY_BYTES": "0"}, "ROUTER_MAX_BODY_BYTES", id="zero-max-body-bytes"
        ),
        pytest.param({"ROUTER_RETRY_AFTER": "-1"}, "ROUTER_RETRY_AFTER", id="negative-retry"),
        pytest.param({"ROUTER_LOG_FORMAT": "xml"}, "ROUTER_LOG_FORMAT", id="bad-log-format"),
        pytest.param({"ROUTER_LOG_FORMAT": "JSON"}, "ROUTER_LOG_FORMAT", id="log-format-case"),
        pytest.param({"ROUTER_NAMESPACE": "a b"}, "ROUTER_NAMESPACE", id="namespace-space"),
        pytest.param({"ROUTER_NAMESPACE": "a.#"}, "ROUTER_NAMESPACE", id="namespace-wildcard"),
        pytest.param(
            {"ROUTER_CONFIRM_TIMEOUTS_TO_RECYCLE": "0"},
            "ROUTER_CONFIRM_TIMEOUTS_TO_RECYCLE",
            id="recycle-after-0",
        ),
        pytest.param(
            {"ROUTER_CONFIRM_TIMEOUTS_TO_RECYCLE": "2.5"},
            "ROUTER_CONFIRM_TIMEOUTS_TO_RECYCLE",
            id="recycle-after-not-an-integer",
        ),
        pytest.param(
            {"ROUTER_CONFIRM_TIMEOUT_WINDOW": "0"}, "ROUTER_CONFIRM_TIMEOUT_WINDOW", id="window-0"
        ),
    ],
)
def test_a_setting_that_cannot_work_is_refused_by_name(
    env: dict[str, str], names_variable: str
) -> None:
    """The error names the variable, so the operator knows which one to fix."""
    with pytest.raises(ConfigError, match=names_variable):
        Settings.from_env(env)


@pytest.mark.parametrize("port", [1, 65535])
def test_the_extreme_valid_ports_are_accepted(port: int) -> None:
    assert Settings.from_env({"ROUTER_PORT": str(port)}).port == port


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"port": 0}, id="port"),
        pytest.param({"confirm_timeout": -0.5}, id="timeout"),
        pytest.param({"log_format": "yaml"}, id="log-format"),
        pytest.param({"namespace": ""}, id="namespace"),
    ],
)
def test_flags_are_validated_like_the_environment(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({}, **overrides)


def test_require_signing_keys_refuses_settings_without_a_key() -> None:
    settings = Settings.from_env({"ROUTER_SIGNING_KEYS": " , "})
    assert settings.signing_keys == ()

    with pytest.raises(ConfigError, match="ROUTER_SIGNING_KEYS"):
        settings.require_signing_keys()


def test_require_signing_keys_accepts_settings_with_a_key() -> None:
    settings = Settings.from_env({"ROUTER_SIGNING_KEYS": "k"})

    settings.require_signing_keys()  # Then: no ConfigError


def test_broker_names_derive_from_the_namespace() -> None:
    """Given namespace "t-1", every exchange and queue name starts with "t-1."."""
    names = Settings.from_env({"ROUTER_NAMESPACE": "t-1"}).names

    assert names.prefix == "t-1"
    assert names.events_exchange == "t-1.events"
    assert names.unrouted_exchange == "t-1.unrouted"
    assert names.unrouted_queue == "t-1.unrouted"
    assert names.invalid_queue == "t-1.invalid"


def test_the_default_namespace_gives_the_production_names() -> None:
    names = Settings.from_env({}).names

    assert names.events_exchange == "attentive.events"
    assert names.invalid_queue == "attentive.invalid"


def test_the_recycle_settings_are_read_from_the_environment() -> None:
    env = {"ROUTER_CONFIRM_TIMEOUTS_TO_RECYCLE": "5", "ROUTER_CONFIRM_TIMEOUT_WINDOW": "12.5"}

    settings = Settings.from_env(env)

    assert (settings.confirm_timeouts_to_recycle, settings.confirm_timeout_window) == (5, 12.5)


# -- the RabbitMQ URL: what either connection could not honour is refused at start ----------


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("amqp://u:hunter2@h/?frame_max=4096", "'frame_max'"),  # aiormq ignores it
        ("amqp://u:hunter2@h/?channel_max=10", "'channel_max'"),
        ("amqp://u:hunter2@h/?connection_timeout=5", "'connection_timeout'"),
        ("amqp://u:hunter2@h/?heartbeat=abc", "'heartbeat'"),  # aiormq: silently 0
        ("amqp://u:hunter2@h/?heartbeat=70000", "'heartbeat'"),
        ("amqp://u:hunter2@h/?heartbeat=5&heartbeat=6", "'heartbeat'"),
        ("amqp://u:hunter2@h/?timeout=-1", "'timeout'"),
        ("amqp://u:hunter2@h/?auth=scram", "'auth'"),
        ("amqp://u:hunter2@h/?cafile=/ca.pem", "'cafile'"),  # TLS options need amqps://
        ("amqps://u:hunter2@h/?no_verify_ssl=false", "'no_verify_ssl'"),  # aiormq: no verify!
        ("amqps://u:hunter2@h/?cadata=not*base64", "'cadata'"),
        ("amqps://u:hunter2@h/?keyfile=/k.pem", "'keyfile'"),
        ("amqps://u:hunter2@h/?cafile=/nonexistent/ca.pem", "cafile"),
        ("amqp://a/,amqp://u:hunter2@h/?frame_max=1", "'frame_max'"),  # any node of the list
        ("http://u:hunter2@h/", "not an amqp"),
        ("amqp://u:hunter2@:5672/", "no host"),
    ],
)
def test_a_url_option_that_cannot_be_honoured_is_refused_in_one_line(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"ROUTER_AMQP_URL": url})

    message = str(refused.value)
    assert named in message
    assert "\n" not in message
    assert "hunter2" not in message  # the password never appears


def test_a_worker_refuses_such_a_url_at_start_too() -> None:
    # (the worker reads WORKER_AMQP_URL as the router reads its URL, before it connects)
    with pytest.raises(WorkerConfigError) as refused:
        WorkerSettings.from_env({"WORKER_AMQP_URL": "amqp://u:hunter2@h/?frame_max=1"})

    assert "'frame_max'" in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_the_options_both_connections_honour_are_read_once() -> None:
    url = AmqpUrl.parse(
        "amqp://app%40acme:p%3Ass@rabbit:5673/orders?heartbeat=10&name=ingress-a&timeout=2.5"
        "&auth=plain&interleave=1&happy_eyeballs_delay=0.25"
    )

    assert (url.host, url.port, url.vhost) == ("rabbit", 5673, "orders")
    assert (url.user, url.password) == ("app@acme", "p:ss")  # URL-decoded, as aiormq
    assert (url.heartbeat, url.name, url.connect_timeout, url.auth) == (
        10,
        "ingress-a",
        2.5,
        "PLAIN",
    )
    assert (url.interleave, url.happy_eyeballs_delay) == (1, 0.25)
    assert "p%3Ass" not in url.redacted and "app%40acme" in url.redacted


@pytest.mark.parametrize(
    ("raw", "user", "vhost", "heartbeat", "port"),
    [
        ("amqp://rabbit", "guest", "/", 60, 5672),  # as aiormq: guest, "/", 60 s
        ("amqp://rabbit/%2F", "guest", "/", 60, 5672),
        ("amqps://bob@rabbit/a%2Fb?heartbeat=0", "bob", "a/b", 0, 5671),
    ],
)
def test_what_a_url_leaves_out_is_what_aiormq_assumes(
    raw: str, user: str, vhost: str, heartbeat: int, port: int
) -> None:
    url = AmqpUrl.parse(raw)

    assert (url.user, url.password, url.vhost, url.heartbeat, url.port) == (
        user,
        "guest",
        vhost,
        heartbeat,
        port,
    )


def test_no_verify_ssl_1_turns_verification_off_and_0_keeps_it() -> None:
    unverified = AmqpUrl.parse("amqps://rabbit/?no_verify_ssl=1").ssl_context()
    verified = AmqpUrl.parse("amqps://rabbit/?no_verify_ssl=0").ssl_context()

    assert unverified is not None and unverified.verify_mode == ssl.CERT_NONE
    assert verified is not None and verified.verify_mode == ssl.CERT_REQUIRED
    assert AmqpUrl.parse("amqp://rabbit/").ssl_context() is None


# -- one way to read: every field has its variable; what is refused names it ---------------


def test_every_router_setting_is_read_from_its_own_variable() -> None:
    """Each field has a ROUTER_* variable of its own (but tracing's: OpenTelemetry's own)."""
    fields = {field.name for field in dataclasses.fields(Settings)}
    assert set(ROUTER_VARIABLES) == fields - {"tracing"}
    assert len({v.name for v in ROUTER_VARIABLES.values()}) == len(ROUTER_VARIABLES)
    assert all(v.name.startswith("ROUTER_") for v in ROUTER_VARIABLES.values())


def test_the_admin_url_is_router_admin_url_else_the_admin_listener() -> None:
    assert Settings.from_env({"ROUTER_ADMIN_PORT": "9091"}).admin_url == "http://127.0.0.1:9091"
    assert Settings.from_env({"ROUTER_ADMIN_HOST": "admin.local"}).admin_url == (
        "http://admin.local:8081"
    )
    env = {"ROUTER_ADMIN_URL": " https://admin.example.com/router ", "ROUTER_ADMIN_PORT": "9091"}
    assert Settings.from_env(env).admin_url == "https://admin.example.com/router"


def test_every_worker_setting_is_read_from_a_variable() -> None:
    fields = {field.name for field in dataclasses.fields(WorkerSettings)}
    assert set(WORKER_VARIABLES) == fields - {"tracing"}
    tracing = {field.name for field in dataclasses.fields(TracingSettings)}
    assert set(TRACING_VARIABLES) == tracing
    assert all(v.name.startswith("OTEL_") for v in TRACING_VARIABLES.values())


def test_every_attentive_setting_but_the_longest_wait_is_read_from_a_variable() -> None:
    fields = {field.name for field in dataclasses.fields(AttentiveSettings)}
    assert set(ATTENTIVE_VARIABLES) == fields - {"max_delay"}


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        ("WORKER_PREFETCH", "lots"),
        ("WORKER_PREFETCH", "0"),
        ("WORKER_METRICS_PORT", "9090.5"),
        ("WORKER_CLAIM_TIMEOUT", "a minute"),
        ("WORKER_PUBLISH_TIMEOUT", "10s"),
        ("WORKER_SHUTDOWN_TIMEOUT", "never"),
        ("WORKER_IDEMPOTENCY_LEASE", "-1"),
        ("WORKER_AMQP_URL", "http://u:hunter2@h/"),
        ("ROUTER_AMQP_URL", "amqp://u:hunter2@h/?frame_max=1"),
    ],
)
def test_a_bad_worker_variable_is_one_line_naming_it(variable: str, bad: str) -> None:
    with pytest.raises(WorkerConfigError) as refused:
        WorkerSettings.from_env({variable: bad})

    message = str(refused.value)
    assert message.startswith(variable)
    assert "\n" not in message
    assert "hunter2" not in message


def test_a_worker_flag_is_checked_as_its_variable() -> None:
    with pytest.raises(
        WorkerConfigError, match=r"^WORKER_PREFETCH must be an integer >= 1, not 0$"
    ):
        WorkerSettings.from_env({}, prefetch=0)


APP_URL, ROUTER_URL = "amqp://app:pw@rabbit/", "amqp://router:pw@rabbit/"
ADMIN_TOKEN = "an-admin-token-of-at-least-32-characters"


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"WORKER_AMQP_URL": APP_URL, "ROUTER_AMQP_URL": ROUTER_URL}, APP_URL),
        ({"WORKER_AMQP_URL": " ", "ROUTER_AMQP_URL": ROUTER_URL}, ROUTER_URL),
        ({}, DEFAULT_AMQP_URL),
    ],
)
def test_a_worker_reads_its_own_broker_url_else_the_routers(env: dict[str, str], url: str) -> None:
    assert WorkerSettings.from_env(env).amqp_url.reveal() == url


def test_a_worker_reads_the_variables_it_shares_with_the_router() -> None:
    env = {
        "ROUTER_ADMIN_URL": "http://admin:8081",
        "ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
        "ROUTER_NAMESPACE": "staging",
        "WORKER_PREFETCH": "32",
        "WORKER_METRICS_PORT": "9100",
        "WORKER_SHUTDOWN_TIMEOUT": "2.5",
        "WORKER_IDEMPOTENCY_URL": "redis://cache:6379/0",
    }

    settings = WorkerSettings.from_env(env)

    assert (settings.admin_url, settings.admin_token.reveal(), settings.namespace) == (
        "http://admin:8081",
        ADMIN_TOKEN,
        "staging",
    )
    assert (settings.prefetch, settings.metrics_port, settings.shutdown_timeout) == (32, 9100, 2.5)
    assert settings.idempotency_url is not None
    assert settings.idempotency_url.reveal() == "redis://cache:6379/0"


ATTENTIVE_TOKEN = "s3cret-token"


@pytest.mark.parametrize(
    ("variable", "bad"),
    [
        ("ATTENTIVE_API_ATTEMPTS", "three"),
        ("ATTENTIVE_API_ATTEMPTS", "11"),
        ("ATTENTIVE_API_RETRY_DELAY", "-0.5"),
        ("ATTENTIVE_API_TIMEOUT", "nan"),
        ("ATTENTIVE_API_URL", "ftp://api.example.com"),
        ("ATTENTIVE_API_TOKEN", f"{ATTENTIVE_TOKEN} x"),
    ],
)
def test_a_bad_attentive_variable_is_one_line_naming_it(variable: str, bad: str) -> None:
    env = {"ATTENTIVE_API_TOKEN": ATTENTIVE_TOKEN, variable: bad}

    with pytest.raises(ConfigError) as refused:
        AttentiveSettings.from_env(env)

    message = str(refused.value)
    assert message.startswith(f"{variable} must be ")
    assert "\n" not in message
    assert ATTENTIVE_TOKEN not in message  # never quoted, not even a wrong one


def test_every_variable_the_router_and_the_worker_read_is_documented() -> None:
    tables = (ROUTER_VARIABLES, KEEPER_VARIABLES, WORKER_VARIABLES)
    names = [v.name for table in tables for v in table.values()]

    assert undocumented([*names, ADMIN_TOKEN_FILE.name]) == []
