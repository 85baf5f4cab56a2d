"""``python -m tests.failing_parts ARGS``: ``attentive-router ARGS`` with bugs planted in it, for
tests/test_no_secrets_in_logs.py.

One method of each part fails as an unforeseen bug would: the ingress's publish of an
``email.*`` event (the others go through), the admin API's listing of claims, and the Attentive
client's listing of webhooks; and :func:`worker` is a worker whose handler fails. Each raises a
RuntimeError whose message quotes every settings object the process built (their ``repr``),
from a frame whose local variables hold the webhook's body or the event: the subscriber's phone
number and email address, and the settings with every secret in them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Coroutine
from typing import Any

import orjson

from consumers import Event, RetryPolicy, Worker
from consumers.runtime.settings import WorkerSettings
from router.amqp.broker import Broker
from router.amqp.frames import Properties
from router.attentive.client import AttentiveClient
from router.attentive.settings import AttentiveSettings
from router.claims.service import ClaimsService
from router.cli.main import main
from router.settings import Settings

#: Every settings object this process built, in order.
BUILT: list[object] = []
#: The events whose publish fails (routing keys starting so).
FAILING_EVENTS = "email."
#: Starts the message of every planted failure.
FAILURE = "unexpected failure in"


def failure(where: str) -> RuntimeError:
    """An error quoting the settings, as a careless ``f"... {settings!r}"`` would."""
    return RuntimeError(f"{FAILURE} {where}; settings: {' '.join(map(repr, BUILT))}")


def worker() -> Worker:
    """``$FAILING_APP``: claims ``sms.*``; its handler fails quoting the subscriber."""
    failing = Worker(os.environ["FAILING_APP"], retry=RetryPolicy(delays=(0.2,), max_attempts=2))

    @failing.on("sms.*")
    async def quote_the_subscriber(event: Event) -> None:
        subscriber = event.subscriber
        raise failure(f"a CRM that refused {subscriber['phone']} ({subscriber['email']})")

    return failing


def _record(settings_class: type[Any]) -> None:
    build = settings_class.from_env

    def from_env(env: Any, **overrides: Any) -> Any:
        built = build(env, **overrides)
        BUILT.append(built)
        return built

    setattr(settings_class, "from_env", staticmethod(from_env))  # noqa: B010


def _plant() -> None:
    for settings_class in (Settings, WorkerSettings, AttentiveSettings):
        _record(settings_class)
    publish = Broker.publish_event

    def publish_event(
        self: Broker, routing_key: str, body: bytes, properties: Properties
    ) -> Coroutine[Any, Any, None]:
        if routing_key.startswith(FAILING_EVENTS):
            subscriber = orjson.loads(body)["subscriber"]  # (a local of the failing frame)
            raise failure(f"the ingress's publish (a subscriber of {len(subscriber)} fields)")
        return publish(self, routing_key, body, properties)

    async def list_claims(self: ClaimsService, app: str | None = None) -> Any:
        raise failure("the admin API's claims")

    async def list_webhooks(self: AttentiveClient) -> Any:
        raise failure("the Attentive client")

    # (setattr: mypy refuses to assign to a method)
    setattr(Broker, "publish_event", publish_event)  # noqa: B010
    setattr(ClaimsService, "list", list_claims)  # noqa: B010
    setattr(AttentiveClient, "list_webhooks", list_webhooks)  # noqa: B010


if __name__ == "__main__":
    # the worker target imports this module by name: let it find this one, not a second copy
    sys.modules["tests.failing_parts"] = sys.modules[__name__]
    _plant()
    sys.exit(main(sys.argv[1:]))
