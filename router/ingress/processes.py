"""The ingress processes of one ``serve --workers N``, seen from the internal listener.

The N processes share the webhook port (SO_REUSEPORT: the kernel spreads connections between
them), and each keeps its own counters and its own broker connection. A scrape or a probe of
a port they shared would reach one of them at random, so they do not share the internal
one: the first process listens on ``ROUTER_INTERNAL_HOST``:``ROUTER_INTERNAL_PORT`` and
answers for all of them, and every other process listens on a Unix socket of its own, in a
directory that ``serve`` made for the run and only its user may enter
(:class:`Processes`). The first asks the others, over those sockets, for their ``/metrics``
and ``/readyz`` when it is asked for its own (:class:`Siblings`):

* ``/metrics`` holds the series of every process, each with a ``process`` label (``"0"`` to
  ``"N-1"``), and ``attentive_router_process_up{process}``: 1 for each process that answered,
  0 for one that did not (its series are then missing from that page);
* ``/readyz`` is 200 only while every process is ready.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from router.ingress.metrics import PAGE_MAX_AGE

#: The label that tells the processes' series apart.
PROCESS_LABEL = "process"
#: Seconds the first process waits for another's answer: under the kubelet's probe timeout
#: (2 s in deploy/k8s), so that a process that does not answer makes a 503, not a timeout.
ASK_TIMEOUT = 1.0
#: The largest answer read from another process.
MAX_ANSWER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Processes:
    """Process ``index`` of the ``count`` that ``serve --workers`` started; their Unix sockets
    are in ``directory``."""

    directory: str
    count: int
    index: int

    def socket(self, index: int) -> str:
        """The Unix socket process ``index`` (not the first) listens on."""
        return os.path.join(self.directory, f"ingress-{index}.sock")

    @property
    def first(self) -> bool:
        """The process that listens on the internal port and answers for all."""
        return self.index == 0


@dataclass(slots=True)
class Siblings:
    """What the first process asks the others (:class:`Processes` ``1`` to ``count - 1``)."""

    processes: Processes
    _page: bytes = field(default=b"", init=False)
    _page_at: float | None = field(default=None, init=False)

    async def ask(self, path: str) -> list[tuple[int, bytes] | None]:
        """Each other process's answer to ``GET path`` (status and body), in process order;
        None for one that did not answer within :data:`ASK_TIMEOUT`."""
        processes = self.processes
        return list(
            await asyncio.gather(
                *(_ask(processes.socket(i), path) for i in range(1, processes.count))
            )
        )

    async def metrics_page(self, own: bytes) -> bytes:
        """Every process's ``/metrics`` (``own``: the first's) as one page, asked anew at most
        once per :data:`~router.ingress.metrics.PAGE_MAX_AGE` seconds."""
        now = time.monotonic()
        if self._page_at is None or now - self._page_at >= PAGE_MAX_AGE:
            answers = await self.ask("/metrics")
            pages = [own, *(a[1] if a is not None and a[0] == 200 else None for a in answers)]
            self._page, self._page_at = merge_pages(pages), time.monotonic()
        return self._page


def merge_pages(pages: Sequence[bytes | None]) -> bytes:
    """Prometheus text pages, one per process (None: the process did not answer), as one page
    whose samples carry the ``process`` label of the page they came from (its position)."""
    return generate_latest(_Merged(pages))


class _Merged(Collector):
    """The metric families of several pages, merged (one family of each name)."""

    def __init__(self, pages: Sequence[bytes | None]) -> None:
        self._pages = pages

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        up = Metric(
            "attentive_router_process_up",
            "1 when the ingress process answered this scrape, 0 when it did not.",
            "gauge",
        )
        for index, page in enumerate(self._pages):
            process = str(index)
            up.add_sample(up.name, {PROCESS_LABEL: process}, 0.0 if page is None else 1.0)
            if page is None:
                continue
            for family in text_string_to_metric_families(page.decode()):
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                merged.samples.extend(
                    sample._replace(labels={**sample.labels, PROCESS_LABEL: process})
                    for sample in family.samples
                )
        yield from families.values()
        yield up


_REQUEST = b"GET %s HTTP/1.1\r\nHost: ingress\r\nConnection: close\r\n\r\n"


async def _ask(socket: str, path: str) -> tuple[int, bytes] | None:
    """``GET path`` over the Unix socket ``socket``: the status and body, or None."""
    try:
        async with asyncio.timeout(ASK_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(socket)
            try:
                writer.write(_REQUEST % path.encode("ascii"))
                data = bytearray()
                while len(data) <= MAX_ANSWER_BYTES and (chunk := await reader.read(65536)):
                    data += chunk
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1]), bytes(body)


__all__ = [
    "ASK_TIMEOUT",
    "PROCESS_LABEL",
    "Processes",
    "Siblings",
    "merge_pages",
]
