"""Audit the one-application rule where it starts: Attentive's webhooks. Pure: no I/O.

Given Attentive's webhooks and (optionally) the router's claims, :func:`audit` finds:

- **conflicts**: for a company, an event type that more than one *enabled* webhook receives
  (the rule broken at the source: each of those endpoints handles the event). A webhook
  without ``companyId`` (a static, universal one) receives the events of every company, so it
  counts for each company, and two of them conflict for all companies;
- **unclaimed types** (warning): a type Attentive sends to the router that no claim covers,
  so its events pile up in ``attentive.unrouted``;
- **idle claims** (warning): a claim matching no type Attentive sends to the router for its
  company scope;
- **misdirected webhooks** (warning): a webhook posting to the router's subscription URL of
  another company, whose events the router refuses (403).

Disabled webhooks send nothing and are ignored. When ``router_base_url`` is given, only the
webhooks posting under ``<router_base_url>/webhooks/attentive`` send to the router (the others
still count for conflicts); otherwise every webhook is assumed to post to the router.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from router.attentive import Webhook
from router.claims.model import EventPattern, companies_overlap
from router.contract.events import EVENT_TYPES
from router.contract.names import WEBHOOK_PATH


@dataclass(frozen=True, slots=True)
class AuditClaim:
    """A claim as the admin API lists it."""

    app: str
    pattern: EventPattern
    #: One company, or None for all companies.
    company: str | None = None
    id: int | None = None

    @classmethod
    def from_admin(cls, data: Mapping[str, Any]) -> AuditClaim:
        """From ``GET /admin/claims``: ``{"id", "app", "event", "company", ...}``."""
        raw_id = data.get("id")
        return cls(
            app=str(data["app"]),
            pattern=EventPattern.parse(str(data["event"])),
            company=data.get("company") or None,
            id=raw_id if isinstance(raw_id, int) else None,
        )

    def describe(self) -> str:
        number = f"claim {self.id} " if self.id is not None else "claim "
        return f"{number}of {self.app} ({self.pattern}, {_scope(self.company)})"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "app": self.app, "event": str(self.pattern), "company": self.company}


@dataclass(frozen=True, slots=True)
class SourceConflict:
    """An event type several enabled webhooks receive for one company (None: every company)."""

    company: str | None
    event_type: str
    webhook_ids: tuple[str, ...]

    def describe(self) -> str:
        return _conflict_line(self.company, (self.event_type,), self.webhook_ids)

    def to_json(self) -> dict[str, Any]:
        return {
            "company": self.company,
            "event": self.event_type,
            "webhooks": list(self.webhook_ids),
        }


@dataclass(frozen=True, slots=True)
class ConflictGroup:
    """The conflicts of one company between the same webhooks, for reading."""

    company: str | None
    webhook_ids: tuple[str, ...]
    event_types: tuple[str, ...]

    def describe(self) -> str:
        return _conflict_line(self.company, self.event_types, self.webhook_ids)


@dataclass(frozen=True, slots=True)
class UnclaimedType:
    """An event type Attentive sends to the router that no application here claims."""

    #: The company the webhooks send it for; None: every company (universal webhooks).
    company: str | None
    event_type: str
    webhook_ids: tuple[str, ...]
    #: For a type sent for every company: the companies that do have a claim covering it.
    claimed_for: tuple[str, ...] = ()

    def describe(self) -> str:
        partly = (
            f" (claimed only for company {', '.join(self.claimed_for)})" if self.claimed_for else ""
        )
        return (
            f"{_scope(self.company)}: Attentive sends {self.event_type} "
            f"(webhook {', '.join(self.webhook_ids)}) but no application claims it{partly}: "
            "those events go to attentive.unrouted"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "company": self.company,
            "event": self.event_type,
            "webhooks": list(self.webhook_ids),
            "claimed_for": list(self.claimed_for),
        }


@dataclass(frozen=True, slots=True)
class IdleClaim:
    """A claim for which Attentive sends the router no matching event type."""

    claim: AuditClaim

    def describe(self) -> str:
        return f"{self.claim.describe()}: Attentive sends the router nothing it matches"

    def to_json(self) -> dict[str, Any]:
        return self.claim.to_json()


@dataclass(frozen=True, slots=True)
class MisdirectedWebhook:
    """A webhook posting to the router's subscription URL of a company not its own."""

    webhook_id: str
    #: The webhook's company; None for a universal webhook (every company's events).
    company_id: str | None
    url_company: str

    def describe(self) -> str:
        whose = (
            f"company {self.company_id}'s events"
            if self.company_id is not None
            else "every company's events"
        )
        return (
            f"webhook {self.webhook_id} posts {whose} to the router URL of company "
            f"{self.url_company}: the router refuses them (403)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "webhook": self.webhook_id,
            "company": self.company_id,
            "url_company": self.url_company,
        }


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :func:`audit` found."""

    conflicts: tuple[SourceConflict, ...]
    unclaimed: tuple[UnclaimedType, ...] = ()
    idle_claims: tuple[IdleClaim, ...] = ()
    misdirected: tuple[MisdirectedWebhook, ...] = ()
    #: Ids of the disabled webhooks (ignored).
    disabled: tuple[str, ...] = ()
    #: Ids of enabled webhooks that post elsewhere than the router (only with a base URL).
    elsewhere: tuple[str, ...] = ()
    #: False when the claims were not compared (source-only audit).
    claims_compared: bool = True

    @property
    def warnings(self) -> tuple[UnclaimedType | IdleClaim | MisdirectedWebhook, ...]:
        """The disagreements, misdirected webhooks first."""
        return (*self.misdirected, *self.unclaimed, *self.idle_claims)

    def exit_code(self, *, strict: bool = False) -> int:
        """1 for a conflict (or, when ``strict``, a warning); else 0."""
        return 1 if self.conflicts or (strict and self.warnings) else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "conflicts": [c.to_json() for c in self.conflicts],
            "unclaimed": [u.to_json() for u in self.unclaimed],
            "idle_claims": [i.to_json() for i in self.idle_claims],
            "misdirected": [m.to_json() for m in self.misdirected],
            "disabled": list(self.disabled),
            "elsewhere": list(self.elsewhere),
            "claims_compared": self.claims_compared,
        }


def audit(
    webhooks: Sequence[Webhook],
    claims: Sequence[AuditClaim] | None,
    *,
    router_base_url: str | None = None,
) -> AuditReport:
    """Conflicts at the source and, unless ``claims`` is None, disagreements with the claims."""
    enabled = [w for w in webhooks if w.enabled]
    to_router = [w for w in enabled if _posts_to_router(w.url, router_base_url)]
    router_ids = {w.id for w in to_router}
    elsewhere = tuple(w.id for w in enabled if w.id not in router_ids)
    return AuditReport(
        conflicts=find_source_conflicts(webhooks),
        unclaimed=_unclaimed(to_router, claims) if claims is not None else (),
        idle_claims=_idle(to_router, claims) if claims is not None else (),
        misdirected=_misdirected(to_router),
        disabled=tuple(w.id for w in webhooks if not w.enabled),
        elsewhere=elsewhere,
        claims_compared=claims is not None,
    )


def find_source_conflicts(webhooks: Iterable[Webhook]) -> tuple[SourceConflict, ...]:
    """For each company, the types more than one enabled webhook receives.

    Universal webhooks (no company) count for every company; a clash among them alone is
    reported once, for every company (``company`` None), not again for each company.
    """
    enabled = [w for w in webhooks if w.enabled]
    universal = [w for w in enabled if w.company_id is None]
    by_company: dict[str, list[Webhook]] = defaultdict(list)
    for webhook in enabled:
        if webhook.company_id is not None:
            by_company[webhook.company_id].append(webhook)
    found = [
        SourceConflict(None, event_type, ids)
        for event_type, ids in _receivers(universal).items()
        if len(ids) > 1
    ]
    for company in sorted(by_company):
        own = _receivers(by_company[company])
        shared = _receivers(universal)
        for event_type in own:
            ids = (*own[event_type], *shared.get(event_type, ()))
            if len(ids) > 1:
                found.append(SourceConflict(company, event_type, ids))
    return tuple(sorted(found, key=lambda c: (c.company or "", _type_order(c.event_type))))


def group_conflicts(conflicts: Iterable[SourceConflict]) -> tuple[ConflictGroup, ...]:
    """Conflicts gathered by (company, webhooks), in the order they first appear."""
    groups: dict[tuple[str | None, tuple[str, ...]], list[str]] = {}
    for conflict in conflicts:
        groups.setdefault((conflict.company, conflict.webhook_ids), []).append(conflict.event_type)
    return tuple(
        ConflictGroup(company, ids, tuple(types)) for (company, ids), types in groups.items()
    )


def compact_events(events: Iterable[str]) -> list[str]:
    """Event types for reading: ``*`` for all 11, ``sms.*`` for a whole channel."""
    wanted = set(events)
    if wanted >= set(EVENT_TYPES):
        return ["*", *sorted(wanted - set(EVENT_TYPES))]
    out: list[str] = []
    done: set[str] = set()
    for event_type in sorted(wanted, key=_type_order):
        if event_type in done:
            continue
        channel = event_type.split(".", 1)[0]
        members = {t for t in EVENT_TYPES if t.startswith(channel + ".")}
        if len(members) > 1 and members <= wanted:
            out.append(f"{channel}.*")
            done |= members
        else:
            out.append(event_type)
            done.add(event_type)
    return out


def subscription_company(url: str) -> str | None:
    """The company of a router subscription URL (``…/webhooks/attentive/<id>``), else None."""
    path = urlsplit(url).path.rstrip("/")
    head, _, last = path.rpartition("/")
    if not last or not head.endswith(WEBHOOK_PATH):
        return None
    return unquote(last)


# -- helpers --------------------------------------------------------------------------------


def _receivers(webhooks: Iterable[Webhook]) -> dict[str, tuple[str, ...]]:
    """Event type → ids of the webhooks receiving it, in the given order."""
    out: dict[str, list[str]] = defaultdict(list)
    for webhook in webhooks:
        for event_type in dict.fromkeys(webhook.events):
            out[event_type].append(webhook.id)
    return {t: tuple(ids) for t, ids in out.items()}


def _unclaimed(
    webhooks: Sequence[Webhook], claims: Sequence[AuditClaim]
) -> tuple[UnclaimedType, ...]:
    found: list[UnclaimedType] = []
    for event_type, ids in _receivers(w for w in webhooks if w.company_id is None).items():
        covering = [c for c in claims if c.pattern.matches(event_type)]
        if not any(c.company is None for c in covering):
            partly = tuple(sorted({c.company for c in covering if c.company is not None}))
            found.append(UnclaimedType(None, event_type, ids, partly))
    companies = sorted({w.company_id for w in webhooks if w.company_id is not None})
    for company in companies:
        own = _receivers(w for w in webhooks if w.company_id == company)
        for event_type, ids in own.items():
            if not any(
                c.pattern.matches(event_type) and companies_overlap(c.company, company)
                for c in claims
            ):
                found.append(UnclaimedType(company, event_type, ids))
    return tuple(sorted(found, key=lambda u: (u.company or "", _type_order(u.event_type))))


def _idle(webhooks: Sequence[Webhook], claims: Sequence[AuditClaim]) -> tuple[IdleClaim, ...]:
    idle: list[IdleClaim] = []
    for claim in claims:
        sent = {
            event_type
            for webhook in webhooks
            if webhook.company_id is None
            or claim.company is None
            or companies_overlap(claim.company, webhook.company_id)
            for event_type in webhook.events
        }
        if not any(claim.pattern.matches(t) for t in sent):
            idle.append(IdleClaim(claim))
    return tuple(idle)


def _misdirected(webhooks: Iterable[Webhook]) -> tuple[MisdirectedWebhook, ...]:
    found: list[MisdirectedWebhook] = []
    for webhook in webhooks:
        url_company = subscription_company(webhook.url)
        if url_company is not None and url_company != webhook.company_id:
            found.append(MisdirectedWebhook(webhook.id, webhook.company_id, url_company))
    return tuple(found)


def _posts_to_router(url: str, router_base_url: str | None) -> bool:
    if router_base_url is None:
        return True
    prefix = router_base_url.rstrip("/") + WEBHOOK_PATH
    return url == prefix or url.startswith(prefix + "/")


def _type_order(event_type: str) -> tuple[int, str]:
    """The documented order of :data:`EVENT_TYPES`, then undocumented types by name."""
    try:
        return (EVENT_TYPES.index(event_type), event_type)
    except ValueError:
        return (len(EVENT_TYPES), event_type)


def _conflict_line(
    company: str | None, event_types: Sequence[str], webhook_ids: Sequence[str]
) -> str:
    verb = "goes" if len(event_types) == 1 else "go"
    return (
        f"{_scope(company)}: {', '.join(event_types)} {verb} to {len(webhook_ids)} enabled "
        f"webhooks ({', '.join(webhook_ids)})"
    )


def _scope(company: str | None) -> str:
    return f"company {company}" if company is not None else "every company"


__all__ = [
    "AuditClaim",
    "AuditReport",
    "ConflictGroup",
    "IdleClaim",
    "MisdirectedWebhook",
    "SourceConflict",
    "UnclaimedType",
    "audit",
    "compact_events",
    "find_source_conflicts",
    "group_conflicts",
    "subscription_company",
]
