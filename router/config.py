"""The one way settings are read from the environment: typed readers that name the variable.

Every settings class (the router's :class:`~router.settings.Settings`, the worker's
:class:`~consumers.runtime.settings.WorkerSettings`, :class:`~router.attentive.settings.
AttentiveSettings`) declares each of its variables once, as a :class:`Variable` made by one of
the readers below (:func:`text`, :func:`integer`, :func:`number`, :func:`seconds`,
:func:`boolean`, :func:`choice`, :func:`comma_list`, :func:`secret`, :func:`file_text`);
:func:`load` builds the settings from them and the flags. A variable reads its value from the
environment mapping it is given, and checks a value however it came (the environment or a
flag), so one declaration serves both. What it refuses is a :class:`~router.errors.ConfigError`
of one line that names the variable exactly, says what it accepts and quotes what it got:
``ROUTER_PORT must be an integer between 1 and 65535, not '0'``.

The same rules for every variable: surrounding blanks are trimmed, and a blank value counts as
unset (the default applies). Only the edge (the CLI, a worker's start) reads the process's
environment; it passes the mapping to ``from_env`` and the settings down.

A secret setting (a password in a URL, a signing key, a token) is held as a
:class:`~router.secret.Secret`: read with :func:`secret` (or :func:`file_text`), so that no
refusal quotes it, and declared with a :class:`~router.secret.SecretField`; :func:`check_all`
checks its revealed value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from router.errors import ConfigError
from router.secret import revealed

T = TypeVar("T")
D = TypeVar("D")
S = TypeVar("S")

#: What :func:`boolean` reads as true and as false (case does not matter).
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _anything(value: object) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Variable(Generic[T]):
    """One environment variable: its name, how its text becomes a value, which values it takes.

    ``valid`` may return False (the message then says what ``accepted`` says) or raise a
    :class:`ConfigError` with its own reason, which is named after the variable too.
    """

    name: str
    #: Finishes "<name> must be ...", e.g. "an integer between 1 and 65535".
    accepted: str
    convert: Callable[[str], T]
    valid: Callable[[T], bool] = _anything
    #: Never quote the value in an error (a token, a password).
    secret: bool = False

    def read(self, env: Mapping[str, str], default: D) -> T | D:
        """The variable's checked value in ``env``, or ``default`` when it is unset or blank."""
        raw = self.raw(env)
        if raw is None:
            return default
        try:
            value = self.convert(raw)
        except ConfigError as error:
            raise self._named(error) from None
        except ValueError:
            raise self._refused(raw) from None
        return self.check(value, shown=raw)

    def raw(self, env: Mapping[str, str]) -> str | None:
        """The variable's text in ``env``, trimmed; None when it is unset or blank."""
        raw = env.get(self.name, "").strip()
        return raw or None

    def check(self, value: T, *, shown: object = None) -> T:
        """``value`` if the variable takes it; else :class:`ConfigError` naming the variable
        (quoting ``shown``, the text it came from, when given)."""
        try:
            ok = self.valid(value)
        except ConfigError as error:
            raise self._named(error) from None
        if not ok:
            raise self._refused(value if shown is None else shown)
        return value

    def _named(self, error: ConfigError) -> ConfigError:
        """``error``, its message prefixed with the variable's name unless it names it."""
        return error if self.name in str(error) else ConfigError(f"{self.name}: {error}")

    def _refused(self, got: object) -> ConfigError:
        if self.secret:
            return ConfigError(f"{self.name} must be {self.accepted}")
        return ConfigError(f"{self.name} must be {self.accepted}, not {got!r}")


def text(
    name: str, *, accepted: str = "text", valid: Callable[[str], bool] = _anything
) -> Variable[str]:
    """A string, as given (trimmed); ``valid`` says which ones are taken, ``accepted`` how."""
    return Variable(name, accepted, str, valid)


def secret(
    name: str, *, accepted: str = "text", valid: Callable[[str], bool] = _anything
) -> Variable[str]:
    """A string no error ever quotes (a token, a key, a URL with a password)."""
    return Variable(name, accepted, str, valid, secret=True)


