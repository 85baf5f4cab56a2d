"""Webhook signatures: what :func:`sign` produces and what :class:`Verifier` accepts."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Callable, Iterable

import pytest

from router.contract.signing import SigningKey, Verifier, parse_signing_key, sign

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


# -- keys bound to companies -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "key", "companies"),
    [
        ("k3y", "k3y", None),
        ("k3y@brand-a", "k3y", frozenset({"brand-a"})),
        (" k3y @ brand-a | brand-b ", "k3y", frozenset({"brand-a", "brand-b"})),
        ("k3y@MDc6Q29tcGFueTU||", "k3y", frozenset({"MDc6Q29tcGFueTU"})),
        ("q2V5+Zm9v/YmFy==@c", "q2V5+Zm9v/YmFy==", frozenset({"c"})),
    ],
    ids=["unbound", "one-company", "two-companies-spaced", "blanks-dropped", "base64-key"],
)
def test_a_key_entry_is_the_key_then_the_companies_it_is_bound_to(
    entry: str, key: str, companies: frozenset[str] | None
) -> None:
    assert parse_signing_key(entry) == (key, companies)
    signing_key = SigningKey(entry)
    assert (signing_key.reveal(), signing_key.companies) == (key, companies)


@pytest.mark.parametrize(
    "entry", ["k3y@", "k3y@ | ", "@brand-a", " @brand-a", "k3y@brand-a@brand-b"]
)
def test_a_malformed_key_entry_is_refused_without_quoting_the_key(entry: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_signing_key(entry)
    assert "k3y" not in str(refused.value)


def test_a_signing_key_shows_its_companies_never_its_key() -> None:
    bound, unbound = SigningKey("s3cret@brand-b|brand-a"), SigningKey("s3cret")
    assert (str(bound), repr(bound)) == ("***@brand-a|brand-b", "SigningKey('***@brand-a|brand-b')")
    assert (str(unbound), repr(unbound)) == ("***", "SigningKey('***')")
    # And two entries are equal only with the same key and the same companies
    assert bound == SigningKey("s3cret@brand-a|brand-b") != unbound
    assert len({bound, unbound, SigningKey("s3cret@brand-a")}) == 3
    # And it crosses to serve --workers' processes whole
    assert pickle.loads(pickle.dumps(bound)) == bound


def test_match_says_which_keys_a_signature_verifies_under_trying_every_key() -> None:
    # Given four keys, two bound and two not (one of them the same key as a bound one)
    verifier = Verifier(
        [SigningKey("old@brand-a"), SigningKey("new@brand-a|brand-b"), "shared", "new"]
    )

    # Then a signature matches the keys it was made with (bit i: key i), wherever they are
    assert verifier.match(BODY, _reference_hmac(BODY, "old")) == 0b0001
    assert verifier.match(BODY, _reference_hmac(BODY, "new")) == 0b1010
    assert verifier.match(BODY, _reference_hmac(BODY, "shared")) == 0b0100
    assert verifier.match(BODY, _reference_hmac(BODY, "nobody's")) == 0
    assert verifier.match(BODY, None) == 0
    # And the unbound keys are those of the unbound mask
    assert verifier.unbound == 0b1100


def test_the_matched_keys_allow_their_companies_or_every_company_if_one_is_unbound() -> None:
    verifier = Verifier(
        [SigningKey("a@brand-a"), SigningKey("ab@brand-a|brand-b"), SigningKey("free")]
    )
    a, ab, free = 0b001, 0b010, 0b100
    assert verifier.allows(a, "brand-a") and not verifier.allows(a, "brand-b")
    assert verifier.allows(ab, "brand-b") and not verifier.allows(ab, "brand-c")
    assert verifier.allows(a | ab, "brand-b")  # (the same key under two entries: their union)
    assert verifier.allows(free, "anyone") and verifier.allows(a | free, "anyone")
    # (a company is a whole name, exactly)
    assert not verifier.allows(a, "brand") and not verifier.allows(a, "BRAND-A")


def test_a_verifier_of_unbound_keys_alone_never_needs_to_ask() -> None:
    """With every key unbound, any match includes one: the receiver asks nothing more."""
    verifier = Verifier(["k1", "k2"])
    matched = verifier.match(BODY, _reference_hmac(BODY, "k2"))
    assert matched & verifier.unbound
