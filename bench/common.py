"""What every part of the benchmark shares: payloads, processes, the broker, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aio_pika
import orjson

from router.amqp import topology
from router.amqp.topology import QUORUM_QUEUE_ARGUMENTS
from router.contract.events import EVENT_TYPES, Routable, parse
from router.contract.examples import example_payload
from router.contract.names import (
    CLOUDEVENTS_PREFIX,
    CLOUDEVENTS_SOURCE,
    COMPANY_HEADER,
    SIGNATURE_HEADER,
    Names,
)
from router.contract.signing import sign

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("ROUTER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
KEY = "bench-signing-key"
ADMIN_TOKEN = "bench-admin-token-of-32-characters-at-least"
#: The application both bench workers run as (one claim of ``*`` covers every event).
APP = "bench"
COMPANIES = ("MDc6Q29tcGFueTU", "acme-co", "globex.inc", "initech")
PAYLOAD_BYTES = 1024
#: Payload field carrying the moment (``time.time()``) the sender's request was due, for the
#: end-to-end latency.
SENT_AT = "bench_sent_at"
#: Payload field marking the open-loop sender's warm-up requests (not counted by the worker).
WARMUP = "bench_warmup"
#: Payload field making pre-filled bodies unique (the worker skips a duplicate message id).
SEQ = "bench_seq"

ANCHORS_OUT = Path(os.environ.get("ANCHORS_OUT", "/tmp/anchors"))
LOADGEN = ANCHORS_OUT / "loadgen"
GO_INGRESS = ANCHORS_OUT / "go-ingress"
ANCHORS_BUILD = Path(
    os.environ.get("ANCHORS_BUILD", ROOT.parent / "shared" / "anchors" / "build.sh")
)
#: What the Go reference declares (and purges at start): not in our namespace.
GO_EXCHANGE = "anchor.events"
GO_SINK = "anchor.sink"


class BenchError(RuntimeError):
    """A measurement could not be made; the message says why."""


class Unavailable(BenchError):
    """A figure needs a tool this machine lacks (the Go anchors, valgrind): it is skipped,
    where a :class:`BenchError` is a failure."""


# -- payloads ---------------------------------------------------------------------------


def payload_templates(size: int = PAYLOAD_BYTES) -> list[dict[str, Any]]:
    """Realistic webhooks, all 11 types x several companies, each padded to about ``size``.

    The padding leaves room for a :data:`SENT_AT` or :data:`SEQ` field (about 30 bytes).
    """
    templates = []
    stamp = int(time.time() * 1000)
    for i, company in enumerate(COMPANIES):
        for event_type in EVENT_TYPES:
            payload = example_payload(event_type, company, external_id=1000 + i, timestamp_ms=stamp)
            payload["subscriber"] = {**payload["subscriber"], "custom": ""}
            missing = size - len(orjson.dumps(payload)) - 30
            payload["subscriber"]["custom"] = "x" * max(0, missing)
            templates.append(payload)
    return templates


def payload_bodies(size: int = PAYLOAD_BYTES) -> list[bytes]:
    """The signed-as-is bodies of wrk, loadgen and the bare publisher (about ``size`` bytes)."""
    bodies = []
    for template in payload_templates(size):
        body = orjson.dumps(template)
        template["subscriber"]["custom"] += "x" * max(0, size - len(body))
        bodies.append(orjson.dumps(template))
    return bodies


def parsed(body: bytes) -> Routable:
    event = parse(body)
    if not isinstance(event, Routable):
        raise BenchError(f"a bench payload does not parse: {event}")
    return event


def amqp_message(body: bytes, event: Routable) -> aio_pika.Message:
    """The message the router publishes for ``event``: same properties and headers."""
    occurred = datetime.fromtimestamp((event.timestamp_ms or 0) / 1000, tz=UTC)
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.message_id,
        timestamp=occurred,
        headers={
            f"{CLOUDEVENTS_PREFIX}specversion": "1.0",
            f"{CLOUDEVENTS_PREFIX}id": event.message_id,
            f"{CLOUDEVENTS_PREFIX}type": event.type,
            f"{CLOUDEVENTS_PREFIX}source": CLOUDEVENTS_SOURCE,
            f"{CLOUDEVENTS_PREFIX}time": occurred.isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            ),
            COMPANY_HEADER: event.company_id,
        },
    )


# -- statistics -------------------------------------------------------------------------


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (as the Go loadgen computes it)."""
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[index]


def summarize_ms(values_ms: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values_ms)

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "count": len(ordered),
        "p50_ms": r(percentile(ordered, 50)),
        "p99_ms": r(percentile(ordered, 99)),
        "max_ms": r(ordered[-1] if ordered else None),
    }


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def ratio(numerator: Any, denominator: Any) -> float | None:
    """``numerator / denominator`` to three decimals; None unless both are numbers (and the
    denominator not zero): a figure that was not measured."""
    if isinstance(numerator, int | float) and isinstance(denominator, int | float) and denominator:
        return round(numerator / denominator, 3)
    return None


