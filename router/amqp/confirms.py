"""The publishes of one confirm-mode channel that wait for RabbitMQ's answer, by delivery tag.

RabbitMQ numbers the messages of a confirm-mode channel 1, 2, 3, ... and answers each with
basic.ack or basic.nack, alone or, with ``multiple``, for every tag up to one. A message it
could not route (``mandatory``) comes back first as basic.return, which names the message
(exchange, routing key, properties) but not its tag. :class:`Confirms` keeps one future per
waiting publish and settles it: an ack resolves it, a nack fails it with :class:`Nacked`, a
return followed by its ack with :class:`Returned`, a deadline passed with
:class:`ConfirmTimedOut`, a lost connection with whatever the caller says.

A return marks every waiting publish with the same exchange, routing key and message id:
when two such are in flight at once, both fail rather than risk answering 2xx for the one
no queue took (a retry is a duplicate at worst, never a loss).
"""

from __future__ import annotations

import asyncio
from collections import deque

from router.errors import PublishFailed


class NotConfirmed(PublishFailed):
    """RabbitMQ did not confirm the message; it may or may not have been routed."""


class Nacked(NotConfirmed):
    """RabbitMQ answered basic.nack: it could not take the message."""


class Returned(NotConfirmed):
    """The message was mandatory and no queue took it (basic.return)."""


class ConfirmTimedOut(NotConfirmed):
    """No confirm arrived within the confirm timeout."""


class ConnectionLost(NotConfirmed):
    """The connection or the channel closed before the confirm arrived."""


class HeaderTooLarge(NotConfirmed):
    """The message's content header would exceed the negotiated ``frame_max``: not written."""


#: (exchange, routing key, mandatory): what a publish was sent to.
Route = tuple[str, str, bool]


class _Pending:
    __slots__ = ("deadline", "future", "message_id", "returned", "route")

    def __init__(
        self, future: asyncio.Future[None], route: Route, message_id: str | None, deadline: float
    ) -> None:
        self.future = future
        self.route = route
        self.message_id = message_id
        self.deadline = deadline
        self.returned = False


class Confirms:
    """The waiting publishes of one channel, in tag order."""

    __slots__ = ("_order", "_pending", "_tag")

    def __init__(self) -> None:
        self._tag = 0
        self._pending: dict[int, _Pending] = {}
        #: Tags in the order they were given; settled ones are skipped when met.
        self._order: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def track(
        self, future: asyncio.Future[None], route: Route, message_id: str | None, deadline: float
    ) -> None:
        """Wait for the next tag's answer on ``future`` until ``deadline`` (loop time)."""
        self._tag += 1
        self._pending[self._tag] = _Pending(future, route, message_id, deadline)
        self._order.append(self._tag)

    def settle(self, tag: int, multiple: bool, *, nacked: bool) -> None:
        """basic.ack or basic.nack for ``tag`` (and every tag before it when ``multiple``)."""
        pending = self._pending
        if not multiple:
            if (entry := pending.pop(tag, None)) is not None:
                _resolve(entry, nacked)
            return
        order = self._order
        while order and order[0] <= tag:
            if (entry := pending.pop(order.popleft(), None)) is not None:
                _resolve(entry, nacked)

    def mark_returned(self, exchange: str, routing_key: str, message_id: str | None) -> None:
        """A basic.return: it comes before that message's ack, so the message still waits."""
        for entry in self._pending.values():
            route = entry.route
            if entry.message_id == message_id and route[1] == routing_key and route[0] == exchange:
                entry.returned = True

    def expire(self, now: float, timeout: float) -> None:
        """Fail the publishes whose deadline is ``now`` or earlier (``timeout`` is said)."""
        pending, order = self._pending, self._order
        while order:
            entry = pending.get(order[0])
            if entry is None:
                order.popleft()  # settled out of order
            elif entry.deadline <= now:
                del pending[order.popleft()]
                if not entry.future.done():
                    entry.future.set_exception(ConfirmTimedOut(f"no confirm within {timeout:g}s"))
            else:
                break

    def fail_all(self, error: NotConfirmed) -> None:
        """Fail every waiting publish with ``error`` (the connection or channel is gone)."""
        pending, self._pending = self._pending, {}
        self._order.clear()
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(error)


def _resolve(entry: _Pending, nacked: bool) -> None:
    future = entry.future
    if future.done():
        return  # timed out or its waiter gave up
    if nacked:
        future.set_exception(Nacked("RabbitMQ refused the message (nack)"))
    elif entry.returned:
        future.set_exception(Returned("unroutable: no queue took the message"))
    else:
        future.set_result(None)


__all__ = [
    "ConfirmTimedOut",
    "Confirms",
    "ConnectionLost",
    "HeaderTooLarge",
    "Nacked",
    "NotConfirmed",
    "Returned",
    "Route",
]
