"""Secret settings: values whose ``repr`` and ``str`` hide them, so that a settings object can
be printed, logged or quoted in an error whole without showing a password, a key or a token.

A :class:`Secret` shows ``***``; a :class:`SecretUrl` shows its URL (or its comma-separated
URLs) with every password replaced by ``***``. The one call that needs the value itself asks
for it with :meth:`Secret.reveal`. A settings dataclass declares such a field with a
:class:`SecretField`, which is given a plain string (from the environment, a flag, a test)
and holds it wrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Self, TypeAlias, TypeVar

from yarl import URL

#: What a :class:`SecretField` is given, and what it holds.
G = TypeVar("G")
H = TypeVar("H")

#: How a hidden value (a password in a URL, a token) is shown.
HIDDEN = "***"
#: Query parameters of a URL that hold a password (asyncpg and redis-py read one there).
_PASSWORD_PARAMETERS = frozenset({"password", "passwd", "pass"})


class Secret:
    """A secret setting's value (a token, a signing key): ``repr`` and ``str`` show ``***``
    (nothing when it is empty, so an unset one is seen to be unset); :meth:`reveal` gives the
    value itself, to the one call that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def of(cls, value: str | Secret) -> Self:
        """``value`` as this kind of secret (a secret of this kind is taken as it is)."""
        if isinstance(value, cls):
            return value
        return cls(value.reveal() if isinstance(value, Secret) else value)

    def reveal(self) -> str:
        """The value itself: pass it on, never log it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __str__(self) -> str:
        return HIDDEN if self._value else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self) and isinstance(other, Secret) and other._value == self._value
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))


class SecretUrl(Secret):
    """A URL that may hold a password (or several comma-separated URLs, one per broker node):
    shown with every password replaced by ``***``."""

    __slots__ = ()

    def __str__(self) -> str:
        return ",".join(redact_url(url.strip()) for url in self._value.split(","))


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password`` query parameter) replaced
    by ``***``, for logs and messages; ``<an unparsable URL>`` when it cannot be read."""
    try:
        parsed = URL(url)
        hidden = {k: HIDDEN for k in parsed.query if k.lower() in _PASSWORD_PARAMETERS}
        if not parsed.password and not hidden:
            return url
        if parsed.password:
            parsed = parsed.with_password(HIDDEN)
        return str(parsed.update_query(hidden) if hidden else parsed)
    except ValueError:
        return "<an unparsable URL>"


def secret_keys(values: tuple[str | Secret, ...]) -> tuple[Secret, ...]:
    """Each of ``values`` as a :class:`Secret` (signing keys)."""
    return tuple(Secret.of(value) for value in values)


def optional_secret_url(value: str | Secret | None) -> SecretUrl | None:
    """``value`` as a :class:`SecretUrl`, None (unset) as None."""
    return None if value is None else SecretUrl.of(value)


class SecretField(Generic[G, H]):
    """A settings dataclass's field that holds a secret: it is given ``G`` (a plain string is
    fine) and holds ``H`` (what ``wrap`` makes of it). Without a default it is required.

    ``amqp_url: SecretUrlText = SecretField(SecretUrl.of, "amqp://guest:guest@localhost/")``

    (The dataclass must not use ``slots``: the field's value is kept in the instance's dict.)
    """

    def __init__(self, wrap: Callable[[G], H], *default: G) -> None:
        self._wrap = wrap
        self._default = tuple(wrap(value) for value in default)
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: object | None, owner: type | None = None) -> H:
        if instance is None:  # the dataclass asks for the default
            if not self._default:
                raise AttributeError(self._name)
            return self._default[0]
        held: H = vars(instance)[self._name]
        return held

    def __set__(self, instance: object, value: G) -> None:
        vars(instance)[self._name] = self._wrap(value)


#: The types of the secret fields a settings dataclass declares.
SecretText: TypeAlias = SecretField[str | Secret, Secret]
SecretUrlText: TypeAlias = SecretField[str | Secret, SecretUrl]
OptionalSecretUrl: TypeAlias = SecretField[str | Secret | None, SecretUrl | None]
SecretKeys: TypeAlias = SecretField[tuple[str | Secret, ...], tuple[Secret, ...]]


def revealed(value: object) -> object:
    """``value`` with its secrets revealed (a :class:`Secret`, or a tuple of them), to be
    checked by the variable it came from."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, tuple):
        return tuple(revealed(item) for item in value)
    return value


__all__ = [
    "HIDDEN",
    "OptionalSecretUrl",
    "Secret",
    "SecretField",
    "SecretKeys",
    "SecretText",
    "SecretUrl",
    "SecretUrlText",
    "optional_secret_url",
    "redact_url",
    "revealed",
    "secret_keys",
]