def ratio_text(value: Any, rounds: Sequence[float] = ()) -> str:
    """A ratio as the table shows it (``0.95x``, ``-`` when not measured), and each round's
    when there were several."""
    text = f"{value:.2f}x" if isinstance(value, int | float) else "-"
    if len(rounds) > 1:
        text += f" of the medians; round by round {', '.join(f'{r:.2f}x' for r in rounds)}"
    return text


# -- processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of a process the bench starts: this project importable, no proxies."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Proc:
    """A process the bench started, in its own session; :meth:`stop` is bounded."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with {self.popen.returncode}; its log ends:\n{self.tail()}"
            )

    def pids(self) -> list[int]:
        """The process and its descendants (``serve --workers N`` forks N children)."""
        return [self.pid, *descendants(self.pid)]

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_bytes()[-20_000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the whole session."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers of the session, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        return self.popen.returncode


class ProcStat(NamedTuple):
    """What /proc/<pid>/stat says of one process that the bench uses."""

    ppid: int
    #: user + system CPU, in clock ticks
    ticks: int
    command: str


def proc_stats() -> dict[int, ProcStat]:
    """Every process's parent, CPU ticks and command, from one pass over /proc."""
    stats: dict[int, ProcStat] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        stats[int(entry.name)] = ProcStat(int(fields[1]), ticks, command)
    return stats


def descendants(pid: int, stats: Mapping[int, ProcStat] | None = None) -> list[int]:
    """The children of ``pid``, theirs, and so on (from ``stats`` when given)."""
    children: dict[int, list[int]] = {}
    for child, stat in (proc_stats() if stats is None else stats).items():
        children.setdefault(stat.ppid, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return sorted(found)


def memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak resident) and VmRSS of a process, in MB (10^6 bytes)."""
    values: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = round(int(rest.split()[0]) * 1024 / 1e6, 1)
    return values


def listening_pids(port: int) -> set[int]:
    """The processes listening on TCP ``port`` (any address), found through /proc."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    pids: set[int] = set()
    if not inodes:
        return pids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        pids.add(int(entry.name))
                        break
    return pids


def broker_pids() -> set[int]:
    """The broker we measure against (the node on the AMQP port, its children, and epmd)."""
    port = urllib.parse.urlsplit(AMQP_URL.split(",")[0]).port or 5672
    node = listening_pids(port)
    pids = set(node)
    for pid in node:
        pids.update(descendants(pid))
    pids.update(listening_pids(4369))  # epmd
    return pids


class ForeignCpu:
    """CPU used while a measurement runs: by processes that are neither the bench's nor the
    broker's (another workload on the machine disturbs the figures), and by the broker and
    each program the bench started (where the machine's CPU went).

    /proc is read every :attr:`INTERVAL` seconds from a thread, so programs that exit before
    the end (wrk, a bare client) still count, but for their last fraction of a second.
    """

    #: Set once by the bench: CPU of the broker we measure against is part of the figure.
    broker: frozenset[int] = frozenset()
    #: Set by the bench: servers whose processes, the ones they start meanwhile too, do the
    #: measured work beside the broker (PostgreSQL's, for phase h).
    servers: frozenset[int] = frozenset()
    INTERVAL = 0.25

    def __init__(self) -> None:
        self._start = proc_stats()
        self._latest = dict(self._start)
        self._ours: set[int] = set()
        self._served: set[int] = set(self.servers)
        self._started = time.monotonic()
        self._elapsed: float | None = None
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="cpu-sampler", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._read()

    def _read(self) -> None:
        stats = proc_stats()
        self._ours.update(descendants(os.getpid(), stats))
        for server in self.servers:
            self._served.update(descendants(server, stats))
        self._latest.update(stats)

    def _used(self) -> dict[int, float]:
        """Cores each process used since construction (the sampler stops at the first call)."""
        if self._elapsed is None:
            self._stop.set()
            self._sampler.join()
            self._read()
            self._elapsed = max(1e-3, time.monotonic() - self._started)
        hz = os.sysconf("SC_CLK_TCK")
        used: dict[int, float] = {}
        for pid, stat in self._latest.items():
            start = self._start.get(pid)
            spent = stat.ticks - (start.ticks if start else 0)
            if spent > 0:
                used[pid] = spent / hz / self._elapsed
        return used

    def cores(self) -> tuple[float, str]:
        """Cores' worth of foreign CPU since construction, and the biggest consumer."""
        used = self._used()
        foreign = {
            pid: cores
            for pid, cores in used.items()
            if pid != os.getpid()
            and pid not in self._ours
            and pid not in self.broker
            and pid not in self._served
        }
        if not foreign:
            return 0.0, ""
        top = max(foreign, key=lambda pid: foreign[pid])
        name = self._latest[top].command
        return round(sum(foreign.values()), 2), f"{name} (pid {top}) {foreign[top]:.2f} cores"

    def measured(self, labels: Mapping[int, str] | None = None) -> dict[str, float]:
        """Cores used since construction by the broker and by each program the bench started,
        the bench itself aside: by ``labels[pid]`` where given, else by command name (the
        ingress or a bare client is ``python``)."""
        used = self._used()
        labels = labels or {}
        by_name: dict[str, float] = {}
        for pid, cores in used.items():
            if pid in self.broker:
                name = "broker"
            elif pid in labels:
                name = labels[pid]
            elif pid in self._ours:
                name = self._latest[pid].command
            else:
                continue
            by_name[name] = by_name.get(name, 0.0) + cores
        return {name: round(c, 2) for name, c in sorted(by_name.items()) if c >= 0.01}


