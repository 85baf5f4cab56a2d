"""The claim model, pure: patterns, overlap, names, binding keys and the grant decision.

The promise under test: an event reaches at most one application. Two claims of different
applications conflict exactly when some event (published yet or not) falls under both, and
a claim's binding key delivers exactly the events the claim covers.
"""

from __future__ import annotations

import re
from itertools import product

import pytest

from router.claims.model import (
    Claim,
    ClaimSpec,
    EventPattern,
    PatternKind,
    companies_overlap,
    validate_app,
    validate_company,
)
from router.claims.store import Conflict, decide
from router.contract.events import EVENT_TYPES
from router.contract.names import routing_key
from router.errors import InvalidClaim

COMPANY = "MDc6Q29tcGFueTU"

# ---------------------------------------------------------------------------------------------
# Helpers: an AMQP topic matcher, and claims in one line
# ---------------------------------------------------------------------------------------------


def topic_match(binding_key: str, key: str) -> bool:
    """Whether a topic exchange delivers ``key`` to ``binding_key``, as RabbitMQ does.

    Words are split on '.'; ``*`` matches exactly one word, ``#`` zero or more words.
    """

    def match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
        if not pattern:
            return not words
        head, rest = pattern[0], pattern[1:]
        if head == "#":
            return any(match(rest, words[skip:]) for skip in range(len(words) + 1))
        return bool(words) and head in ("*", words[0]) and match(rest, words[1:])

    return match(tuple(binding_key.split(".")), tuple(key.split(".")))


def spec(app: str, pattern: str, company: str | None = None) -> ClaimSpec:
    return ClaimSpec(app=app, pattern=EventPattern.parse(pattern), company=company)


def claim(app: str, pattern: str, company: str | None = None, id: int = 1) -> Claim:
    return Claim(app=app, pattern=EventPattern.parse(pattern), company=company, id=id)


def label(pattern: str, company: str | None) -> str:
    return f"{pattern}@{'all' if company is None else company}"


# ---------------------------------------------------------------------------------------------
# EventPattern.parse
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        pytest.param("sms.subscribed", PatternKind.EXACT, "sms.subscribed", id="known-type"),
        pytest.param(
            "sms.delivery_receipt", PatternKind.EXACT, "sms.delivery_receipt", id="future-type"
        ),
        pytest.param("sms.a.b", PatternKind.EXACT, "sms.a.b", id="three-word-type"),
        pytest.param("sms.*", PatternKind.CHANNEL, "sms", id="channel-wildcard"),
        pytest.param(
            "custom_attribute.*", PatternKind.CHANNEL, "custom_attribute", id="underscore-channel"
        ),
        pytest.param("*", PatternKind.EVERYTHING, "", id="everything"),
    ],
)
def test_a_pattern_parses_into_its_kind_and_prints_back_as_written(
    text: str, kind: PatternKind, value: str
) -> None:
    pattern = EventPattern.parse(text)

    assert (pattern.kind, pattern.value) == (kind, value)
    assert str(pattern) == text
    assert EventPattern.parse(str(pattern)) == pattern


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("SMS.*", id="uppercase-channel"),
        pytest.param("sms", id="bare-channel"),
        pytest.param("*.subscribed", id="wildcard-channel-exact-type"),
        pytest.param("sms.sub*", id="partial-wildcard"),
        pytest.param("sms.#", id="amqp-hash-in-channel"),
        pytest.param("#", id="amqp-hash"),
        pytest.param("sms.*.*", id="two-wildcards"),
        pytest.param("sms..sent", id="empty-word"),
        pytest.param(" sms.*", id="leading-space"),
        pytest.param("sms.*\n", id="trailing-newline"),
    ],
)
def test_a_malformed_pattern_is_refused(text: str) -> None:
    with pytest.raises(InvalidClaim, match=re.escape(f"invalid event pattern {text!r}")):
        EventPattern.parse(text)


