"""What the console's overview shows of RabbitMQ: each queue's depth, consumers and rates, and
the broker's nodes with their alarms.

Two sources answer the same question (:class:`BrokerView`). RabbitMQ's management HTTP API
(:class:`ManagementView`) knows rates, nodes and alarms; passive declares over AMQP
(:class:`AmqpView`) know only a queue's ready messages and consumers, but need nothing beyond the
URL the router already has. :func:`broker_view` picks one. A look never raises because the
broker cannot be reached: it says so (``reachable=False`` and a short reason that holds no URL
and no password), so that a page can still be drawn. :class:`CachedView` lets many browsers
polling the overview cost one look per TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import aiormq
from yarl import URL

from router.amqp.nodes import BrokerUnreachable, connect_first, parse_urls
from router.errors import ConfigError
from router.secret import redact_url

#: :attr:`BrokerLook.source` of a look through the management HTTP API.
MANAGEMENT = "management"
#: :attr:`BrokerLook.source` of a look through AMQP passive declares.
AMQP = "amqp"
#: The name of the console's AMQP connection in RabbitMQ's management UI.
CONNECTION_NAME = "attentive-router console"

#: Fields of ``/api/nodes`` that raise an alarm, and the alarm's name in :class:`NodeLook`.
_ALARMS = (("mem_alarm", "memory"), ("disk_free_alarm", "disk"))
_NODE_COLUMNS = "name,running,mem_alarm,disk_free_alarm"
_QUEUE_COLUMNS = "name,messages,consumers,message_stats"


@dataclass(frozen=True, slots=True)
class QueueLook:
    """One queue as the broker reports it; None where the source does not know."""

    name: str
    #: Messages in the queue: ready and unacknowledged (management), ready only (AMQP).
    messages: int | None
    consumers: int | None
    #: Messages a second published into the queue, lately.
    in_rate: float | None
    #: Messages a second delivered (or fetched) from the queue, lately.
    out_rate: float | None


@dataclass(frozen=True, slots=True)
class NodeLook:
    """One broker node: whether it runs and the resource alarms it has raised."""

    name: str
    running: bool
    #: ``"memory"``, ``"disk"``: while one is raised, the node blocks publishers.
    alarms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BrokerLook:
    """What one look at the broker saw.

    ``reachable`` False: nothing could be read, ``error`` says why. ``reachable`` True with an
    ``error``: part of it could not be read (the nodes), ``error`` says which and why.
    """

    reachable: bool
    error: str | None
    #: The broker's nodes; None when the source cannot tell (AMQP) or could not read them.
    nodes: tuple[NodeLook, ...] | None
    #: The queues asked about, by name; a queue that does not exist is absent.
    queues: Mapping[str, QueueLook]
    #: :data:`MANAGEMENT` or :data:`AMQP`.
    source: str

    @classmethod
    def unreachable(cls, source: str, reason: str) -> BrokerLook:
        """A look that read nothing, for ``reason``."""
        return cls(reachable=False, error=reason, nodes=None, queues={}, source=source)


class BrokerView(Protocol):
    """A source of :class:`BrokerLook` s."""

    async def look(self, queue_names: Sequence[str], prefixes: Sequence[str] = ()) -> BrokerLook:
        """The broker's nodes and the queues named (those that exist), and those whose names
        start with one of ``prefixes`` when the source can list queues (the management API
        can, AMQP cannot); never raises because the broker cannot be reached or refuses."""
        ...


class AmqpView:
    """Looks through passive declares on one short-lived AMQP connection: messages ready and
    consumers of each queue; no rates, no nodes. Nothing is created or consumed.

    ``amqp_url`` may list several nodes (comma-separated), as ``ROUTER_AMQP_URL``; a malformed
    one is refused here with :class:`~router.errors.ConfigError`. ``timeout`` bounds a look.
    """

    def __init__(self, amqp_url: str, *, timeout: float) -> None:
        self._urls = parse_urls(amqp_url)
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"AmqpView({len(self._urls)} node(s), timeout={self._timeout:g})"

    async def look(self, queue_names: Sequence[str], prefixes: Sequence[str] = ()) -> BrokerLook:
        """See :meth:`BrokerView.look`."""
        try:
            async with asyncio.timeout(self._timeout):
                queues = await self._declare(queue_names)
        except TimeoutError:
            return BrokerLook.unreachable(
                AMQP, f"RabbitMQ did not answer within {self._timeout:g} s"
            )
        except BrokerUnreachable:
            return BrokerLook.unreachable(
                AMQP, "no RabbitMQ node accepted a connection (down, unreachable or refusing)"
            )
        except (OSError, aiormq.exceptions.AMQPError) as error:
            return BrokerLook.unreachable(AMQP, f"the RabbitMQ connection failed ({_kind(error)})")
        return BrokerLook(reachable=True, error=None, nodes=None, queues=queues, source=AMQP)

    async def _declare(self, queue_names: Sequence[str]) -> dict[str, QueueLook]:
        connection, _ = await connect_first(self._urls, name=CONNECTION_NAME, timeout=self._timeout)
        looks: dict[str, QueueLook] = {}
        async with connection:
            channel = await connection.channel()
            for name in dict.fromkeys(queue_names):
                try:
                    declared = await channel.declare_queue(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    channel = await connection.channel()  # the broker closed the last one
                    continue
                except aiormq.exceptions.ChannelClosed:  # refused, exclusive to another
                    looks[name] = QueueLook(name, None, None, None, None)
                    channel = await connection.channel()
                    continue
                ok = declared.declaration_result
                looks[name] = QueueLook(name, ok.message_count, ok.consumer_count, None, None)
        return looks


class ManagementView:
    """Looks through RabbitMQ's management HTTP API: ``GET /api/nodes`` and
    ``GET /api/queues/{vhost}``, both at once, on a session of the look's own.

    ``url`` is the API's root, ``http(s)://user:password@host:15672`` (a path before ``/api``
    is kept, for a proxy); its user and password are sent as Basic auth, and appear in no
    message and no ``repr``. The user needs the ``monitoring`` tag to list the nodes; with
    ``management`` only, the queues are read and the nodes are not. A URL that is no http(s)
    URL is refused here with :class:`~router.errors.ConfigError`.
    """

    def __init__(self, url: str, *, vhost: str, timeout: float) -> None:
        try:
            parsed = URL(url)
        except ValueError:
            parsed = URL()
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(
                f"{redact_url(url)}: the RabbitMQ management URL must be http(s)://host:port"
            )
        self._headers = (
            {"Authorization": aiohttp.encode_basic_auth(parsed.user, parsed.password or "")}
            if parsed.user
            else {}
        )
        self._root = parsed.with_user(None).with_query(None).with_fragment(None)
        self._vhost = vhost
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"ManagementView({str(self._root)!r}, vhost={self._vhost!r})"

    async def look(self, queue_names: Sequence[str], prefixes: Sequence[str] = ()) -> BrokerLook:
        """See :meth:`BrokerView.look`."""
        wanted = set(queue_names)
        client_timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with (
                asyncio.timeout(self._timeout),
                aiohttp.ClientSession(headers=self._headers, timeout=client_timeout) as session,
            ):
                nodes, queues = await asyncio.gather(
                    self._get(session, "nodes", _NODE_COLUMNS, "the node list"),
                    self._get(
                        session,
                        f"queues/{quote(self._vhost, safe='')}",
                        _QUEUE_COLUMNS,
                        f"the queue list of vhost {self._vhost!r}",
                    ),
                    return_exceptions=True,
                )
        except TimeoutError as error:
            nodes = queues = error
        if isinstance(queues, BaseException):
            return BrokerLook.unreachable(MANAGEMENT, self._reason(queues))
        starts = tuple(prefixes)
        looks = {
            look.name: look
            for look in map(_queue_look, queues)
            if look.name in wanted or (starts and look.name.startswith(starts))
        }
        if isinstance(nodes, BaseException):
            error_text: str | None = f"nodes unknown: {self._reason(nodes)}"
            node_looks = None
        else:
            error_text, node_looks = None, tuple(map(_node_look, nodes))
        return BrokerLook(
            reachable=True, error=error_text, nodes=node_looks, queues=looks, source=MANAGEMENT
        )

    async def _get(
        self, session: aiohttp.ClientSession, path: str, columns: str, what: str
    ) -> list[dict[str, Any]]:
        url = self._root.with_path(
            f"{self._root.path.rstrip('/')}/api/{path}", encoded=True
        ).with_query(columns=columns)
        async with session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                said = await _said(response)
                raise _Refused(_status_reason(response.status, what, said))
            body = await response.json()
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise _Refused(f"the management API answered something unreadable for {what}")
        return body

    def _reason(self, error: BaseException) -> str:
        if isinstance(error, _Refused):
            return str(error)
        if isinstance(error, TimeoutError):
            return f"the management API did not answer within {self._timeout:g} s"
        if isinstance(error, aiohttp.ClientConnectorError):
            return (
                f"cannot connect to the management API at {error.host}:{error.port}"
                f" ({_kind(error.os_error)})"
            )
        if isinstance(error, aiohttp.ContentTypeError | ValueError):
            return "the management API answered something unreadable"
        return f"the management API request failed ({_kind(error)})"


class CachedView:
    """A :class:`BrokerView` that asks ``view`` at most once per ``ttl`` seconds for the same
    queues: callers meanwhile share the last look, or the one under way."""

    def __init__(
        self, view: BrokerView, ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._view = view
        self._ttl = ttl
        self._clock = clock
        self._last: _Entry | None = None

    async def look(self, queue_names: Sequence[str], prefixes: Sequence[str] = ()) -> BrokerLook:
        """See :meth:`BrokerView.look`."""
        key = (frozenset(queue_names), frozenset(prefixes))
        entry = self._last
        if entry is None or entry.key != key or not self._fresh(entry):
            entry = _Entry(
                key,
                asyncio.ensure_future(
                    self._view.look(tuple(dict.fromkeys(queue_names)), tuple(prefixes))
                ),
            )
            entry.task.add_done_callback(lambda _: entry.finish(self._clock() + self._ttl))
            self._last = entry
        try:
            return await asyncio.shield(entry.task)
        except Exception:
            if self._last is entry:
                self._last = None
            raise

    def _fresh(self, entry: _Entry) -> bool:
        return entry.fresh_until is None or self._clock() < entry.fresh_until


@dataclass(slots=True)
class _Entry:
    key: tuple[frozenset[str], frozenset[str]]
    task: asyncio.Future[BrokerLook]
    #: When the look ends: until when it may be shared (None while under way).
    fresh_until: float | None = None

    def finish(self, fresh_until: float) -> None:
        self.fresh_until = fresh_until


class _Refused(Exception):
    """The management API answered, but not with what was asked: the message says why."""


def broker_view(
    amqp_url: str, management_url: str, *, vhost: str = "/", timeout: float = 5.0
) -> BrokerView:
    """A :class:`ManagementView` of ``management_url`` when there is one, else an
    :class:`AmqpView` of ``amqp_url``."""
    if management_url:
        return ManagementView(management_url, vhost=vhost, timeout=timeout)
    return AmqpView(amqp_url, timeout=timeout)


def _status_reason(status: int, what: str, said: str) -> str:
    code = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    if status == 401:
        return f"the management API refused the credentials for {what} ({code})"
    if status == 403:
        return f"the management user may not read {what} ({code})"
    if status == 404:
        return f"the management API does not know {what} ({code})"
    return f"the management API answered {code} for {what}"


async def _said(response: aiohttp.ClientResponse) -> str:
    """The ``reason`` RabbitMQ gives with an error status (``Not monitor user``), when it is
    short plain text; empty otherwise (a proxy's page)."""
    try:
        body = await response.json(content_type=None)
    except ValueError:
        return ""
    reason = body.get("reason") if isinstance(body, dict) else None
    if isinstance(reason, str) and len(reason) <= 80 and reason.isprintable():
        return reason
    return ""


def _queue_look(item: Mapping[str, Any]) -> QueueLook:
    stats = item.get("message_stats")
    return QueueLook(
        name=str(item.get("name", "")),
        messages=_count(item.get("messages")),
        consumers=_count(item.get("consumers")),
        in_rate=_rate(stats, "publish"),
        out_rate=_rate(stats, "deliver_get", "ack"),
    )


def _node_look(item: Mapping[str, Any]) -> NodeLook:
    alarms = tuple(alarm for field, alarm in _ALARMS if item.get(field) is True)
    return NodeLook(
        name=str(item.get("name", "")), running=item.get("running") is True, alarms=alarms
    )


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rate(stats: object, *fields: str) -> float | None:
    """The rate of the first of ``fields`` the queue's ``message_stats`` has one for: 0.0 when
    none of them ever happened, None when they are counted but their rate is not kept."""
    if not isinstance(stats, dict):
        return 0.0
    for field in fields:
        details = stats.get(f"{field}_details")
        rate = details.get("rate") if isinstance(details, dict) else None
        if isinstance(rate, int | float) and not isinstance(rate, bool):
            return float(rate)
    return None if any(field in stats for field in fields) else 0.0


def _kind(error: BaseException | None) -> str:
    """What went wrong, by the error's class only: its message may quote a URL."""
    return type(error).__name__ if error is not None else "unknown error"


__all__ = [
    "AMQP",
    "CONNECTION_NAME",
    "MANAGEMENT",
    "AmqpView",
    "BrokerLook",
    "BrokerView",
    "CachedView",
    "ManagementView",
    "NodeLook",
    "QueueLook",
    "broker_view",
]
