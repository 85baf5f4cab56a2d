"""The ``type`` label an event is counted under in the router's and the workers' metrics.

Every label value is a series Prometheus keeps for good, and the type of a signed event is
chosen by whoever holds a signing key: left open, a sender inventing types would make series
without end, in the router and in every worker. So the 11 types Attentive documents always
have a label of their own; so do the first ``max_other`` distinct undocumented, well-formed
types a process sees (a type Attentive adds before we document it shows up by name); every
later one, and anything that is not a well-formed type, is counted as :data:`OTHER`.
"""

from __future__ import annotations

from router.contract.events import EVENT_TYPES, is_event_type

#: The label of the event types that get none of their own (no event type is one word).
OTHER = "other"
#: How many undocumented types get a label of their own unless configured otherwise
#: (``ROUTER_METRICS_MAX_OTHER_TYPES``).
DEFAULT_MAX_OTHER_TYPES = 20


class TypeLabels:
    """The label of each event type one process counts: at most 11 + ``max_other`` + 1
    distinct values, whatever types come."""

    __slots__ = ("_labels", "_others", "max_other")

    def __init__(self, max_other: int = DEFAULT_MAX_OTHER_TYPES) -> None:
        if max_other < 0:
            raise ValueError("max_other must be 0 or more")
        self.max_other = max_other
        #: Every type with a label of its own (the label is the type).
        self._labels = {event_type: event_type for event_type in EVENT_TYPES}
        self._others = 0

    def __call__(self, event_type: str) -> str:
        """The label ``event_type`` is counted under."""
        label = self._labels.get(event_type)
        if label is not None:
            return label
        # (the types counted as other are not remembered: they are the unbounded ones)
        if self._others < self.max_other and is_event_type(event_type):
            self._others += 1
            self._labels[event_type] = event_type
            return event_type
        return OTHER


__all__ = ["DEFAULT_MAX_OTHER_TYPES", "OTHER", "TypeLabels"]