# ---------------------------------------------------------------------------------------------
# Overlap: when claims of different applications conflict
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "conflict"),
    [
        # Patterns, all companies
        pytest.param(("sms.*", None), ("sms.subscribed", None), True, id="channel-vs-its-type"),
        pytest.param(("sms.*", None), ("sms.*", None), True, id="same-channel"),
        pytest.param(("sms.*", None), ("email.*", None), False, id="channel-vs-other-channel"),
        pytest.param(("sms.*", None), ("email.opened", None), False, id="channel-vs-other-type"),
        pytest.param(("*", None), ("*", None), True, id="everything-vs-everything"),
        pytest.param(("*", None), ("sms.*", None), True, id="everything-vs-channel"),
        pytest.param(("*", None), ("email.opened", None), True, id="everything-vs-exact"),
        pytest.param(
            ("*", None), ("sms.delivery_receipt", None), True, id="everything-vs-future-type"
        ),
        pytest.param(("sms.sent", None), ("sms.sent", None), True, id="same-exact"),
        pytest.param(("sms.sent", None), ("sms.subscribed", None), False, id="different-exact"),
        pytest.param(("sms.sent", None), ("email.sent", None), False, id="same-verb-other-channel"),
        pytest.param(
            ("sms.delivery_receipt", None), ("sms.*", None), True, id="future-type-vs-channel"
        ),
        pytest.param(
            ("sms.delivery_receipt", None),
            ("email.*", None),
            False,
            id="future-type-vs-other-channel",
        ),
        pytest.param(("sms.a.b", None), ("sms.*", None), True, id="deep-type-vs-channel"),
        # Company scopes, same pattern
        pytest.param(("sms.*", None), ("sms.*", COMPANY), True, id="all-companies-vs-one"),
        pytest.param(("sms.*", COMPANY), ("sms.*", COMPANY), True, id="same-company"),
        pytest.param(("sms.*", COMPANY), ("sms.*", "other"), False, id="different-companies"),
        pytest.param(("sms.*", "a.b"), ("sms.*", "a_b"), True, id="dot-and-underscore-route-alike"),
        pytest.param(("sms.*", "a.b"), ("sms.*", "a-b"), False, id="dot-and-dash-differ"),
        # Both must overlap
        pytest.param(("*", COMPANY), ("sms.sent", "other"), False, id="everything-other-company"),
        pytest.param(
            ("sms.*", None), ("email.*", COMPANY), False, id="all-companies-other-channel"
        ),
        pytest.param(("*", "acme.co"), ("sms.sent", "acme_co"), True, id="everything-same-word"),
    ],
)
def test_claims_of_different_applications_conflict_when_their_events_can_coincide(
    a: tuple[str, str | None], b: tuple[str, str | None], conflict: bool
) -> None:
    mine, theirs = spec("app-a", *a), claim("app-b", *b)

    assert mine.conflicts_with(theirs) is conflict
    assert spec("app-b", *b).conflicts_with(spec("app-a", *a)) is conflict  # symmetric


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(("*", None), ("*", None), id="everything-twice"),
        pytest.param(("sms.*", None), ("sms.sent", None), id="channel-and-its-type"),
        pytest.param(("sms.sent", None), ("sms.sent", None), id="same-claim"),
        pytest.param(("*", None), ("sms.sent", COMPANY), id="everything-and-one-company"),
    ],
)
def test_claims_of_the_same_application_never_conflict(
    a: tuple[str, str | None], b: tuple[str, str | None]
) -> None:
    assert spec("app-a", *a).conflicts_with(claim("app-a", *b)) is False


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        pytest.param(None, None, True, id="all-vs-all"),
        pytest.param(None, COMPANY, True, id="all-vs-one"),
        pytest.param(COMPANY, None, True, id="one-vs-all"),
        pytest.param(COMPANY, COMPANY, True, id="same"),
        pytest.param(COMPANY, "other", False, id="different"),
        pytest.param("a.b", "a_b", True, id="dot-vs-underscore"),
        pytest.param("acme.co.uk", "acme_co.uk", True, id="several-dots"),
        pytest.param(COMPANY, COMPANY.lower(), False, id="case-matters"),
    ],
)
def test_company_scopes_overlap_when_they_route_alike(
    a: str | None, b: str | None, overlap: bool
) -> None:
    assert companies_overlap(a, b) is overlap
    assert companies_overlap(b, a) is overlap


