"""``send-test``: sign and post example webhooks, as Attentive's "Send test event" button does."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from router.contract.examples import example_body
from router.contract.names import SIGNATURE_HEADER
from router.contract.signing import sign
from router.errors import RouterError


class Unreachable(RouterError):
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


__all__ = ["Sent", "Unreachable", "send_examples"]
