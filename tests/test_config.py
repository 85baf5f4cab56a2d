"""The environment readers every settings class reads through (:mod:`router.config`).

Whatever a reader refuses is one line that names the variable exactly, says what it accepts
and quotes what it got, so the operator knows which variable to fix and how.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from router import config
from router.config import Variable
from router.errors import ConfigError


@pytest.mark.parametrize(
    ("variable", "bad", "accepted"),
    [
        pytest.param(config.integer("X_COUNT"), "many", "an integer", id="integer"),
        pytest.param(config.integer("X_COUNT"), "2.5", "an integer", id="integer-not-whole"),
        pytest.param(
            config.integer("X_PORT", 1, 65535), "0", "an integer between 1 and 65535", id="range"
        ),
        pytest.param(config.integer("X_SIZE", 1), "0", "an integer >= 1", id="minimum"),
        pytest.param(config.integer("X_SIZE", None, 9), "10", "an integer <= 9", id="maximum"),
        pytest.param(config.number("X_RATIO"), "half", "a number", id="number"),
        pytest.param(
            config.seconds("X_TIMEOUT"), "abc", "a positive number of seconds", id="seconds"
        ),
        pytest.param(
            config.seconds("X_TIMEOUT"), "0", "a positive number of seconds", id="seconds-zero"
        ),
        pytest.param(
            config.seconds("X_TIMEOUT"), "inf", "a positive number of seconds", id="seconds-inf"
        ),
        pytest.param(
            config.seconds("X_DELAY", zero=True), "-1", "a number of seconds (>= 0)", id="delay"
        ),
        pytest.param(config.boolean("X_ON"), "maybe", "one of 1, true, yes, on", id="boolean"),
        pytest.param(config.choice("X_MODE", ("a", "b")), "c", "one of a, b", id="choice"),
        pytest.param(config.choice("X_MODE", ("a", "b")), "A", "one of a, b", id="choice-case"),
        pytest.param(
            config.text("X_NAME", accepted="a name without spaces", valid=lambda s: " " not in s),
            "a b",
            "a name without spaces",
            id="text",
        ),
    ],
)
def test_a_refused_value_is_one_line_naming_the_variable_and_what_it_accepts(
    variable: Variable[Any], bad: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        variable.read({variable.name: bad}, None)

    message = str(refused.value)
    assert message.startswith(f"{variable.name} must be {accepted}")
    assert message.endswith(f", not {bad!r}")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("variable", "raw", "value"),
    [
        (config.integer("X", 1, 65535), " 65535\n", 65535),
        (config.number("X"), "-2.5", -2.5),
        (config.seconds("X"), "0.25", 0.25),
        (config.seconds("X", zero=True), "0", 0.0),
        (config.boolean("X"), "Yes", True),
        (config.boolean("X"), "off", False),
        (config.choice("X", ("debug", "info"), any_case=True), "INFO", "INFO"),
        (config.comma_list("X"), " a, b,,c ", ("a", "b", "c")),
        (config.comma_list("X"), ",", ()),
        (config.text("X"), "  spaced out  ", "spaced out"),
    ],
)
def test_an_accepted_value_is_read_as_its_type(
    variable: Variable[Any], raw: str, value: Any
) -> None:
    assert variable.read({"X": raw}, None) == value


@pytest.mark.parametrize("blank", ["", "  ", "\n"])
def test_an_unset_or_blank_variable_gives_the_default(blank: str) -> None:
    port = config.integer("X_PORT", 1, 65535)

    assert port.read({}, 8080) == 8080
    assert port.read({"X_PORT": blank}, 8080) == 8080
    assert port.read({"x_port": "1"}, 8080) == 8080  # names are exact, case included


def test_a_value_from_a_flag_is_checked_by_the_same_variable() -> None:
    port = config.integer("X_PORT", 1, 65535)

    assert port.check(443) == 443
    with pytest.raises(
        ConfigError, match=r"^X_PORT must be an integer between 1 and 65535, not 0$"
    ):
        port.check(0)


def test_a_secret_is_never_quoted() -> None:
    token = config.secret("X_TOKEN", accepted="one word", valid=lambda t: " " not in t)

    with pytest.raises(ConfigError) as refused:
        token.read({"X_TOKEN": "hunter2 oops"}, None)

    assert str(refused.value) == "X_TOKEN must be one word"


def test_a_check_that_gives_its_own_reason_is_named_after_the_variable() -> None:
    def known_host(url: str) -> bool:
        raise ConfigError(f"{url} names no known host")

    url = config.text("X_URL", valid=known_host)

    with pytest.raises(ConfigError, match=r"^X_URL: http://nowhere names no known host$"):
        url.read({"X_URL": "http://nowhere"}, None)


def test_the_first_variable_set_is_the_one_read() -> None:
    own, shared = config.text("X_OWN_URL"), config.text("X_SHARED_URL")

    assert config.first_set({"X_OWN_URL": "a", "X_SHARED_URL": "b"}, own, shared) is own
    assert config.first_set({"X_OWN_URL": " ", "X_SHARED_URL": "b"}, own, shared) is shared
    assert config.first_set({}, own, shared) is shared


def test_read_all_keeps_only_what_the_environment_sets_and_check_all_names_the_field() -> None:
    variables: dict[str, Variable[Any]] = {
        "port": config.integer("X_PORT", 1, 65535),
        "host": config.text("X_HOST"),
    }

    assert config.read_all({"X_PORT": "81", "X_HOST": " "}, variables) == {"port": 81}

    class Given:
        port = 70000
        host = None  # an optional setting left unset passes

    with pytest.raises(ConfigError, match=r"^X_PORT must be"):
        config.check_all(Given(), variables)


def test_load_lets_a_given_flag_win_and_checks_it_in_its_variables_words() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Listener:
        host: str = "127.0.0.1"
        port: int = 8080

    variables: dict[str, Variable[Any]] = {
        "host": config.text("X_HOST"),
        "port": config.integer("X_PORT", 1, 65535),
    }
    env = {"X_HOST": "0.0.0.0", "X_PORT": "9090"}

    assert config.load(Listener, env, variables, {"port": None}) == Listener(
        host="0.0.0.0", port=9090
    )
    assert config.load(Listener, env, variables, {"port": 7070}).port == 7070
    with pytest.raises(
        ConfigError, match=r"^X_PORT must be an integer between 1 and 65535, not 0$"
    ):
        config.load(Listener, env, variables, {"port": 0})