# ---------------------------------------------------------------------------------------------
# Claims of the same application: same_as
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param(spec("a", "sms.*"), claim("a", "sms.*", id=7), True, id="spec-vs-its-claim"),
        pytest.param(spec("a", "sms.*", COMPANY), spec("a", "sms.*", COMPANY), True, id="equal"),
        pytest.param(claim("a", "*", id=1), claim("a", "*", id=2), True, id="ids-do-not-count"),
        pytest.param(spec("a", "sms.*"), spec("b", "sms.*"), False, id="other-app"),
        pytest.param(spec("a", "sms.*"), spec("a", "sms.sent"), False, id="channel-vs-its-type"),
        pytest.param(spec("a", "sms.*"), spec("a", "*"), False, id="channel-vs-everything"),
        pytest.param(spec("a", "sms.*"), spec("a", "sms.*", COMPANY), False, id="all-vs-one"),
        pytest.param(spec("a", "sms.*", "x"), spec("a", "sms.*", "y"), False, id="other-company"),
        # same_as is literal: the spellings of a company that route alike are two claims.
        pytest.param(spec("a", "*", "a.b"), spec("a", "*", "a_b"), False, id="company-spelling"),
    ],
)
def test_same_as_means_the_same_app_pattern_and_company(
    a: ClaimSpec, b: ClaimSpec, same: bool
) -> None:
    assert a.same_as(b) is same
    assert b.same_as(a) is same


# ---------------------------------------------------------------------------------------------
# Application names and company ids
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("sms-audit", id="dash"),
        pytest.param("app_1", id="underscore-digit"),
        pytest.param("a", id="one-letter"),
        pytest.param("1app", id="leading-digit"),
        pytest.param("a" * 64, id="64-chars"),
    ],
)
def test_a_well_formed_application_name_is_accepted(name: str) -> None:
    assert validate_app(name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("SMS", id="uppercase"),
        pytest.param("sms audit", id="space"),
        pytest.param("-x", id="leading-dash"),
        pytest.param("_x", id="leading-underscore"),
        pytest.param("é", id="non-ascii"),
        pytest.param("sms.audit", id="dot"),
        pytest.param("app\n", id="trailing-newline"),
        pytest.param("a" * 65, id="65-chars"),
    ],
)
def test_a_malformed_application_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidClaim, match="invalid application name"):
        validate_app(name)


@pytest.mark.parametrize(
    "company",
    [
        pytest.param(None, id="all-companies"),
        pytest.param(COMPANY, id="attentive-id"),
        pytest.param("acme.co", id="dotted"),
        pytest.param("c" * 128, id="128-chars"),
    ],
)
def test_a_well_formed_company_is_accepted(company: str | None) -> None:
    assert validate_company(company) == company


@pytest.mark.parametrize(
    "company",
    [
        pytest.param("", id="empty"),
        pytest.param("a*b", id="star"),
        pytest.param("a#", id="hash"),
        pytest.param("a b", id="space"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\x00", id="nul"),
        pytest.param("c" * 129, id="129-chars"),
    ],
)
def test_a_malformed_company_is_refused(company: str) -> None:
    with pytest.raises(InvalidClaim, match="invalid company id"):
        validate_company(company)


@pytest.mark.parametrize(
    ("app", "pattern", "company", "what"),
    [
        pytest.param("SMS", "sms.*", None, "application name", id="bad-app"),
        pytest.param("sms-audit", "sms", None, "event pattern", id="bad-pattern"),
        pytest.param("sms-audit", "sms.*", "a b", "company id", id="bad-company"),
    ],
)
def test_claim_spec_parse_validates_every_part(
    app: str, pattern: str, company: str | None, what: str
) -> None:
    with pytest.raises(InvalidClaim, match=f"invalid {what}"):
        ClaimSpec.parse(app, pattern, company)


def test_claim_spec_parse_builds_the_spec() -> None:
    assert ClaimSpec.parse("sms-audit", "sms.*", COMPANY) == spec("sms-audit", "sms.*", COMPANY)


# ---------------------------------------------------------------------------------------------
# Binding keys
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "company", "binding_key"),
    [
        pytest.param("sms.subscribed", None, "sms.subscribed.*", id="exact-all"),
        pytest.param("sms.subscribed", COMPANY, f"sms.subscribed.{COMPANY}", id="exact-one"),
        pytest.param("sms.subscribed", "acme.co", "sms.subscribed.acme_co", id="exact-dotted"),
        pytest.param("sms.*", None, "sms.#", id="channel-all"),
        pytest.param("sms.*", COMPANY, f"sms.#.{COMPANY}", id="channel-one"),
        pytest.param("sms.*", "acme.co", "sms.#.acme_co", id="channel-dotted"),
        pytest.param("*", None, "#", id="everything-all"),
        pytest.param("*", COMPANY, f"#.{COMPANY}", id="everything-one"),
        pytest.param("*", "acme.co", "#.acme_co", id="everything-dotted"),
    ],
)
def test_each_claim_becomes_one_binding_key(
    pattern: str, company: str | None, binding_key: str
) -> None:
    assert spec("app", pattern, company).binding_key == binding_key


