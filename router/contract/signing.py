"""Attentive's webhook signature: lowercase hex HMAC-SHA256 of the raw body.

Several keys can be active at once so a signing key is rotated without downtime: add the
new key, switch Attentive over, remove the old one. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def sign(body: bytes, key: str) -> str:
    """The signature Attentive sends for ``body`` under ``key`` (UTF-8)."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


class Verifier:
    """Checks signatures against every configured key.

    The keyed HMAC states are prepared once; each check only copies them.
    """

    __slots__ = ("_states",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._states = tuple(
            hmac.new(key.encode("utf-8"), digestmod=hashlib.sha256) for key in keys
        )
        if not self._states:
            raise ValueError("at least one signing key is required")

    def verify(self, body: bytes, signature: str | None) -> bool:
        """True when ``signature`` is the hex HMAC of ``body`` under any configured key.

        Upper-case hex is accepted (it is the same digest); anything that is not 64 hex
        characters is simply wrong. Every key is tried, so timing does not tell which matched.
        """
        if signature is None or len(signature) != 64:
            return False
        try:
            given = bytes.fromhex(signature)
        except ValueError:
            return False
        matched = False
        for state in self._states:
            mac = state.copy()
            mac.update(body)
            matched |= hmac.compare_digest(mac.digest(), given)
        return matched


__all__ = ["Verifier", "sign"]
