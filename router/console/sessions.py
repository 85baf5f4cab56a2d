"""Console sessions: an admin token exchanged once, at the login page, for a signed cookie.

A session cookie holds the token's *name*, an expiry and a random nonce, signed with HMAC-SHA256
under the token itself: nothing secret is in it, a forged or altered one does not verify, and
removing or rotating a token ends every session made with it. The CSRF token of a session is
derived from it the same way, so any process holding the tokens can check both without shared
state. Logging out revokes the nonce in this process (the admin listener runs in one process
of a ``serve``) until the session would have expired anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from router.admin.tokens import AdminToken, Caller, Tokens

#: How long a session lasts after its login, in seconds (eight hours: one on-call shift).
SESSION_SECONDS = 8 * 3600
#: The session cookie's name.
COOKIE_NAME = "attentive_console"
_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session: who, until when, and the CSRF token its forms carry."""

    caller: Caller
    expires: int
    nonce: str
    csrf: str = ""


class Sessions:
    """Issues and checks session cookies for the admin tokens ``tokens``."""

    def __init__(self, tokens: Tokens, *, lifetime: int = SESSION_SECONDS) -> None:
        self._tokens = {token.name: token for token in tokens.tokens}
        self._lifetime = lifetime
        self._revoked: dict[str, int] = {}

    def issue(self, caller: Caller, *, now: float | None = None) -> tuple[str, Session]:
        """A new session for ``caller`` (who logged in with a known token): the cookie's value
        and the session."""
        token = self._tokens[caller.name]
        expires = int(now if now is not None else time.time()) + self._lifetime
        nonce = secrets.token_urlsafe(18)
        payload = _payload(caller.name, expires, nonce)
        value = f"{payload}.{_mac(token, 'session', payload)}"
        return value, Session(caller, expires, nonce, _mac(token, "csrf", nonce))

    def check(self, value: str, *, now: float | None = None) -> Session | None:
        """The session a cookie's value holds; None when it is malformed, forged, expired,
        revoked, or its token is no longer known."""
        version, _, rest = value.partition(".")
        payload_rest, _, mac = rest.rpartition(".")
        parts = payload_rest.split(".")
        if version != _VERSION or len(parts) != 3:
            return None
        encoded_name, raw_expires, nonce = parts
        name = _decode(encoded_name)
        token = self._tokens.get(name or "")
        if token is None or not raw_expires.isdigit():
            return None
        payload = f"{_VERSION}.{payload_rest}"
        if not hmac.compare_digest(mac, _mac(token, "session", payload)):
            return None
        expires = int(raw_expires)
        moment = now if now is not None else time.time()
        if expires <= moment or nonce in self._revoked:
            return None
        return Session(Caller(token.name, token.role), expires, nonce, _mac(token, "csrf", nonce))

    def csrf_ok(self, session: Session, given: str) -> bool:
        """Whether ``given`` is the session's CSRF token (compared in constant time)."""
        return bool(given) and hmac.compare_digest(given, session.csrf)

    def revoke(self, session: Session, *, now: float | None = None) -> None:
        """End ``session`` in this process (logout), and forget revocations that expired."""
        moment = now if now is not None else time.time()
        self._revoked = {n: e for n, e in self._revoked.items() if e > moment}
        self._revoked[session.nonce] = session.expires


class LoginThrottle:
    """Failed logins per client address: after :attr:`free` failures, each attempt waits
    longer (doubling up to :attr:`longest` seconds) before it is answered; a success forgets
    the address. At most :attr:`capacity` addresses are remembered (the oldest forgotten)."""

    free = 3
    longest = 10.0
    capacity = 10_000
    #: Seconds after the last failure when an address is forgotten.
    memory = 900.0

    def __init__(self) -> None:
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def delay(self, address: str, *, now: float | None = None) -> float:
        """Seconds to wait before answering a login from ``address``."""
        moment = now if now is not None else time.monotonic()
        count, last = self._failures.get(address, (0, 0.0))
        if count == 0 or moment - last > self.memory:
            return 0.0
        over = count - self.free
        return 0.0 if over < 0 else min(self.longest, 2.0**over)

    def failed(self, address: str, *, now: float | None = None) -> None:
        moment = now if now is not None else time.monotonic()
        count, last = self._failures.pop(address, (0, 0.0))
        if moment - last > self.memory:
            count = 0
        self._failures[address] = (count + 1, moment)
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def _payload(name: str, expires: int, nonce: str) -> str:
    encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    return f"{_VERSION}.{encoded}.{expires}.{nonce}"


def _decode(encoded: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _mac(token: AdminToken, purpose: str, message: str) -> str:
    digest = hmac.new(token.token, f"console-{purpose}|{message}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


__all__ = ["COOKIE_NAME", "SESSION_SECONDS", "LoginThrottle", "Session", "Sessions"]