@pytest.mark.parametrize(
    ("binding_key", "key", "delivered"),
    [
        # The RabbitMQ tutorial's examples (tutorial five)
        pytest.param("*.orange.*", "quick.orange.rabbit", True, id="star-each-side"),
        pytest.param("*.*.rabbit", "lazy.pink.rabbit", True, id="two-stars"),
        pytest.param("lazy.#", "lazy.orange.male.rabbit", True, id="hash-many-words"),
        pytest.param("*.orange.*", "quick.brown.fox", False, id="literal-mismatch"),
        pytest.param("*.orange.*", "orange", False, id="star-needs-a-word"),
        pytest.param("*.orange.*", "quick.orange.male.rabbit", False, id="star-is-one-word"),
        pytest.param("*.*.rabbit", "quick.orange.male.rabbit", False, id="too-many-words"),
        # Edge cases of '#'
        pytest.param("#", "a.b.c", True, id="hash-alone"),
        pytest.param("a.#", "a", True, id="hash-zero-words-at-end"),
        pytest.param("#.a", "a", True, id="hash-zero-words-at-start"),
        pytest.param("a.#.b", "a.b", True, id="hash-zero-words-inside"),
        pytest.param("a.#.b", "a.x.y.b", True, id="hash-two-words-inside"),
        pytest.param("a.#.b", "a.x.b.c", False, id="hash-then-last-word-mismatch"),
        pytest.param("a.*", "a", False, id="star-not-zero-words"),
        pytest.param("*", "a.b", False, id="star-not-two-words"),
        pytest.param("a.b", "a.b", True, id="literal"),
        pytest.param("a.b", "a.bc", False, id="words-not-prefixes"),
    ],
)
def test_the_topic_matcher_of_these_tests_matches_like_rabbitmq(
    binding_key: str, key: str, delivered: bool
) -> None:
    assert topic_match(binding_key, key) is delivered


GRID_TYPES: tuple[str, ...] = (
    *EVENT_TYPES,
    "sms.delivery_receipt",
    "email.bounced",
    "push.sent",
    "sms.a.b",
)
GRID_COMPANIES: tuple[str, ...] = (COMPANY, "acme.co", "other")
GRID_EVENTS: tuple[tuple[str, str], ...] = tuple(product(GRID_TYPES, GRID_COMPANIES))

CLAIM_PATTERNS: tuple[str, ...] = (
    "*",
    "sms.*",
    "email.*",
    "custom_attribute.*",
    "push.*",
    "sms.subscribed",
    "sms.sent",
    "email.opened",
    "custom_attribute.set",
    "sms.delivery_receipt",
    "sms.a.b",
)
CLAIM_COMPANIES: tuple[str | None, ...] = (None, COMPANY, "acme.co", "acme_co", "other")
CLAIM_GRID: list[tuple[str, str | None]] = list(product(CLAIM_PATTERNS, CLAIM_COMPANIES))
CLAIM_GRID_IDS: list[str] = [label(pattern, company) for pattern, company in CLAIM_GRID]


def delivered(claim_spec: ClaimSpec) -> set[tuple[str, str]]:
    """The grid events the broker delivers to this claim's binding key."""
    return {
        (event_type, company)
        for event_type, company in GRID_EVENTS
        if topic_match(claim_spec.binding_key, routing_key(event_type, company))
    }


def covered(claim_spec: ClaimSpec) -> set[tuple[str, str]]:
    """The grid events the claim says are its own."""
    return {
        (event_type, company)
        for event_type, company in GRID_EVENTS
        if claim_spec.pattern.matches(event_type) and companies_overlap(claim_spec.company, company)
    }


@pytest.mark.parametrize(("pattern", "company"), CLAIM_GRID, ids=CLAIM_GRID_IDS)
def test_the_binding_key_delivers_exactly_the_events_the_claim_covers(
    pattern: str, company: str | None
) -> None:
    claim_spec = spec("app", pattern, company)

    assert delivered(claim_spec) == covered(claim_spec)
    assert covered(claim_spec), "the grid has no event for this claim: the check is vacuous"


