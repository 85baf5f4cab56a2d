"""Attentive's webhook signature: lowercase hex HMAC-SHA256 of the raw body, and the keys it is
checked against.

Several keys can be active at once so a signing key is rotated without downtime: add the
new key, switch Attentive over, remove the old one. Comparison is constant-time, and every
key is tried whatever the signature.

A key may be bound to the companies it authenticates, for teams that run one Attentive app
(and so one key) per brand: ``KEY@COMPANY`` or ``KEY@COMPANY|COMPANY...`` (a company is the
``company.company_id`` of its events). Signing keys are hex or base64, neither of which has
an ``@`` or a ``|``, so the first ``@`` ends the key. A key without ``@`` authenticates every
company. Which companies a key may speak for is asked only once a signature has matched
(:meth:`Verifier.allows`), never while the keys are tried.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from router.secret import Secret

#: Ends a key and begins the companies it is bound to.
BINDING_SEPARATOR = "@"
#: Separates the companies a key is bound to.
COMPANY_SEPARATOR = "|"


def sign(body: bytes, key: str) -> str:
    """The signature Attentive sends for ``body`` under ``key`` (UTF-8)."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def parse_signing_key(entry: str) -> tuple[str, frozenset[str] | None]:
    """The key of ``entry`` (``KEY`` or ``KEY@COMPANY|COMPANY...``) and the companies it is
    bound to (None: every company); ValueError, never quoting the key, when it is malformed."""
    key, separator, bound = entry.partition(BINDING_SEPARATOR)
    key = key.strip()
    if not key:
        raise ValueError(f"an entry has nothing before its {BINDING_SEPARATOR}")
    if not separator:
        return key, None
    if BINDING_SEPARATOR in bound:
        raise ValueError(f"an entry has more than one {BINDING_SEPARATOR}")
    companies = frozenset(c.strip() for c in bound.split(COMPANY_SEPARATOR) if c.strip())
    if not companies:
        raise ValueError(f"an entry names no company after its {BINDING_SEPARATOR}")
    return key, companies


class SigningKey(Secret):
    """One configured signing key: the key itself (hidden; :meth:`reveal` gives it) and the
    companies it authenticates (None: every company). Made from ``KEY`` or
    ``KEY@COMPANY|COMPANY...`` (ValueError when malformed); it shows as ``***`` or
    ``***@COMPANY|COMPANY``."""

    __slots__ = ("companies",)

    def __init__(self, entry: str) -> None:
        key, companies = parse_signing_key(entry)
        super().__init__(key)
        self.companies = companies

    def __str__(self) -> str:
        if self.companies is None:
            return super().__str__()
        companies = COMPANY_SEPARATOR.join(sorted(self.companies))
        return f"{super().__str__()}{BINDING_SEPARATOR}{companies}"

    def __eq__(self, other: object) -> bool:
        return (
            super().__eq__(other)
            and isinstance(other, SigningKey)
            and (other.companies == self.companies)
        )

    def __hash__(self) -> int:
        return hash((super().__hash__(), self.companies))


class Verifier:
    """Checks signatures against every configured key (a plain string is a key bound to no
    company), and says which companies the keys that matched authenticate.

    The keyed HMAC states are prepared once; each check only copies them.
    """

    __slots__ = ("_companies", "_states", "unbound")

    def __init__(self, keys: Iterable[str | SigningKey]) -> None:
        states: list[hmac.HMAC] = []
        companies: list[frozenset[str] | None] = []
        for key in keys:
            bound = key.companies if isinstance(key, SigningKey) else None
            secret = key.reveal() if isinstance(key, SigningKey) else key
            states.append(hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256))
            companies.append(bound)
        if not states:
            raise ValueError("at least one signing key is required")
        self._states = tuple(enumerate(states))
        self._companies = tuple(companies)
        #: The keys bound to no company, as bits of a :meth:`match` (key ``i``: bit ``i``): a
        #: match with one of them (``match & unbound``) authenticates every company.
        self.unbound = sum(1 << i for i, bound in enumerate(companies) if bound is None)

    def verify(self, body: bytes, signature: str | None) -> bool:
        """True when ``signature`` is the hex HMAC of ``body`` under any configured key."""
        return self.match(body, signature) != 0

    def match(self, body: bytes, signature: str | None) -> int:
        """The keys ``signature`` is the hex HMAC of ``body`` under, as bits (key ``i`` of
        those configured: bit ``i``); 0 when none.

        Upper-case hex is accepted (it is the same digest); anything that is not 64 hex
        characters is simply wrong. Every key is tried, so timing does not tell which matched.
        """
        if signature is None or len(signature) != 64:
            return 0
        try:
            given = bytes.fromhex(signature)
        except ValueError:
            return 0
        matched = 0
        for index, state in self._states:
            mac = state.copy()
            mac.update(body)
            matched |= hmac.compare_digest(mac.digest(), given) << index
        return matched

    def allows(self, matched: int, company: str) -> bool:
        """Whether the keys of ``matched`` (what :meth:`match` returned) authenticate
        ``company``: one of them is bound to no company, or names it."""
        for index, companies in enumerate(self._companies):
            if matched >> index & 1 and (companies is None or company in companies):
                return True
        return False


__all__ = [
    "BINDING_SEPARATOR",
    "COMPANY_SEPARATOR",
    "SigningKey",
    "Verifier",
    "parse_signing_key",
    "sign",
]
