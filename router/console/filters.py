"""The filter of the parked-events page, as a URL's query and as a form's fields.

One :class:`Filter` is what on-call is looking at: the parked events page shows it (its URL
holds every field, so a link can be pasted in an incident channel), and the replay and purge
forms post the same fields back, so a job acts on exactly what was shown (or on the entries
selected among them, by message id).

    place    dlq | unrouted | invalid (a DLQ needs ``app``)
    app      the application of a DLQ
    type     an event type, ``sms.*`` or ``*``
    company  error  reason  since  until      as the admin API's filters
    message_id  (repeated) the entries selected
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from multidict import MultiMapping

from router.errors import InvalidInput
from router.parked import views
from router.parked.model import Place
from router.parked.query import Query

#: The text fields of a filter, in the order a URL lists them.
TEXT_FIELDS = ("place", "app", "type", "company", "error", "reason", "since", "until")
#: Most message ids one form may select (a page holds at most this many entries).
MAX_SELECTED = 1000


@dataclass(frozen=True, slots=True)
class Filter:
    """What the parked events page shows, as the user gave it (blank fields are unset)."""

    place: str = "dlq"
    app: str = ""
    type: str = ""
    company: str = ""
    error: str = ""
    reason: str = ""
    since: str = ""
    until: str = ""
    message_ids: tuple[str, ...] = ()

    @classmethod
    def from_params(cls, params: MultiMapping[str] | MultiMapping[object]) -> Filter:
        """The filter in a URL's query or a posted form (other fields are ignored); a
        :class:`~router.errors.InvalidInput` for a bad one comes from :meth:`query`."""
        texts = {name: str(params.get(name, "") or "").strip() for name in TEXT_FIELDS}
        ids = tuple(str(value).strip() for value in params.getall("message_id", []))
        if len(ids) > MAX_SELECTED:
            raise InvalidInput(f"at most {MAX_SELECTED} entries can be selected at once")
        return cls(**texts, message_ids=tuple(i for i in ids if i))

    @property
    def parking_place(self) -> Place:
        try:
            return Place(self.place or Place.DLQ.value)
        except ValueError:
            accepted = ", ".join(place.value for place in Place)
            raise InvalidInput(f"must be one of {accepted}", field="place") from None

    def query(self) -> Query:
        """The store's query of this filter: :class:`~router.errors.InvalidInput` naming the
        field that is wrong (a DLQ without its application, a malformed time...)."""
        place = self.parking_place
        return views.in_place(
            Query.build(
                place=place,
                app=self.app if place is Place.DLQ else None,
                event=self.type,
                company=self.company,
                error=self.error,
                reason=self.reason,
                since=self.since,
                until=self.until,
                message_ids=self.message_ids,
            )
        )

    def params(self, *, with_ids: bool = True) -> list[tuple[str, str]]:
        """The set fields as (name, value) pairs, for a URL or hidden form fields."""
        pairs = [(name, getattr(self, name)) for name in TEXT_FIELDS if getattr(self, name)]
        if with_ids:
            pairs.extend(("message_id", message_id) for message_id in self.message_ids)
        return pairs

    def url(self, path: str = "/console/parked", **changes: str) -> str:
        """``path`` with this filter (and ``changes``: a field set to "" is dropped) as its
        query."""
        pairs = dict(self.params(with_ids=False))
        pairs.update(changes)
        return path + ("?" + urlencode({k: v for k, v in pairs.items() if v}) if pairs else "")

    def describe(self) -> str:
        """The filter in words, for a confirmation: ``the dlq of crm-sync, type sms.sent``."""
        parts = [views.where(self.query())]
        for name in ("type", "company", "reason", "since", "until"):
            if value := getattr(self, name):
                parts.append(f"{name} {value}")
        if self.error:
            parts.append(f"error containing {self.error!r}")
        if self.message_ids:
            parts.append(_selected(self.message_ids))
        return ", ".join(parts)


def _selected(ids: Iterable[str]) -> str:
    count = len(tuple(ids))
    return f"{count} selected entr{'y' if count == 1 else 'ies'}"


__all__ = ["MAX_SELECTED", "TEXT_FIELDS", "Filter"]