@pytest.mark.parametrize(("pattern", "company"), CLAIM_GRID, ids=CLAIM_GRID_IDS)
def test_an_event_reaches_at_most_one_application(pattern: str, company: str | None) -> None:
    """Given this claim of app-a and any claim of app-b it does not conflict with, no event
    of the grid is delivered to both; and when they do conflict, some event is (so overlap is
    not over-cautious on the grid)."""
    mine = spec("app-a", pattern, company)

    shared: dict[str, set[tuple[str, str]]] = {}
    for other_pattern, other_company in CLAIM_GRID:
        theirs = claim("app-b", other_pattern, other_company)
        both = delivered(mine) & delivered(theirs)
        if mine.conflicts_with(theirs) != bool(both):
            shared[label(other_pattern, other_company)] = both

    assert shared == {}, "conflicts_with disagrees with the events both bindings receive"


# ---------------------------------------------------------------------------------------------
# decide(): the grant decision
# ---------------------------------------------------------------------------------------------


def test_a_claim_nobody_holds_is_to_be_inserted() -> None:
    # Given app-b holds the SMS events
    existing = [claim("app-b", "sms.*", id=1)]

    # When app-a asks for the email events
    wanted = [spec("app-a", "email.*")]
    decision = decide(existing, wanted)

    # Then it gets them
    assert decision.conflicts == ()
    assert decision.to_insert == (spec("app-a", "email.*"),)
    assert decision.already_held == ()


def test_a_claim_already_held_is_not_inserted_again() -> None:
    # Given app-a already holds sms.* for one company
    held = claim("app-a", "sms.*", COMPANY, id=7)

    # When it asks for it again, along with something new
    decision = decide([held], [spec("app-a", "sms.*", COMPANY), spec("app-a", "push.*")])

    # Then the held one is reported with its id, and only the new one is to be inserted
    assert decision.conflicts == ()
    assert decision.already_held == (held,)
    assert decision.already_held[0].id == 7
    assert decision.to_insert == (spec("app-a", "push.*"),)


def test_a_claim_asked_twice_in_one_request_is_inserted_once() -> None:
    held = claim("app-a", "email.*", id=3)
    wanted = [
        spec("app-a", "sms.*"),
        spec("app-a", "email.*"),
        spec("app-a", "sms.*"),
        spec("app-a", "email.*"),
    ]

    decision = decide([held], wanted)

    assert decision.conflicts == ()
    assert decision.to_insert == (spec("app-a", "sms.*"),)
    assert decision.already_held == (held,)


def test_one_conflicting_claim_among_several_is_reported() -> None:
    # Given app-b holds sms.sent, for all companies
    held = claim("app-b", "sms.sent", id=5)

    # When app-a asks for email.*, sms.* and push.* for one company
    wanted = [
        spec("app-a", "email.*", COMPANY),
        spec("app-a", "sms.*", COMPANY),
        spec("app-a", "push.*", COMPANY),
    ]
    decision = decide([held], wanted)

    # Then sms.* is reported against the claim it overlaps: the caller must insert nothing
    assert decision.conflicts == (Conflict(wanted=spec("app-a", "sms.*", COMPANY), held=held),)


def test_a_claim_overlapping_several_held_claims_lists_each_of_them() -> None:
    sms = claim("app-b", "sms.sent", id=1)
    email = claim("app-c", "email.*", COMPANY, id=2)
    unrelated = claim("app-d", "push.*", "other", id=3)

    decision = decide([sms, email, unrelated], [spec("app-a", "*", COMPANY)])

    assert decision.conflicts == (
        Conflict(wanted=spec("app-a", "*", COMPANY), held=sms),
        Conflict(wanted=spec("app-a", "*", COMPANY), held=email),
    )


def test_an_application_widening_its_own_claim_does_not_conflict_with_itself() -> None:
    held = claim("app-a", "sms.sent", COMPANY, id=1)

    decision = decide([held], [spec("app-a", "*")])

    assert decision.conflicts == ()
    assert decision.to_insert == (spec("app-a", "*"),)
    assert decision.already_held == ()


def test_nothing_asked_decides_nothing() -> None:
    decision = decide([claim("app-b", "*", id=1)], [])

    assert (decision.conflicts, decision.to_insert, decision.already_held) == ((), (), ())


def test_decide_refuses_a_request_whose_own_claims_overlap_across_applications() -> None:
    wanted = [ClaimSpec.parse("a", "sms.*"), ClaimSpec.parse("b", "sms.sent")]
    with pytest.raises(InvalidClaim, match="overlapping"):
        decide([], wanted)
