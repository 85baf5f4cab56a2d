"""Handlers that declare the event model they take: ``async def on(event: SmsSubscribed)``.

:func:`as_handler` reads a handler's annotation when it is registered. A handler of
:class:`~consumers.runtime.event.Event` (or of no annotation) is called as before; one of a
model of :mod:`router.contract.models` (or a union of them) gets the body decoded into it,
and, when it has a second parameter, the :class:`Event` too (the raw payload, the message id,
the attempt). A body that does not fit the declared model is rejected (dead-lettered at once)
with a reason naming the field. Registering a handler whose pattern covers a documented type
its annotation does not take is refused, so that mistake never reaches the queue.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias, TypeVar, overload

from consumers.runtime.errors import Reject, WorkerConfigError
from consumers.runtime.event import Event
from router.claims.model import EventPattern
from router.contract.events import EVENT_TYPES
from router.contract.models import (
    MODELS,
    AttentiveEvent,
    EventDoesNotFit,
    GenericEvent,
    decoder_for,
)

HandlerFn = Callable[[Event], Awaitable[None]]
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
#: What a handler may declare its first parameter as.
Model: TypeAlias = Event | AttentiveEvent | GenericEvent
E = TypeVar("E", bound=Model)


class Register(Protocol):
    """What ``@worker.on(...)`` returns: it registers a handler of one parameter (an
    :class:`Event` or a model) or of two (a model, then the :class:`Event`), and gives it back
    unchanged, so mypy checks the handler's own body against the model it declares."""

    @overload
    def __call__(
        self, handler: Callable[[E], Awaitable[None]], /
    ) -> Callable[[E], Awaitable[None]]: ...

    @overload
    def __call__(
        self, handler: Callable[[E, Event], Awaitable[None]], /
    ) -> Callable[[E, Event], Awaitable[None]]: ...


def as_handler(handler: Callable[..., Awaitable[None]], pattern: EventPattern) -> HandlerFn:
    """What the runtime calls for ``handler`` registered on ``pattern``: the handler itself,
    or one that decodes the body into its model first; :class:`WorkerConfigError` when its
    annotation is not one the runtime can give it."""
    name = getattr(handler, "__qualname__", repr(handler))
    model, wants_event = _declared(handler, name)
    if model is None:
        return handler
    members = _expanded(typing.get_args(model) or (model,))
    _check_covers(name, members, pattern)
    title = " | ".join(m.__name__ for m in members)
    target: Any = members[0] if len(members) == 1 else typing.Union[members]  # noqa: UP007
    decode = decoder_for(target)  # made now: a model msgspec cannot decode fails here

    async def typed(event: Event) -> None:
        try:
            decoded = decode(event.raw)
        except EventDoesNotFit as error:
            raise Reject(f"the body does not fit {title}: {error}") from None
        if wants_event:
            await handler(decoded, event)
        else:
            await handler(decoded)

    typed.__qualname__ = name
    return typed


def _declared(handler: Callable[..., Any], name: str) -> tuple[Any, bool]:
    """The model a handler declares (None: it takes an :class:`Event`, or anything an Event
    is, or says nothing) and whether it also takes the :class:`Event`."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # (a builtin or a C callable: taken as an Event handler)
        return None, False
    positional = [p for p in signature.parameters.values() if p.kind in _POSITIONAL]
    if not positional or positional[0].annotation is inspect.Parameter.empty:
        return None, False
    hints = _hints(handler, name)
    first = hints.get(positional[0].name, Any)
    if first is Any or (isinstance(first, type) and issubclass(Event, first)):
        return None, False
    members = typing.get_args(first) if _is_union(first) else (first,)
    if not all(
        isinstance(m, type) and issubclass(m, AttentiveEvent | GenericEvent) for m in members
    ):
        raise WorkerConfigError(
            f"handler {name} takes {first!r}: annotate it with Event or a model of "
            "router.contract.models (or a union of them)"
        )
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    second = hints.get(required[1].name, Event) if len(required) == 2 else Event
    if len(required) > 2 or second is not Event:
        raise WorkerConfigError(f"handler {name} takes its model, then the Event at most")
    return first, len(required) == 2


def _hints(handler: Callable[..., Any], name: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(handler)
    except Exception as error:  # NameError from a string annotation, a callable object, ...
        raise WorkerConfigError(
            f"handler {name}: its annotations cannot be read: {error}"
        ) from None


def _expanded(members: tuple[Any, ...]) -> tuple[type[Any], ...]:
    """The models a handler takes, :class:`AttentiveEvent` (any of the 11) spelled out."""
    if AttentiveEvent not in members:
        return members
    rest = tuple(m for m in members if m is not AttentiveEvent and m not in MODELS.values())
    return (*MODELS.values(), *rest)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _check_covers(name: str, members: tuple[Any, ...], pattern: EventPattern) -> None:
    """Refuse a handler whose pattern matches a documented type its models do not take."""
    taken = {m.__struct_config__.tag for m in members if issubclass(m, AttentiveEvent)}
    left = [t for t in EVENT_TYPES if pattern.matches(t) and t not in taken]
    if left:
        raise WorkerConfigError(
            f"handler {name} takes {' | '.join(m.__name__ for m in members)}"
            f" but {pattern} also matches {', '.join(left)}: take their models too, or "
            "register it for fewer types"
        )


__all__ = ["HandlerFn", "Model", "Register", "as_handler"]