def file_text(
    name: str, *, accepted: str = "text", valid: Callable[[str], bool] = _anything
) -> Variable[str]:
    """The contents of the file the variable names (trimmed), never quoted in an error: for
    a secret mounted as a file. An unreadable file is refused in one line naming it."""
    return Variable(name, f"a file holding {accepted}", _file_contents, valid, secret=True)


def _file_contents(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None


def integer(name: str, minimum: int | None = None, maximum: int | None = None) -> Variable[int]:
    """A whole number, within ``minimum`` and ``maximum`` (inclusive) where given."""

    def within(value: int) -> bool:
        return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)

    return Variable(name, _integer_words(minimum, maximum), int, within)


def number(name: str) -> Variable[float]:
    """Any number (what the code does with it is its own business)."""
    return Variable(name, "a number", float)


def seconds(name: str, *, zero: bool = False) -> Variable[float]:
    """A finite number of seconds: positive, or ``zero`` too when a wait may be skipped."""

    def usable(value: float) -> bool:
        return math.isfinite(value) and (value >= 0 if zero else value > 0)

    accepted = "a number of seconds (>= 0)" if zero else "a positive number of seconds"
    return Variable(name, accepted, float, usable)


def boolean(name: str) -> Variable[bool]:
    """Yes or no: one of :data:`TRUE_WORDS` or :data:`FALSE_WORDS`, in any case."""

    def convert(raw: str) -> bool:
        word = raw.lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(raw)
        return word in TRUE_WORDS

    accepted = f"one of {', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}"
    return Variable(name, accepted, convert)


def choice(name: str, options: Collection[str], *, any_case: bool = False) -> Variable[str]:
    """One of ``options`` (in any case if ``any_case``; the value keeps the case it had)."""
    allowed = {o.lower() for o in options} if any_case else set(options)

    def listed(value: str) -> bool:
        return (value.lower() if any_case else value) in allowed

    return Variable(name, f"one of {', '.join(options)}", str, listed)


def comma_list(
    name: str, *, accepted: str = "a comma-separated list", secret: bool = False
) -> Variable[tuple[str, ...]]:
    """Comma-separated items, each trimmed, blank ones dropped (so it may be empty); never
    quoted in an error if ``secret``."""
    return Variable(name, accepted, split_commas, secret=secret)


def split_commas(raw: str) -> tuple[str, ...]:
    """The items of a comma-separated list, each trimmed, blank ones dropped."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def first_set(env: Mapping[str, str], *variables: Variable[T]) -> Variable[T]:
    """The first of ``variables`` set in ``env`` (the last when none is): for a setting read
    from its own variable, else from a shared one."""
    return next((v for v in variables if v.raw(env) is not None), variables[-1])


def read_all(env: Mapping[str, str], variables: Mapping[str, Variable[Any]]) -> dict[str, Any]:
    """``{field: value}`` for each of ``variables`` (field → variable) that ``env`` sets."""
    values = {field: variable.read(env, None) for field, variable in variables.items()}
    return {field: value for field, value in values.items() if value is not None}


def check_all(settings: object, variables: Mapping[str, Variable[Any]]) -> None:
    """Check each field of ``settings`` against its variable; None (an optional setting left
    unset) passes."""
    for field, variable in variables.items():
        value = revealed(getattr(settings, field))
        if value is not None:
            variable.check(value)


def load(
    build: Callable[..., S],
    env: Mapping[str, str],
    variables: Mapping[str, Variable[Any]],
    overrides: Mapping[str, Any],
) -> S:
    """Settings built from what ``env`` sets of ``variables`` (field → variable) and the
    ``overrides`` (flags) that are not None, which win; every value is then checked by its
    variable, so a flag is refused in the words its variable would be."""
    values = read_all(env, variables)
    values.update({field: value for field, value in overrides.items() if value is not None})
    settings = build(**values)
    check_all(settings, variables)
    return settings


def _integer_words(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer between {minimum} and {maximum}"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


__all__ = [
    "FALSE_WORDS",
    "TRUE_WORDS",
    "Variable",
    "boolean",
    "check_all",
    "choice",
    "comma_list",
    "file_text",
    "first_set",
    "integer",
    "load",
    "number",
    "read_all",
    "seconds",
    "secret",
    "split_commas",
    "text",
]
