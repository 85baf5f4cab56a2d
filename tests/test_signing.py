"""Webhook signatures: what :func:`sign` produces and what :class:`Verifier` accepts."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable

import pytest

from router.contract.signing import Verifier, sign

BODY = b'{"type":"sms.sent","company":{"company_id":"MDc6Q29tcGFueTU"}}'


def _reference_hmac(body: bytes, key: str) -> str:
    """The signature computed straight from the standard library, not through the router."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def test_sign_matches_the_rfc_4231_vector() -> None:
    """Given RFC 4231 test case 2, sign() yields the published HMAC-SHA256 in lowercase hex."""
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"

    assert sign(b"what do ya want for nothing?", "Jefe") == expected


@pytest.mark.parametrize("key", ["secret", "clé-ünïcode", ""])
def test_sign_is_the_hmac_sha256_of_the_raw_body_under_the_utf8_key(key: str) -> None:
    """sign() is exactly hex HMAC-SHA256 of the body, the key encoded as UTF-8."""
    signature = sign(BODY, key)

    assert signature == _reference_hmac(BODY, key)
    assert len(signature) == 64
    assert signature == signature.lower()


@pytest.mark.parametrize("key", ["old-key", "new-key", "spare-key"])
def test_verifier_accepts_a_signature_under_any_configured_key(key: str) -> None:
    """During a rotation several keys are live; a body signed with any of them is authentic."""
    # Given a verifier holding three keys
    verifier = Verifier(["old-key", "new-key", "spare-key"])

    # When Attentive signs with one of them, Then the signature is accepted
    assert verifier.verify(BODY, _reference_hmac(BODY, key))


def test_verifier_rejects_a_signature_under_a_key_it_does_not_hold() -> None:
    """A correctly formed signature made with another key is not authentic."""
    verifier = Verifier(["old-key", "new-key"])

    assert not verifier.verify(BODY, _reference_hmac(BODY, "attacker-key"))


def test_verifier_rejects_a_missing_signature_header() -> None:
    """No header at all (None) is never authentic."""
    assert not Verifier(["k"]).verify(BODY, None)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: "", id="empty"),
        pytest.param(lambda s: s[:-1], id="one-char-short"),
        pytest.param(lambda s: s + "0", id="one-char-long"),
        pytest.param(lambda s: s + s, id="doubled"),
        pytest.param(lambda s: s[:32], id="half"),
    ],
)
def test_verifier_rejects_a_signature_of_the_wrong_length(mangle: Callable[[str], str]) -> None:
    """Anything that is not 64 characters is rejected, even when it starts with the digest."""
    signature = mangle(_reference_hmac(BODY, "k"))
    assert len(signature) != 64

    assert not Verifier(["k"]).verify(BODY, signature)


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("z" * 64, id="letters-beyond-f"),
        pytest.param(_reference_hmac(BODY, "k")[:-1] + "g", id="last-char-not-hex"),
        pytest.param("0x" + _reference_hmac(BODY, "k")[:62], id="0x-prefix"),
        pytest.param("é" * 64, id="non-ascii"),
        pytest.param(" " * 64, id="spaces"),
    ],
)
def test_verifier_rejects_64_characters_that_are_not_the_hex_digest(signature: str) -> None:
    """64 characters that are not hex (or do not decode to the digest) are simply wrong."""
    assert len(signature) == 64

    assert not Verifier(["k"]).verify(BODY, signature)


def test_verifier_accepts_upper_case_hex_of_the_right_digest() -> None:
    """Upper-case hex encodes the same digest, so it is accepted."""
    signature = _reference_hmac(BODY, "k").upper()
    assert signature != signature.lower()  # the digest does contain letters

    assert Verifier(["k"]).verify(BODY, signature)


def test_verifier_rejects_the_signature_of_a_different_body() -> None:
    """A genuine signature replayed onto a tampered body is rejected."""
    # Given the authentic signature of one body
    signature = _reference_hmac(BODY, "k")
    tampered = BODY.replace(b"sms.sent", b"sms.sens")
    assert tampered != BODY

    # Then it verifies that body, and only that body
    verifier = Verifier(["k"])
    assert verifier.verify(BODY, signature)
    assert not verifier.verify(tampered, signature)


def test_verifier_can_be_reused_for_many_bodies() -> None:
    """The prepared HMAC states are copied per check, so earlier checks do not leak into later."""
    verifier = Verifier(["k"])
    bodies = [b"first", b"second", b"third"]

    for body in bodies:
        assert verifier.verify(body, _reference_hmac(body, "k"))
    assert not verifier.verify(b"first", _reference_hmac(b"second", "k"))


@pytest.mark.parametrize("keys", [[], (), iter([])], ids=["list", "tuple", "iterator"])
def test_verifier_without_any_key_is_refused(keys: Iterable[str]) -> None:
    """A verifier with no key would reject everything silently, so building one fails loudly."""
    with pytest.raises(ValueError, match="signing key"):
        Verifier(keys)
