"""Every error the router raises on purpose, under one root and a few kinds.

A kind says what went wrong from the caller's side, and so how both edges answer it: the
admin API with an HTTP status, the command line with an exit code. :data:`KINDS` is the one
place either is decided; every error class subclasses exactly one kind (directly, or next to
its package's own root, as the Attentive errors do).
"""

from __future__ import annotations

from typing import NamedTuple


class RouterError(Exception):
    """Root of the router's own errors."""


# -- the kinds -------------------------------------------------------------------------------


class InvalidInput(RouterError):
    """Raised when input (a request, a flag, a setting, a file) is malformed: nothing was done.

    ``field`` names the input the problem is about, when there is one (``since``,
    ``company_id``): the message then reads ``"<field> <problem>"``, and the command line
    names the field by its flag instead.
    """

    def __init__(self, problem: str, *, field: str | None = None) -> None:
        super().__init__(f"{field} {problem}" if field else problem)
        #: The input's name, as the library spells it (``router_base_url``), or None.
        self.field = field
        #: The message without the field's name.
        self.problem = problem


class NotFound(RouterError):
    """Raised when what was asked about (a queue, a parked event, a webhook) does not exist."""


class Conflict(RouterError):
    """Raised when a request contradicts what another holds (a claim on the same events)."""


class Unavailable(RouterError):
    """Raised when something the operation needs (RabbitMQ, a database, Attentive, the admin
    API) cannot be reached or used now; asking again later may work."""


class UpstreamFailed(RouterError):
    """Raised when another service (Attentive, the admin API) refused a request or answered
    with something unreadable."""


class Codes(NamedTuple):
    """How the two edges report one kind of error."""

    #: The admin API's status code.
    http_status: int
    #: The command line's exit code.
    exit_code: int


#: Each kind's codes: the only table that decides a status or an exit code for an error.
KINDS: dict[type[RouterError], Codes] = {
    InvalidInput: Codes(400, 2),
    NotFound: Codes(404, 1),
    Conflict: Codes(409, 1),
    UpstreamFailed: Codes(502, 1),
    Unavailable: Codes(503, 1),
}
#: An error of no kind is a defect of the router: answered as an internal error.
_NO_KIND = Codes(500, 1)


def codes_for(error: BaseException) -> Codes:
    """The codes of ``error``'s kind (the first kind in its class's method resolution order)."""
    for cls in type(error).__mro__:
        codes = KINDS.get(cls)
        if codes is not None:
            return codes
    return _NO_KIND


# -- the router's errors, each of one kind ----------------------------------------------------


class ConfigError(InvalidInput):
    """Raised when settings from the environment or flags are missing or malformed."""


class InvalidClaim(InvalidInput):
    """Raised when a claim's application name, event pattern or company is malformed."""


class PublishFailed(Unavailable):
    """Raised when the broker did not confirm a message: down, blocked, nacked or too slow."""


class ClaimStoreError(Unavailable):
    """Raised when the claims database cannot be reached or used."""


__all__ = [
    "KINDS",
    "ClaimStoreError",
    "Codes",
    "ConfigError",
    "Conflict",
    "InvalidClaim",
    "InvalidInput",
    "NotFound",
    "PublishFailed",
    "RouterError",
    "Unavailable",
    "UpstreamFailed",
    "codes_for",
]
