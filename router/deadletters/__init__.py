"""Inspect, replay and purge parked events: an application's DLQ, ``attentive.unrouted`` and
``attentive.invalid``. The CLI and the admin API both call this module.

Every operation walks the queue once with ``basic.get``, without acking: a message it leaves
alone stays unacked until the walk ends, when closing the channel returns every one of them
to the queue, where it was: the DLQ is a classic queue, which keeps positions. ``unrouted``
and ``invalid`` are quorum queues (no delivery limit: a walk adds one to each
``x-delivery-count``), which return messages in another order: a walk keeps what is in them,
not their order. Pulling one at a time keeps memory flat however long the
queue is. A message leaves the queue only by an ack, and a replayed one only after the
broker confirmed its copy, so an event is never lost; a walk killed midway returns
everything it had not yet acked, and an event whose copy was confirmed but not yet acked is
delivered twice (workers skip the duplicate by its message id).
"""

from router.deadletters.entries import Entry, Filter, Progress, Summary
from router.deadletters.operations import CONFIRM_TIMEOUT, DeadLetters
from router.deadletters.places import Kind, NotFound, Parked

__all__ = [
    "CONFIRM_TIMEOUT",
    "DeadLetters",
    "Entry",
    "Filter",
    "Kind",
    "NotFound",
    "Parked",
    "Progress",
    "Summary",
]
