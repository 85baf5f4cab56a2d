"""Who may call the admin API: named tokens, each with a role, and what each role may do.

A **viewer** reads: claims, parked entries (masked), facets, jobs. An **operator** also
changes: claims, replays, purges, job cancels, and reveals contact details. Tokens come from
the file ``ROUTER_ADMIN_TOKENS_FILE`` names, one a line::

    # name     role      token (at least 32 characters)
    grafana    viewer    3f1c...
    oncall     operator  9a7e...

and ``ROUTER_ADMIN_TOKEN`` (or ``ROUTER_ADMIN_TOKEN_FILE``), when set, is an operator named
``admin``. A bad line is a :class:`~router.errors.ConfigError` naming its line number, never
the token. A request's token is compared with every known token in constant time (no early
exit), so the answer's timing says nothing about which token, or how much of one, matched.
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from aiohttp import web

from router.admin.responses import json_response
from router.errors import ConfigError
from router.settings import ADMIN_TOKENS_FILE_VARIABLE, MIN_ADMIN_TOKEN_LENGTH, Settings

#: The name ``ROUTER_ADMIN_TOKEN`` goes by.
SINGLE_TOKEN_NAME = "admin"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class Role(StrEnum):
    """What a token may do: read (viewer), or read and change (operator)."""

    VIEWER = "viewer"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: the name and role of the token it carried."""

    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class AdminToken:
    """One named token (``repr`` never shows the token)."""

    name: str
    role: Role
    token: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Every token the admin API takes."""

    tokens: tuple[AdminToken, ...]

    def caller(self, given: str) -> Caller | None:
        """Who ``given`` belongs to (None: nobody); every token is compared, in constant time."""
        offered = given.encode("utf-8", "surrogateescape")
        found: AdminToken | None = None
        for token in self.tokens:
            if hmac.compare_digest(offered, token.token) and found is None:
                found = token
        return None if found is None else Caller(found.name, found.role)


def load_tokens(settings: Settings) -> Tokens:
    """The tokens the settings give: the tokens file's, and the single token as an operator
    named ``admin``; :class:`ConfigError` when there is none, or a line is malformed."""
    tokens: list[AdminToken] = []
    if settings.admin_tokens_file:
        tokens.extend(read_tokens_file(settings.admin_tokens_file))
    if settings.admin_token:
        single = settings.require_admin_token()
        tokens.append(AdminToken(SINGLE_TOKEN_NAME, Role.OPERATOR, single.encode()))
    if not tokens:
        raise ConfigError(f"no admin token: set ROUTER_ADMIN_TOKEN or {ADMIN_TOKENS_FILE_VARIABLE}")
    _check_unique(tokens)
    return Tokens(tuple(tokens))


def read_tokens_file(path: str) -> tuple[AdminToken, ...]:
    """The tokens in the file at ``path``; :class:`ConfigError` naming the file (and the line)."""
    source = f"{ADMIN_TOKENS_FILE_VARIABLE} ({path})"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"{source}: cannot read it: {error.strerror or error}") from None
    tokens = parse_tokens(text, source=source)
    if not tokens:
        raise ConfigError(f"{source}: holds no token")
    return tokens


def parse_tokens(text: str, *, source: str = ADMIN_TOKENS_FILE_VARIABLE) -> tuple[AdminToken, ...]:
    """``name role token`` lines (blank lines and ``#`` comments skipped)."""
    tokens: list[AdminToken] = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 3:
            raise ConfigError(f"{source} line {number}: expected 'name role token'")
        name, role, token = words
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{source} line {number}: a name is letters, digits, '.', '_', '@' or '-' "
                "(up to 64)"
            )
        if role not in tuple(Role):
            raise ConfigError(f"{source} line {number}: the role is viewer or operator")
        if len(token) < MIN_ADMIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{source} line {number}: the token of {name!r} has fewer than "
                f"{MIN_ADMIN_TOKEN_LENGTH} characters (make one with: openssl rand -hex 32)"
            )
        tokens.append(AdminToken(name, Role(role), token.encode()))
    _check_unique(tokens, source=source)
    return tuple(tokens)


def _check_unique(tokens: Iterable[AdminToken], *, source: str = "admin tokens") -> None:
    names: set[str] = set()
    secrets: set[bytes] = set()
    for token in tokens:
        if token.name in names:
            raise ConfigError(f"{source}: the name {token.name!r} is given twice")
        if token.token in secrets:
            raise ConfigError(f"{source}: the token of {token.name!r} is another's too")
        names.add(token.name)
        secrets.add(token.token)


# -- roles in requests -----------------------------------------------------------------------

#: Who made the request (set by the admin app's token check).
CALLER = web.RequestKey("caller", Caller)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def caller(request: web.Request) -> Caller:
    """The caller of a request that passed the token check."""
    return request[CALLER]


def forbidden(request: web.Request, action: str) -> web.Response | None:
    """None when the caller may ``action`` (an operator); else the 403 answer saying why."""
    who = request[CALLER]
    if who.role is Role.OPERATOR:
        return None
    return json_response(
        {
            "error": "forbidden",
            "reason": f"{who.name} is a {who.role.value}: only an operator may {action}",
        },
        status=403,
    )


def operator_only(action: str) -> Callable[[_Handler], _Handler]:
    """A route only an operator may call (``action`` says what it does, for the 403)."""

    def wrap(handler: _Handler) -> _Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            refused = forbidden(request, action)
            return refused if refused is not None else await handler(request)

        return checked

    return wrap


__all__ = [
    "CALLER",
    "SINGLE_TOKEN_NAME",
    "AdminToken",
    "Caller",
    "Role",
    "Tokens",
    "caller",
    "forbidden",
    "load_tokens",
    "operator_only",
    "parse_tokens",
    "read_tokens_file",
]
