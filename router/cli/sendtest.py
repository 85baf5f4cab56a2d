"""``send-test``: sign and post example webhooks, as Attentive's "Send test event" button does.

Exit codes: 0 every example accepted, 1 one was not (or the URL cannot be reached), 2 wrong
usage or no signing key.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from router.cli import output
from router.contract.events import EVENT_TYPES
from router.contract.examples import DEFAULT_COMPANY_ID, example_body
from router.contract.names import SIGNATURE_HEADER
from router.contract.signing import sign
from router.errors import ConfigError, Unavailable
from router.settings import Settings


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``send-test`` to ``commands``."""
    send = commands.add_parser("send-test", help="sign and post example webhooks")
    send.set_defaults(run=run)
    send.add_argument("event_type", nargs="?", help="one of: " + ", ".join(EVENT_TYPES))
    send.add_argument("--all", action="store_true", help="send one event of each of the 11 types")
    send.add_argument(
        "--url",
        default="http://127.0.0.1:8080/webhooks/attentive",
        help="the ingress webhook URL (default %(default)s)",
    )
    send.add_argument("--company-id", default=DEFAULT_COMPANY_ID)
    send.add_argument("--signing-key", help="default: the first of ROUTER_SIGNING_KEYS")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Post the examples asked for and print each answer; the exit code."""
    if args.all == (args.event_type is not None):
        raise ConfigError("give one EVENT_TYPE or --all")
    if args.event_type is not None and args.event_type not in EVENT_TYPES:
        raise ConfigError(
            f"unknown event type {args.event_type!r}; choose one of: {', '.join(EVENT_TYPES)}"
        )
    keys = Settings.from_env(env).signing_keys
    key = args.signing_key or (keys[0].reveal() if keys else None)
    if not key:
        raise ConfigError("no signing key: pass --signing-key or set ROUTER_SIGNING_KEYS")
    types = EVENT_TYPES if args.all else (args.event_type,)
    results = asyncio.run(
        send_examples(args.url, types, signing_key=key, company_id=args.company_id)
    )
    for result in results:
        output.print_line(f"{result.event_type:<26} {result.status}  {result.body}")
    return 0 if all(result.ok for result in results) else 1


class Unreachable(Unavailable):
    """Raised when the ingress URL cannot be reached at all."""


@dataclass(frozen=True, slots=True)
class Sent:
    """One example webhook and the ingress's answer."""

    event_type: str
    status: int
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


async def send_examples(
    url: str,
    event_types: Iterable[str],
    *,
    signing_key: str,
    company_id: str,
    timeout: float = 30.0,
) -> list[Sent]:
    """Post one signed example of each type to ``url``, one after the other."""
    results: list[Sent] = []
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        for event_type in event_types:
            body = example_body(event_type, company_id)
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(body, signing_key),
            }
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    results.append(Sent(event_type, response.status, await response.text()))
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                raise Unreachable(f"cannot reach {url}: {error or type(error).__name__}") from None
    return results


__all__ = ["Sent", "Unreachable", "add_commands", "run", "send_examples"]
