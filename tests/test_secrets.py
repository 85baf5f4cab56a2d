"""Secret settings never show themselves, and the admin token is long enough to be one.

Every secret a setting holds (the broker's and the database's passwords, the signing keys, the
admin token, the idempotency store's password, Attentive's token) is a
:class:`~router.secret.Secret`: printing the settings, logging them or quoting them in an error
shows ``***`` where each secret is, and the code that needs the value asks for it by name.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.settings import WorkerSettings
from router.attentive.settings import AttentiveSettings
from router.cli.main import main
from router.errors import ConfigError
from router.secret import Secret, SecretUrl, redact_url
from router.settings import MIN_ADMIN_TOKEN_LENGTH, Settings

BROKER_PASSWORD = "broker-pw-6c1f0e"
DATABASE_PASSWORD = "database-pw-93ab2d"
STORE_PASSWORD = "store-pw-5d7e11"
SIGNING_KEYS = ("signing-key-new-2f8a", "signing-key-old-7b3c")
ADMIN_TOKEN = "admin-token-" + "x" * 32
ATTENTIVE_TOKEN = "attentive-token-4e9d"
SECRETS = (
    BROKER_PASSWORD,
    DATABASE_PASSWORD,
    STORE_PASSWORD,
    *SIGNING_KEYS,
    ADMIN_TOKEN,
    ATTENTIVE_TOKEN,
)
BROKER_URLS = (
    f"amqp://router:{BROKER_PASSWORD}@rabbit1:5672/attentive,"
    f"amqp://router:{BROKER_PASSWORD}@rabbit2:5672/attentive"
)
ENV = {
    "ROUTER_AMQP_URL": BROKER_URLS,
    "ROUTER_SIGNING_KEYS": ",".join(SIGNING_KEYS),
    "ROUTER_DATABASE_URL": f"postgresql://router:{DATABASE_PASSWORD}@db:5432/router",
    "ROUTER_ADMIN_TOKEN": ADMIN_TOKEN,
    "WORKER_IDEMPOTENCY_URL": f"redis://:{STORE_PASSWORD}@cache:6379/0",
    "ATTENTIVE_API_TOKEN": ATTENTIVE_TOKEN,
}


def every_settings() -> list[object]:
    return [
        Settings.from_env(ENV),
        WorkerSettings.from_env(ENV),
        AttentiveSettings.from_env(ENV),
    ]


@pytest.mark.parametrize("show", [repr, str, "{}".format, "{!s:>10}".format])
def test_printed_settings_show_no_secret_but_say_where_they_connect(show: object) -> None:
    assert callable(show)
    for settings in every_settings():
        shown = show(settings)

        for secret in SECRETS:
            assert secret not in shown, f"{type(settings).__name__} shows {secret}"
    router, worker = (show(s) for s in every_settings()[:2])
    assert "amqp://router:***@rabbit1:5672/attentive,amqp://router:***@rabbit2:5672" in router
    assert "postgresql://router:***@db:5432/router" in router
    assert "redis://:***@cache:6379/0" in worker


def test_the_code_that_needs_a_secret_asks_for_it() -> None:
    router, worker, attentive = every_settings()
    assert isinstance(router, Settings) and isinstance(worker, WorkerSettings)
    assert isinstance(attentive, AttentiveSettings)

    assert router.amqp_url.reveal() == BROKER_URLS
    assert tuple(key.reveal() for key in router.signing_keys) == SIGNING_KEYS
    assert router.admin_token.reveal() == ADMIN_TOKEN == router.require_admin_token()
    assert worker.idempotency_url is not None
    assert worker.idempotency_url.reveal() == ENV["WORKER_IDEMPOTENCY_URL"]
    assert attentive.token.reveal() == ATTENTIVE_TOKEN


def test_settings_made_in_code_hold_their_secrets_the_same_way() -> None:
    """Given plain strings (a test, a library caller), the fields wrap them all the same."""
    settings = Settings(amqp_url=f"amqp://u:{BROKER_PASSWORD}@h/", signing_keys=SIGNING_KEYS)
    changed = dataclasses.replace(settings, admin_token=ADMIN_TOKEN)

    assert isinstance(changed.amqp_url, SecretUrl)
    assert all(isinstance(key, Secret) for key in changed.signing_keys)
    assert changed.admin_token.reveal() == ADMIN_TOKEN
    assert BROKER_PASSWORD not in repr(changed) and ADMIN_TOKEN not in repr(changed)
    assert changed == dataclasses.replace(settings, admin_token=Secret(ADMIN_TOKEN))
    assert changed != settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.admin_token = Secret("other")  # type: ignore[misc]


def test_settings_cross_to_a_spawned_process_with_their_secrets() -> None:
    # `serve --workers N` pickles the settings to each ingress process
    settings = Settings.from_env(ENV)

    copy = pickle.loads(pickle.dumps(settings))

    assert copy == settings
    assert copy.amqp_url.reveal() == BROKER_URLS
    assert copy.signing_keys[1].reveal() == SIGNING_KEYS[1]


def test_an_unset_secret_shows_as_unset() -> None:
    settings = Settings()

    assert not settings.admin_token and str(settings.admin_token) == ""
    assert repr(settings.admin_token) == "Secret('')"
    assert repr(Secret("x")) == "Secret('***')"
    assert Settings(amqp_url="amqp://guest@h/").amqp_url.__str__() == "amqp://guest@h/"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://u:p4ss@h:5672/v", "amqp://u:***@h:5672/v"),
        ("redis://:p4ss@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u@h/db?password=p4ss&sslmode=require", "password=***"),
        ("sqlite:///claims.db", "sqlite:///claims.db"),
        ("amqp://u:p4ss@[::1", "<an unparsable URL>"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert shown in redact_url(url)
    assert "p4ss" not in redact_url(url)


# -- the admin token ---------------------------------------------------------------------


def test_an_admin_token_of_32_characters_is_taken_and_of_31_refused_in_one_line() -> None:
    long_enough, short = "t" * MIN_ADMIN_TOKEN_LENGTH, "t" * (MIN_ADMIN_TOKEN_LENGTH - 1)
    assert MIN_ADMIN_TOKEN_LENGTH == 32

    assert Settings.from_env({"ROUTER_ADMIN_TOKEN": long_enough}).admin_token
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"ROUTER_ADMIN_TOKEN": short})

    message = str(refused.value)
    assert message.startswith("ROUTER_ADMIN_TOKEN must be at least 32 characters")
    assert "\n" not in message and short not in message


def test_a_worker_refuses_a_short_admin_token_too() -> None:
    with pytest.raises(WorkerConfigError, match=r"^ROUTER_ADMIN_TOKEN must be at least 32"):
        WorkerSettings.from_env({"ROUTER_ADMIN_TOKEN": "short-token"})


def test_a_short_admin_token_given_in_code_does_not_open_the_admin_api() -> None:
    with pytest.raises(ConfigError, match="ROUTER_ADMIN_TOKEN must be at least 32"):
        Settings(admin_token="short-token").require_admin_token()


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        pytest.param(["serve", "--signing-key", "k"], "attentive-router: ", id="serve"),
        pytest.param(
            ["worker", "consumers.sms_audit:worker"], "attentive-router worker: ", id="worker"
        ),
    ],
)
def test_serve_and_worker_refuse_to_start_with_a_short_token_naming_the_variable(
    argv: list[str],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "dev-admin-token")

    assert main(argv) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"{prefix}ROUTER_ADMIN_TOKEN must be at least 32 characters")
    assert "dev-admin-token" not in err


def test_the_admin_token_can_come_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    env = {"ROUTER_ADMIN_TOKEN_FILE": str(token_file)}

    assert Settings.from_env(env).require_admin_token() == ADMIN_TOKEN
    assert WorkerSettings.from_env(env).admin_token.reveal() == ADMIN_TOKEN


@pytest.mark.parametrize(
    ("contents", "env", "message"),
    [
        pytest.param(
            "short\n",
            {},
            "ROUTER_ADMIN_TOKEN_FILE must be a file holding at least 32 characters",
            id="short",
        ),
        pytest.param(
            None, {}, "ROUTER_ADMIN_TOKEN_FILE: cannot read {file}: No such file", id="missing"
        ),
        pytest.param(
            ADMIN_TOKEN,
            {"ROUTER_ADMIN_TOKEN": ADMIN_TOKEN},
            "ROUTER_ADMIN_TOKEN and ROUTER_ADMIN_TOKEN_FILE are both set",
            id="both",
        ),
    ],
)
def test_a_token_file_that_cannot_work_is_refused_in_one_line(
    contents: str | None, env: dict[str, str], message: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin-token"
    if contents is not None:
        token_file.write_text(contents)

    for settings in (Settings, WorkerSettings):
        with pytest.raises((ConfigError, WorkerConfigError)) as refused:
            settings.from_env({**env, "ROUTER_ADMIN_TOKEN_FILE": str(token_file)})

        assert str(refused.value).startswith(message.format(file=token_file))
        assert "\n" not in str(refused.value) and ADMIN_TOKEN not in str(refused.value)