class BrokerLog:
    """What the broker logged about alarms and node stops while a measurement ran.

    Reads the RabbitMQ log files (``$RABBITMQ_LOG``, else /var/log/rabbitmq/*.log) from where
    they ended at construction; a log that cannot be read is skipped.
    """

    _WORTH = re.compile(
        r"alarm set|alarm cleared|Stopping RabbitMQ|Starting RabbitMQ|Successfully stopped"
        r"|stop_app|Connection blocked",
        re.IGNORECASE,
    )

    def __init__(self) -> None:
        configured = os.environ.get("RABBITMQ_LOG")
        paths = (
            [Path(configured)] if configured else sorted(Path("/var/log/rabbitmq").glob("*.log"))
        )
        self._offsets: dict[Path, int] = {}
        for path in paths:
            with contextlib.suppress(OSError):
                self._offsets[path] = path.stat().st_size

    def events(self, limit: int = 12) -> list[str]:
        found: list[str] = []
        for path, offset in self._offsets.items():
            with contextlib.suppress(OSError), path.open("rb") as log:
                log.seek(offset)
                for raw in log.read(50_000_000).splitlines():
                    line = raw.decode("utf-8", "replace")
                    if self._WORTH.search(line):
                        found.append(" ".join(line.split()[1:2] + line.split()[4:])[:160])
        return found[:limit]


def uses_uvloop(pids: Sequence[int]) -> bool:
    """Whether any of the processes has uvloop's extension loaded."""
    for pid in pids:
        with contextlib.suppress(OSError):
            if "uvloop" in Path(f"/proc/{pid}/maps").read_text():
                return True
    return False


def http_status(
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 2.0,
) -> int | None:
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def signed_post_status(url: str, body: bytes) -> int | None:
    return http_status(
        url,
        body=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, KEY)},
    )


def run_async(coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a broker chore to completion, bounded."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


# -- the broker -------------------------------------------------------------------------


def sink_queue(names: Names) -> str:
    """The quorum queue that takes every event while nothing else is bound (as an app's would)."""
    return f"{names.prefix}.sink"


async def broker_version() -> dict[str, str]:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        transport = connection.transport
        properties = transport.connection.server_properties if transport else {}
        return {
            k: v.decode() if isinstance(v, bytes) else str(v)
            for k, v in properties.items()
            if k in ("product", "version", "platform")
        }


async def setup(names: Names) -> None:
    """Declare the router's topology and the sink (not bound yet)."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await topology.declare(channel, names)
        queue = await channel.declare_queue(
            sink_queue(names), durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
        )
        await queue.purge()


async def bind_sink(names: Names, bound: bool) -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(sink_queue(names))
        if bound:
            await queue.bind(names.events_exchange, "#")
        else:
            await queue.unbind(names.events_exchange, "#")


async def purge(*queues: str) -> int:
    """Purge queues that exist (a missing one is skipped); how many messages went."""
    purged = 0
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        for name in queues:
            channel = await connection.channel()
            try:
                queue = await channel.get_queue(name)
                result = await queue.purge()
                purged += result.message_count or 0
            except aio_pika.exceptions.ChannelClosed:
                continue
            with contextlib.suppress(Exception):
                await channel.close()
    return purged


async def depth(name: str) -> int:
    """Ready messages in a queue (not the unacknowledged ones)."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0


async def delete_namespace(names: Names, apps: Sequence[str], delays_ms: Sequence[int]) -> None:
    """Delete every queue and exchange of the bench namespace; each deletion on its own."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        queues = [
            sink_queue(names),
            names.unrouted_queue,
            names.invalid_queue,
            names.archive_stream,
        ]
        exchanges = [
            names.ingress_exchange,
            names.events_exchange,
            names.unrouted_exchange,
            names.control_exchange,
        ]
        for app in apps:
            queues += [names.app_queue(app), names.app_dead_letter_queue(app)]
            queues += [names.app_retry_queue(app, d) for d in delays_ms]
            exchanges += [
                names.app_dead_letter_exchange(app),
                names.app_requeue_exchange(app),
                names.app_retry_exchange(app),
            ]
        for kind, items in (("queue", queues), ("exchange", exchanges)):
            for item in items:
                channel = await connection.channel()
                with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                    if kind == "queue":
                        await channel.queue_delete(item)
                    else:
                        await channel.exchange_delete(item)
                with contextlib.suppress(Exception):
                    await channel.close()


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


__all__ = [
    "ADMIN_TOKEN",
    "AMQP_URL",
    "APP",
    "KEY",
    "SENT_AT",
    "SEQ",
    "WARMUP",
    "BenchError",
    "Proc",
    "payload_bodies",
    "payload_templates",
]
