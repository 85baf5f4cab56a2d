"""A stream of distinct signed events posted with a few in flight, every answer remembered:
what the fault tests send through the ingress while they break things."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from router.contract.examples import example_body

#: Posts one body and returns the HTTP status (raises when there was no answer).
Post = Callable[[bytes], Awaitable[int]]


def sms_sent(n: int) -> bytes:
    """The n-th event of the default stream: sms.sent for company acme."""
    return example_body("sms.sent", "acme", external_id=n)


class Stream:
    """Posts ``make_body(1)``, ``make_body(2)``, ... from a few senders until stopped."""

    def __init__(self, post: Post, make_body: Callable[[int], bytes] = sms_sent) -> None:
        self._post = post
        self._make_body = make_body
        #: Every body sent and its answer: the status, or 0 for no answer (Attentive retries).
        self.answers: dict[bytes, int] = {}
        self._stop = asyncio.Event()
        self._next = 0

    async def _sender(self) -> None:
        while not self._stop.is_set():
            self._next += 1
            body = self._make_body(self._next)
            try:
                status = await self._post(body)
            except Exception:  # no answer: counts as such, never as a 2xx
                status = 0
            self.answers[body] = status
            # Like Attentive, back off after a failure instead of hammering a broker that is
            # electing new queue leaders on these same two cores
            await asyncio.sleep(0.003 if status == 200 else 0.05)

    @contextlib.asynccontextmanager
    async def running(self, senders: int = 4) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self._sender()) for _ in range(senders)]
        try:
            yield
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)

    def count(self, status: int) -> int:
        return Counter(self.answers.values())[status]

    async def until(self, status: int, at_least: int, timeout: float = 60) -> None:
        """Wait until ``at_least`` answers were ``status``; say what was seen if not."""
        try:
            async with asyncio.timeout(timeout):
                while self.count(status) < at_least:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(
                f"waited {timeout:g} s for {at_least} answers {status}; "
                f"have {Counter(self.answers.values())}"
            ) from None

    async def more(self, status: int, n: int, timeout: float = 120) -> None:
        """Wait for ``n`` more answers ``status`` than there are now."""
        await self.until(status, self.count(status) + n, timeout)

    def accepted(self) -> set[bytes]:
        """The bodies answered 200."""
        return {body for body, status in self.answers.items() if status == 200}


__all__ = ["Post", "Stream", "sms_sent"]
