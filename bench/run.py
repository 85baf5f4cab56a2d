"""Benchmark suite: the ingress, the worker runtime and their references, in one run.

    python -m bench.run [--quick] [--only a,b,...] [--workers N] [--seconds S] [--repeat K]

Not a test: it prints one table (figures, ratios, targets with PASS/FAIL) and writes the
same as JSON to bench/results/<timestamp>.json and bench/results/latest.json. a, b, d and f
run --repeat times (3; --quick 1), in rounds, and are reported as medians.

a. bare aio-pika publisher, confirms, 64 in flight, no HTTP: the client-side ceiling;
b. the ingress (``attentive-router serve --workers N``, a separate process; N as
   docs/performance.md's Sizing advises: one per core) under wrk at saturation (events/s
   answered 200), and one process (or one per core, when N is one) for comparison;
   and at a steady open-loop 1,000 events/s (the Go loadgen of ../shared/anchors, built with
   its build.sh when missing);
c. end-to-end latency at an open-loop 1,000 events/s (``bench.sender``), from the moment
   the request was due to the worker's handler being called (``bench.e2e_worker:worker``
   under ``attentive-router worker``, claiming its events through the admin API);
d. a no-op worker (the consumers runtime) draining a pre-filled queue, against a bare
   aio-pika consumer (manual ack, the same prefetch) draining the same amount;
e. the peak RSS (VmHWM) of one ingress process after --rss-events events (wrk);
f. the Go reference ingress of ../shared/anchors: saturation and 1,000 events/s;
g. instructions per event, counted by valgrind's callgrind (repeatable where wall-clock
   figures are not): the ingress (one process) answering N webhooks, and the bare aio-pika
   publisher publishing N messages (user space only: not the kernel's share);
h. parked events at incident scale (:mod:`bench.parked_phase`), SQLite and PostgreSQL: the
   keeper draining --dead-letters (100,000; quick 2,000) from one application's DLQ against
   a bare aio-pika consumer, a replay job of them against a bare aio-pika publisher, and
   filtered pages and facets over --parked-entries (1,000,000 over 20 applications; quick
   20,000). It needs PostgreSQL (``ROUTER_BENCH_POSTGRES_URL``, else the local ``test``
   database).
i. the outage machinery's cost (:mod:`bench.flow_phase`): phase d's worker draining with the
   circuit breaker and a rate limit that never waits, against the breaker off and no limit.
j. newest wins' cost (:mod:`bench.newest_phase`): a no-op worker draining with a key family
   against without, its stores in Redis and PostgreSQL, over 10,000 and over 10 subscribers.
k. the archive's cost (:mod:`bench.history_phase`): the ingress with the archive on against
   off (saturation, 1,000 events/s), the stream's bytes on disk per million events, and a
   search of the last 10,000 events of a 200,000- and a 2,000,000-event archive.
l. tracing's cost (:mod:`bench.tracing_phase`): the ingress at saturation as it was before
   tracing, with tracing off, on (every webhook sampled) and at 1 %, its spans exported in
   batches to a local OTLP/HTTP endpoint.
m. the ordering headers' cost (:mod:`bench.ordering_phase`): the ingress at saturation as it
   was before every event carried its subject key and event time, against this checkout.

Every figure uses the same broker and the same realistic signed payloads (all 11 types x 4
companies, about 1 KiB), in a fresh namespace (``bench-<uuid>``) deleted afterwards. Every
process it starts it stops; every wait is bounded.

Exit status: 0 when every figure asked for was measured, whatever the targets say; 1 when one
could not be (the broker unreachable, a run that failed: said on stderr, one line each); a
figure whose tool is missing (the Go anchors, valgrind) is skipped, not failed; 2 for wrong
usage (one line, nothing run); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from yarl import URL

from bench import (
    callgrind,
    flow_phase,
    history_phase,
    newest_phase,
    ordering_phase,
    parked_phase,
    report,
    tracing_phase,
)
from bench.common import (
    ADMIN_TOKEN,
    AMQP_URL,
    APP,
    COMPANIES,
    GO_INGRESS,
    GO_SINK,
    KEY,
    PAYLOAD_BYTES,
    BenchError,
    BrokerLog,
    ForeignCpu,
    Proc,
    Unavailable,
    bench_env,
    bind_sink,
    broker_pids,
    broker_version,
    delete_namespace,
    free_port,
    http_status,
    median,
    memory_mb,
    payload_bodies,
    purge,
    python_argv,
    run_async,
    setup,
    signed_post_status,
    sink_queue,
    summarize_ms,
    uses_uvloop,
    wait_until,
)
from bench.loads import (
    WrkResult,
    build_anchors,
    run_client,
    run_hey,
    run_loadgen,
    run_wrk,
    wrk_script,
)
from consumers.runtime.retry import RetryPolicy
from router.admin.client import AdminClient
from router.cli.main import OneLineParser
from router.contract.events import EVENT_TYPES
from router.contract.names import WEBHOOK_PATH, Names

PHASES = "abcdefghijklm"
RESULTS = Path(__file__).resolve().parent / "results"
#: Webhooks (or messages) in flight while callgrind counts (phases g and m).
CALLGRIND_IN_FLIGHT = 16
UVLOOP_INSTALLED = importlib.util.find_spec("uvloop") is not None


@dataclass(frozen=True, slots=True)
class Config:
    only: str
    quick: bool
    workers: int
    seconds: float
    warmup: float
    repeat: int
    connections: int
    rate: int
    drain_events: int
    rss_events: int
    rss_max_seconds: float
    callgrind_events: int
    prefetch: int
    client_loop: str
    results_dir: Path
    dead_letters: int = 100_000
    parked_entries: int = 1_000_000


def _number(
    kind: type[int] | type[float], fits: Callable[[float], bool], rule: str
) -> Callable[[str], int | float]:
    """An argparse type: a number of ``kind`` that ``fits`` (``rule`` says how)."""

    def number(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not fits(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text}")
        return value

    return number


COUNT = _number(int, lambda v: v >= 1, ">= 1")
SECONDS = _number(float, lambda v: v > 0, "> 0")
SECONDS_OR_ZERO = _number(float, lambda v: v >= 0, ">= 0")


def parse_args(argv: list[str] | None) -> Config:
    parser = OneLineParser(
        prog="python -m bench.run",
        description="The ingress and worker benchmark suite (see bench/run.py).",
    )
    parser.add_argument("--quick", action="store_true", help="short durations: a smoke run")
    parser.add_argument("--only", default=",".join(PHASES), help="phases to run, e.g. a,b,f")
    parser.add_argument(
        "--workers",
        type=COUNT,
        default=None,
        help="ingress processes (serve --workers); default as docs/performance.md (Sizing): one "
        "per core; b also measures one process (or one per core, when --workers is 1) for "
        "comparison",
    )
    parser.add_argument("--seconds", type=SECONDS, help="measured seconds per run (10; quick 2)")
    parser.add_argument("--warmup", type=SECONDS_OR_ZERO, help="warm-up seconds (2; quick 1)")
    parser.add_argument(
        "--repeat",
        type=COUNT,
        help="rounds of saturation and 1,000/s runs, reported as medians (3, as the issue's "
        "figures; quick 1)",
    )
    parser.add_argument("--connections", type=COUNT, default=64, help="wrk connections, in flight")
    parser.add_argument("--rate", type=COUNT, default=1000, help="open-loop events/s (b, c, f)")
    parser.add_argument(
        "--drain-events", type=COUNT, help="pre-filled events (50,000; quick 5,000)"
    )
    parser.add_argument("--rss-events", type=COUNT, help="events for RSS (1,000,000; quick 20,000)")
    parser.add_argument("--rss-max-seconds", type=SECONDS, default=1800, help="bound of phase e")
    parser.add_argument(
        "--callgrind-events", type=COUNT, help="events counted in g (2,000; quick 400)"
    )
    parser.add_argument("--prefetch", type=COUNT, default=256, help="worker and consumer prefetch")
    parser.add_argument(
        "--dead-letters", type=COUNT, help="h: dead letters to drain and replay (100,000; quick 2k)"
    )
    parser.add_argument(
        "--parked-entries", type=COUNT, help="h: entries queried (1,000,000; quick 20,000)"
    )
    parser.add_argument(
        "--client-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop of the bare clients; auto: the one the ingress (a) / worker (d) uses",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    only = "".join(p for p in PHASES if p in args.only.replace(",", "").replace(" ", ""))
    unknown = set(args.only.replace(",", "").replace(" ", "")) - set(PHASES)
    if unknown or not only:
        parser.error(f"--only takes letters of {','.join(PHASES)}")
    if args.client_loop == "uvloop" and not UVLOOP_INSTALLED:
        parser.error("--client-loop uvloop: uvloop is not installed")
    workers = args.workers if args.workers is not None else sizing_workers()
    quick = args.quick
    repeat = args.repeat if args.repeat is not None else (1 if quick else 3)
    return Config(
        only=only,
        quick=quick,
        workers=workers,
        seconds=args.seconds or (2.0 if quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if quick else 2.0),
        repeat=repeat,
        connections=args.connections,
        rate=args.rate,
        drain_events=args.drain_events or (5_000 if quick else 50_000),
        rss_events=args.rss_events or (20_000 if quick else 1_000_000),
        rss_max_seconds=args.rss_max_seconds,
        # hey sends a multiple of its 16 connections
        callgrind_events=-(-(args.callgrind_events or (400 if quick else 2_000)) // 16) * 16,
        prefetch=args.prefetch,
        client_loop=args.client_loop,
        results_dir=args.results_dir,
        dead_letters=args.dead_letters or (2_000 if quick else 100_000),
        parked_entries=args.parked_entries or (20_000 if quick else 1_000_000),
    )


def sizing_workers() -> int:
    """Ingress processes as docs/performance.md (Sizing) says: one per core, even beside a broker on
    this machine (on two cores beside it, two processes answered about as many events as one
    where the broker was the limit, and up to a fifth more where Python was)."""
    return os.cpu_count() or 1


def compared_workers(workers: int) -> int | None:
    """The other process count phase b measures: one per core, or one when ``workers`` is
    one per core already; None on a one-core machine."""
    cores = os.cpu_count() or 1
    other = cores if workers != cores else 1
    return other if other != workers else None


def webhook_url(port: int) -> str:
    """Where an ingress on this machine (ours or Go's) takes webhooks."""
    return f"http://127.0.0.1:{port}{WEBHOOK_PATH}"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_busy_percent(seconds: float = 1.0) -> float:
    """How busy all CPUs were over ``seconds`` (the bench itself idle meanwhile)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return round(100 * (1 - (idle1 - idle0) / max(1, total1 - total0)), 1)


def rabbitmqctl(*args: str) -> str | None:
    """What ``rabbitmqctl -q ARGS`` printed; None when it could not run or failed (a broker on
    another machine, no rabbitmqctl here)."""
    try:
        return subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def broker_backlog() -> dict[str, int] | None:
    """Queues at the broker holding messages before the run (a backlog of millions slows a
    quorum-queue broker down: seen here after a forgotten profiling run). None: not known."""
    listed = rabbitmqctl("list_queues", "name", "messages", "--no-table-headers")
    if listed is None:
        return None
    backlog = {}
    for line in listed.splitlines():
        name, _, count = line.rpartition("\t")
        if count.isdigit() and int(count) > 0:
            backlog[name] = int(count)
    return backlog


#: Rolls the quorum queues' write-ahead log over, then waits until the segment writer has
#: taken the old one (ra's own processes, as RabbitMQ 3.10 names them).
_FRESH_WAL = (
    "ok = ra_log_wal:force_roll_over(ra_log_wal), timer:sleep(200), "
    "ra_log_segment_writer:await(ra_log_segment_writer)."
)


def start_fresh_wal() -> bool:
    """Give the next measured run a fresh write-ahead log at the broker. RabbitMQ rolls it
    over every 512 MiB (about 400,000 events here) and then writes what quorum queues still
    hold to segment files: a 10 s run that included that was 5-10 % slower (broker CPU per
    event 111-114 µs against 94-96), whichever program it measured. Rolled over before each
    run, none includes one, and the runs compared are alike. False: rabbitmqctl could not
    do it (a broker on another machine)."""
    return rabbitmqctl("eval", _FRESH_WAL) is not None


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def median_of(samples: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, Any]:
    """The median of each field over the samples (error counts summed), and the samples."""
    merged: dict[str, Any] = {
        field: round(median([s[field] for s in samples]), 3)
        for field in fields
        if all(isinstance(s.get(field), int | float) for s in samples)
    }
    for field in ERROR_COUNTS:
        if all(field in s for s in samples):
            merged[field] = sum(s[field] for s in samples)
    merged["samples"] = samples
    return merged


WRK_FIELDS = ("ok_per_s", "p50_ms", "p99_ms", "max_ms")
#: What the anchors' open-loop generator measures, as medians of repeated runs.
LOADGEN_FIELDS = ("p50_ms", "p99_ms", "max_ms", "achieved_rps", "svc_p50_ms", "svc_p99_ms")
#: Failures counted by wrk and by the load generator: summed over repeated runs.
ERROR_COUNTS = ("non_2xx", "socket_errors", "non2xx", "errors")
#: Messages other queues may hold before the run before the figures are flagged.
BACKLOG_LIMIT = 100_000
#: Cores' worth of CPU other processes may use during a measurement before it is flagged.
FOREIGN_CPU_LIMIT = 0.15


class Bench:
    def __init__(self, config: Config, tmp: Path) -> None:
        self.config = config
        self.tmp = tmp
        self.names = Names(f"bench-{uuid.uuid4().hex[:12]}")
        self.bodies = payload_bodies(PAYLOAD_BYTES)
        self.script = wrk_script(self.bodies, tmp)
        self.stack = contextlib.ExitStack()
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []
        self.ingress: Proc | None = None
        self.ingress_port = 0
        self.admin_port = 0
        self.go: Proc | None = None
        self.go_port = 0
        self.go_used = False
        self.sink_bound = False
        self.claimed = False
        self.uvloop: dict[str, Any] = {}
        self.anchors_problem: str | None = None
        self.wal_note = False
        self.started = time.monotonic()

    # -- processes -------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, argv, self.tmp / f"{name}.log", env)
        self.stack.callback(proc.stop)
        return proc

    def start_ingress(
        self,
        name: str,
        workers: int | None = None,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> tuple[Proc, int, int]:
        """``attentive-router serve`` with the admin API, ready and answering a signed event;
        ``prefix`` runs it under another program (callgrind); ``env``: more variables."""
        workers = workers or self.config.workers
        port, admin_port, internal_port = free_port(), free_port(), free_port()
        env = bench_env(
            ROUTER_SIGNING_KEYS=KEY,
            ROUTER_INTERNAL_PORT=str(internal_port),
            ROUTER_AMQP_URL=AMQP_URL,
            ROUTER_ADMIN_TOKEN=ADMIN_TOKEN,
            ROUTER_DATABASE_URL=f"sqlite:///{self.tmp / f'{name}-claims.db'}",
            ROUTER_NAMESPACE=self.names.prefix,
            ROUTER_LOG_FORMAT="json",
            **(env or {}),
        )
        argv = [
            *prefix,
            *python_argv(
                *("-m", "router", "serve", "--host", "127.0.0.1", "--port", str(port)),
                *("--admin-port", str(admin_port), "--workers", str(workers)),
            ),
        ]
        proc = self.spawn(name, argv, env)

        def is_ready() -> bool:  # (the internal listener's /readyz speaks for every process)
            proc.check_alive()
            return http_status(f"http://127.0.0.1:{internal_port}/readyz", timeout=1) == 200

        timeout = 300 if prefix else 60  # callgrind runs it about 50 times slower
        wait_until(f"{name} to be ready", is_ready, timeout=timeout, interval=0.1)
        admin = http_status(
            f"http://127.0.0.1:{admin_port}/admin/claims",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        status = signed_post_status(webhook_url(port), self.bodies[0])
        if admin != 200 or status != 200:
            raise BenchError(f"{name}: admin API answered {admin}, a signed event {status}")
        return proc, port, admin_port

    def ensure_ingress(self, name: str = "ingress") -> Proc:
        if self.ingress is None or not self.ingress.alive():
            say(f"starting the ingress ({name}): serve --workers {self.config.workers}")
            self.ingress, self.ingress_port, self.admin_port = self.start_ingress(name)
            self.uvloop["ingress"] = "yes" if uses_uvloop(self.ingress.pids()) else "no"
        return self.ingress

    def stop_ingress(self) -> None:
        if self.ingress is not None:
            self.ingress.stop()
            self.ingress = None

    @property
    def url(self) -> str:
        return webhook_url(self.ingress_port)

    def ensure_go(self) -> Proc:
        if self.go is None or not self.go.alive():
            if self.anchors_problem:
                raise Unavailable(f"the Go reference is not built: {self.anchors_problem}")
            say("starting the Go reference ingress")
            self.go_port = free_port()
            argv = [str(GO_INGRESS), "-port", str(self.go_port), "-key", KEY, "-amqp", AMQP_URL]
            self.go = self.spawn("go-ingress", argv, bench_env())
            self.go_used = True
            go = self.go

            def answers() -> bool:
                go.check_alive()
                return signed_post_status(self.go_url, self.bodies[0]) == 200

            wait_until("the Go ingress to answer 200", answers, timeout=30, interval=0.2)
        return self.go

    @property
    def go_url(self) -> str:
        return webhook_url(self.go_port)

    def start_worker(self, target: str, name: str, **extra: str) -> Proc:
        env = bench_env(
            ROUTER_ADMIN_URL=f"http://127.0.0.1:{self.admin_port}",
            ROUTER_ADMIN_TOKEN=ADMIN_TOKEN,
            ROUTER_AMQP_URL=AMQP_URL,
            ROUTER_NAMESPACE=self.names.prefix,
            ROUTER_LOG_FORMAT="json",
            **extra,
        )
        argv = python_argv(
            "-m", "router", "worker", target, "--prefetch", str(self.config.prefetch)
        )
        return self.spawn(name, argv, env)

    def client_loop(self, process: str) -> str:
        """The bare clients' event loop: as asked, or (auto) the one ``process`` runs."""
        if self.config.client_loop != "auto":
            return self.config.client_loop
        return "uvloop" if self.uvloop.get(process) == "yes" and UVLOOP_INSTALLED else "asyncio"

    # -- the broker ------------------------------------------------------------------

    def set_sink(self, bound: bool) -> None:
        if self.sink_bound != bound:
            run_async(bind_sink(self.names, bound))
            self.sink_bound = bound

    def fresh_wal(self) -> None:
        """Before each measured run (not warm-ups): see :func:`start_fresh_wal`."""
        if not start_fresh_wal() and not self.wal_note:
            self.wal_note = True
            self.notes.append(
                "the broker's write-ahead log could not be rolled over before the measured "
                "runs (rabbitmqctl): a run may include a roll-over, 5-10 % slower"
            )

    def purge_sink(self) -> None:
        run_async(purge(sink_queue(self.names)))

    def claim(self) -> None:
        async def grant() -> None:
            async with AdminClient(f"http://127.0.0.1:{self.admin_port}", ADMIN_TOKEN) as admin:
                answer = await admin.add_claims(APP, ["*"])
                if not answer.granted:
                    raise BenchError(f"claim of * refused: {answer.conflicts}")

        run_async(grant())
        self.claimed = True

    def release(self) -> None:
        async def release() -> None:
            async with AdminClient(f"http://127.0.0.1:{self.admin_port}", ADMIN_TOKEN) as admin:
                for claim in await admin.list_claims(APP):
                    await admin.remove_claim(int(claim["id"]))

        run_async(release())
        self.claimed = False

    # -- running ---------------------------------------------------------------------

    def attempt(self, label: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        say(label)
        watch, broker_log = ForeignCpu(), BrokerLog()
        try:
            result = action()
            cores, top = watch.cores()
            result["foreign_cpu_cores"] = cores
            alarms = broker_log.events()
            if alarms:
                result["broker_events"] = alarms
                self.notes.append(
                    f"{label}: the broker logged {len(alarms)} alarm/stop events meanwhile "
                    f"(first: {alarms[0]}): the figure is disturbed"
                )
            if cores >= FOREIGN_CPU_LIMIT:
                self.notes.append(
                    f"{label}: other processes used {cores} cores meanwhile (top: {top}): "
                    "the figure is disturbed"
                )
            return result
        except Exception as error:
            say(f"{label}: FAILED: {error}")
            if not isinstance(error, BenchError):
                traceback.print_exc()
            detail = str(error).strip() or repr(error)
            failure = {"error": one_line(error)[:300], "detail": detail[:3000]}
            return {**failure, "unavailable": True} if isinstance(error, Unavailable) else failure

    def run(self) -> None:
        config, only = self.config, self.config.only
        self.results["machine"] = self.machine()
        ForeignCpu.broker = frozenset(broker_pids())
        if "h" in only:  # phase h measures PostgreSQL's work too, as every phase the broker's
            ForeignCpu.servers = frozenset(parked_phase.database_pids())
        self.results["machine"]["broker_pids"] = sorted(ForeignCpu.broker)
        run_async(setup(self.names))
        if "b" in only or "f" in only:
            self.anchors_problem = build_anchors(self.tmp / "anchors-build.log")
            if self.anchors_problem:
                say(f"the anchors could not be built: {self.anchors_problem}")
                self.notes.append(f"Go anchors not built: {self.anchors_problem}")
        if any(p in only for p in "bcd") or ("a" in only and config.client_loop == "auto"):
            try:
                self.ensure_ingress()
            except BenchError as error:  # each phase that needs it tries again and says why
                say(f"the ingress did not start: {error}")
        if "a" in only or "b" in only or "f" in only:
            self.group_publish()
        if "c" in only or "d" in only:
            self.group_consume()
        if "i" in only:
            self.results["i"] = flow_phase.measure(self)
        if "j" in only:
            self.results["j"] = newest_phase.measure(self)
        if "k" in only:
            self.results["k"] = history_phase.measure(self)
        if "l" in only:
            self.results["l"] = tracing_phase.measure(self)
        if "m" in only:
            self.results["m"] = ordering_phase.measure(self)
        self.stop_ingress()
        if "e" in only:
            self.results["e"] = self.attempt("e: ingress peak RSS", self.phase_e)
        if "g" in only:
            self.results["g"] = self.attempt("g: instructions per event", self.phase_g)
        if "h" in only:
            self.results["h"] = self.attempt("h: parked events", self.phase_h)

    def group_publish(self) -> None:
        """a, b and f with every event going to the sink queue (purged between runs)."""
        config, only = self.config, self.config.only
        self.set_sink(True)
        self.purge_sink()
        bare: list[dict[str, Any]] = []
        ingress: list[dict[str, Any]] = []
        go: list[dict[str, Any]] = []
        for k in range(config.repeat):
            tag = f" (run {k + 1}/{config.repeat})" if config.repeat > 1 else ""
            if "a" in only:
                bare.append(self.in_round(k, "a: bare aio-pika publisher" + tag, self.phase_a))
            if "b" in only:
                saturate = functools.partial(self.saturate, k)
                ingress.append(self.in_round(k, "b: ingress at saturation" + tag, saturate))
            if "f" in only:
                go_saturate = functools.partial(self.go_saturate, k)
                go.append(self.in_round(k, "f: Go at saturation" + tag, go_saturate))
        if "a" in only:
            self.results["a"] = self.merge(bare, ("msgs_per_s", "p50_ms", "p99_ms", "max_ms"))
            self.results["a"]["loop"] = self.client_loop("ingress")
        if "b" in only:
            self.results["b"] = {"saturation": self.merge(ingress, WRK_FIELDS)}
            other = compared_workers(config.workers)
            if other is not None:
                compared = self.attempt(
                    f"b: ingress, {other} process{'es' * (other > 1)}, compared",
                    functools.partial(self.measure_compared, other),
                )
                # (a failure leaves its error where the saturation figure would be)
                self.results["b"]["saturation_compared"] = compared.pop("saturation", compared)
                if "fixed_rate" in compared:
                    self.results["b"]["fixed_rate_compared"] = compared["fixed_rate"]
            self.results["b"]["fixed_rate"] = self.repeated(
                "b: ingress at a fixed rate (loadgen)", self.fixed_rate, LOADGEN_FIELDS
            )
        if "f" in only:
            self.results["f"] = {
                "saturation": self.merge(go, WRK_FIELDS),
                "fixed_rate": self.repeated(
                    "f: Go at a fixed rate (loadgen)", self.go_fixed_rate, LOADGEN_FIELDS
                ),
            }
            if self.go is not None:
                self.results["f"]["memory_mb"] = memory_mb(self.go.pid)
                self.go.stop()
            with contextlib.suppress(Exception):
                run_async(purge(GO_SINK))

    def in_round(self, k: int, label: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """:meth:`attempt`, its sample marked with round ``k``: the report sets side by side
        the runs of one round, measured within a minute of each other (report.evaluate)."""
        return {**self.attempt(label, action), "round": k}

    def repeated(
        self, label: str, action: Callable[[], dict[str, Any]], fields: tuple[str, ...]
    ) -> dict[str, Any]:
        """``action`` run ``--repeat`` times, as medians (the issue's figures are medians of 3)."""
        repeat = self.config.repeat
        return self.merge(
            [
                self.attempt(label + (f" (run {k + 1}/{repeat})" if repeat > 1 else ""), action)
                for k in range(repeat)
            ],
            fields,
        )

    def merge(self, samples: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, Any]:
        good = [s for s in samples if "error" not in s]
        if not good:
            return samples[0] if samples else {"error": "not run"}
        merged = median_of(good, fields)
        if len(good) < len(samples):
            merged["failed_runs"] = [s["error"] for s in samples if "error" in s]
        for key in ("loop", "messages", "seconds"):
            if key in good[0] and key not in merged:
                merged[key] = good[0][key]
        return merged

    def phase_a(self) -> dict[str, Any]:
        config = self.config
        self.fresh_wal()
        watch = ForeignCpu()  # the client's start-up and warm-up are in this window too
        result = run_client(
            [
                *("publish", "--exchange", self.names.events_exchange),
                *("--seconds", str(config.seconds), "--warmup", str(config.warmup)),
                *("--in-flight", str(config.connections)),
            ],
            loop=self.client_loop("ingress"),
            timeout=config.seconds + config.warmup + 120,
        )
        result["cpu_cores"] = watch.measured()
        self.purge_sink()
        return result

    def saturate(self, run: int) -> dict[str, Any]:
        self.ensure_ingress()
        return self.wrk_saturation(self.url, warm_up=run == 0, empty=self.purge_sink)

    def measure_compared(self, workers: int) -> dict[str, Any]:
        """Saturation, then the fixed rate (``--repeat`` times, warmed up by the saturation
        run), with another process count than --workers: the figures behind Sizing. The
        measured ingress idles meanwhile, and stays warm for the phases after: a new
        process's first seconds are slower (saturation p99 35-62 ms in its first 10 s, 12-13
        after, here; its first full garbage collection takes 10-14 ms)."""
        name = f"ingress-{workers}proc"
        say(f"starting the ingress ({name}): serve --workers {workers}")
        other, port, _ = self.start_ingress(name, workers=workers)
        try:
            url = webhook_url(port)
            saturation = self.wrk_saturation(url, warm_up=True, empty=self.purge_sink)
            fixed = self.repeated(
                f"b: ingress at a fixed rate (loadgen), {name}",
                functools.partial(self.fixed_rate, url),
                LOADGEN_FIELDS,
            )
        finally:
            other.stop()
        return {
            "saturation": {**saturation, "processes": workers},
            "fixed_rate": {**fixed, "processes": workers},
        }

    def wrk_saturation(
        self, url: str, *, warm_up: bool, empty: Callable[[], object]
    ) -> dict[str, Any]:
        """wrk at saturation (after a warm-up if asked), with the CPU each program used;
        ``empty`` empties the sink after the warm-up and after the measurement."""
        config = self.config
        if warm_up:
            run_wrk(url, self.script, config.warmup, config.connections)
            empty()
        self.fresh_wal()
        watch = ForeignCpu()
        result = run_wrk(url, self.script, config.seconds, config.connections)
        cpu = watch.measured()
        empty()
        return {**result.as_dict(), "cpu_cores": cpu}

    def fixed_rate(self, url: str | None = None) -> dict[str, Any]:
        """The open-loop fixed rate against ``url`` (by default the measured ingress)."""
        if self.anchors_problem:
            raise Unavailable(f"loadgen is not built: {self.anchors_problem}")
        if url is None:
            self.ensure_ingress()
            url = self.url
        config = self.config
        self.fresh_wal()
        result = run_loadgen(
            url, self.bodies[0], config.rate, config.seconds, config.warmup, self.tmp
        )
        self.purge_sink()
        return result

    def go_saturate(self, run: int) -> dict[str, Any]:
        self.ensure_go()
        return self.wrk_saturation(
            self.go_url, warm_up=run == 0, empty=lambda: run_async(purge(GO_SINK))
        )

    def go_fixed_rate(self) -> dict[str, Any]:
        self.ensure_go()
        config = self.config
        self.fresh_wal()
        result = run_loadgen(
            self.go_url, self.bodies[0], config.rate, config.seconds, config.warmup, self.tmp
        )
        run_async(purge(GO_SINK))
        return result

    def group_consume(self) -> None:
        """c and d: the application ``bench`` claims ``*``; the sink is unbound meanwhile."""
        only = self.config.only
        try:
            self.ensure_ingress()
            self.set_sink(False)
            self.claim()
        except Exception as error:
            for phase in "cd":
                if phase in only:
                    self.results[phase] = {"error": f"set-up failed: {error}"}
            return
        try:
            if "c" in only:
                self.results["c"] = self.attempt("c: end-to-end latency", self.phase_c)
            if "d" in only:
                self.results["d"] = self.phase_d()
        finally:
            with contextlib.suppress(Exception):
                self.release()

    def app_queue(self) -> str:
        return self.names.app_queue(APP)

    def phase_c(self) -> dict[str, Any]:
        config = self.config
        out = self.tmp / "e2e-latencies.txt"
        out.touch()
        worker = self.start_worker("bench.e2e_worker:worker", "e2e-worker", BENCH_E2E_OUT=str(out))
        try:
            self.wait_consuming(worker)
            self.uvloop["worker"] = "yes" if uses_uvloop(worker.pids()) else "no"
            self.fresh_wal()
            sender_loop = "uvloop" if UVLOOP_INSTALLED else "asyncio"
            ingress = self.ensure_ingress()
            labels = {pid: "ingress" for pid in ingress.pids()}
            labels.update({pid: "worker" for pid in worker.pids()})
            watch = ForeignCpu()
            sender = run_client(
                [
                    *("send", "--url", self.url, "--rate", str(config.rate)),
                    *("--seconds", str(config.seconds), "--warmup", str(config.warmup)),
                ],
                loop=sender_loop,
                timeout=config.seconds + config.warmup + 60,
            )
            cpu = {
                ("sender" if name == "python" else name): cores
                for name, cores in watch.measured(labels).items()
            }
            expected = int(sender["statuses"].get("200", 0))

            def lines() -> int:
                return out.read_bytes().count(b"\n")

            with contextlib.suppress(BenchError):
                wait_until("the worker to handle every event", lambda: lines() >= expected, 30)
        finally:
            worker.stop()
        latencies = [float(line.split()[1]) for line in out.read_text().splitlines() if line]
        run_async(purge(self.app_queue()))
        return {
            **summarize_ms(latencies),
            "lost": max(0, expected - len(latencies)),
            "sender": sender,
            "sender_loop": sender_loop,
            "cpu_cores": cpu,  # where the machine's CPU went while the sender sent
            "events_per_s": config.rate,
        }

    def wait_consuming(self, worker: Proc) -> None:
        def consuming() -> bool:
            worker.check_alive()
            return b'"worker_consuming"' in worker.log.read_bytes()

        wait_until("the worker to consume", consuming, timeout=60, interval=0.1)

    def phase_d(self) -> dict[str, Any]:
        config = self.config
        n = config.drain_events
        workers: list[dict[str, Any]] = []
        bares: list[dict[str, Any]] = []
        for k in range(config.repeat):
            tag = f" (run {k + 1}/{config.repeat})" if config.repeat > 1 else ""
            workers.append(self.in_round(k, f"d: worker draining {n:,}" + tag, self.drain_worker))
            bares.append(
                self.in_round(k, f"d: bare consumer draining {n:,}" + tag, self.drain_bare)
            )
        return {
            "worker": self.merge(workers, ("msgs_per_s", "seconds")),
            "bare": self.merge(bares, ("msgs_per_s", "seconds")),
        }

    def prefill(self) -> dict[str, Any]:
        n = self.config.drain_events
        run_async(purge(self.app_queue()))
        return run_client(
            [
                *("prefill", "--exchange", self.names.events_exchange),
                *("--queue", self.app_queue(), "--count", str(n)),
            ],
            loop="uvloop" if UVLOOP_INSTALLED else "asyncio",
            timeout=n / 200 + 120,
        )

    def drain_worker(self) -> dict[str, Any]:
        n = self.config.drain_events
        self.prefill()
        out = self.tmp / f"drain-{uuid.uuid4().hex[:6]}.json"
        worker = self.start_worker(
            "bench.e2e_worker:drain_worker",
            "drain-worker",
            BENCH_DRAIN_EXPECT=str(n),
            BENCH_DRAIN_OUT=str(out),
        )
        try:

            def done() -> bool:
                worker.check_alive()
                return out.exists()

            wait_until(f"the worker to drain {n:,} events", done, timeout=n / 200 + 60)
            self.uvloop["worker"] = "yes" if uses_uvloop(worker.pids()) else "no"
        finally:
            worker.stop()
        result: dict[str, Any] = json.loads(out.read_text())
        result["loop"] = "uvloop" if self.uvloop.get("worker") == "yes" else "asyncio"
        run_async(purge(self.app_queue()))
        return result

    def drain_bare(self) -> dict[str, Any]:
        n = self.config.drain_events
        self.prefill()
        result = run_client(
            [
                *("consume", "--queue", self.app_queue(), "--count", str(n)),
                *("--prefetch", str(self.config.prefetch), "--timeout", str(n / 200 + 60)),
            ],
            loop=self.client_loop("worker"),
            timeout=n / 200 + 120,
        )
        run_async(purge(self.app_queue()))
        return result

    def phase_e(self) -> dict[str, Any]:
        """A fresh ingress of one process (whatever --workers says: that one process answers
        all of them), driven by wrk rounds until --rss-events were answered 200."""
        config = self.config
        self.set_sink(True)
        self.purge_sink()
        ingress, port, _ = self.start_ingress("ingress-rss", workers=1)
        url = webhook_url(port)
        start = max(memory_mb(pid).get("VmHWM", 0.0) for pid in ingress.pids())
        rate = self.saturation_estimate()
        answered = requests = non2xx = errors = 0
        trend: list[tuple[int, float]] = []
        details: list[dict[str, Any]] = []
        started = time.monotonic()
        rounds = 0
        while answered < config.rss_events:
            elapsed = time.monotonic() - started
            if elapsed > config.rss_max_seconds:
                self.notes.append(
                    f"e: stopped at --rss-max-seconds {config.rss_max_seconds:.0f} "
                    f"with {answered:,} of {config.rss_events:,} events"
                )
                break
            remaining = config.rss_events - answered
            seconds = 3.0 if rate is None else remaining / rate * 1.02 + 1
            # rounds of at most 30 s: the sink is purged between them
            seconds = min(30.0, max(1.0, seconds), config.rss_max_seconds - elapsed + 1)
            at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            result: WrkResult = run_wrk(url, self.script, seconds, config.connections)
            details.append({"at": at, **result.as_dict()})
            rounds += 1
            answered += result.ok
            requests += result.requests
            non2xx += result.non_2xx
            errors += result.socket_errors
            if result.ok_per_s > 0:
                rate = result.ok_per_s
            self.purge_sink()
            ingress.check_alive()
            now = max(memory_mb(pid).get("VmRSS", 0.0) for pid in ingress.pids())
            trend.append((answered, now))
            say(f"e: {answered:,} of {config.rss_events:,} answered 200, RSS {now} MB")
        memory = {str(pid): memory_mb(pid) for pid in ingress.pids()}
        peak = max(m.get("VmHWM", 0.0) for m in memory.values())
        seconds_total = round(time.monotonic() - started, 1)
        ingress.stop()
        return {
            "peak_rss_mb": peak,
            "start_rss_mb": start,
            "answered_200": answered,
            "requests": requests,
            "non_2xx": non2xx,
            "socket_errors": errors,
            "wrk_rounds": rounds,
            "seconds": seconds_total,
            "memory_by_pid": memory,
            "rss_trend_mb": trend,
            "rounds": details,
        }

    def phase_g(self) -> dict[str, Any]:
        """Instructions per event under callgrind, where wall-clock figures vary ±20 %: the
        ingress (one process) answering webhooks and the bare publisher publishing as many."""
        problem = callgrind.available()
        if problem:
            raise Unavailable(problem)
        count, in_flight = self.config.callgrind_events, CALLGRIND_IN_FLIGHT
        ingress_per_event = self.ingress_instructions("ingress-callgrind")
        bare_out = self.tmp / "callgrind.bare"
        run_client(
            [
                *("publish-count", "--exchange", self.names.events_exchange),
                *("--count", str(count), "--in-flight", str(in_flight), "--callgrind"),
            ],
            loop=self.client_loop("ingress"),
            timeout=1800,
            prefix=callgrind.prefix(bare_out),
        )
        bare_total = callgrind.instructions_written(bare_out)
        self.purge_sink()
        return {
            "events": count,
            "in_flight": in_flight,
            "ingress_per_event": ingress_per_event,
            "bare_per_message": round(bare_total / count),
            "loop": self.client_loop("ingress"),
        }

    def ingress_instructions(self, name: str, env: dict[str, str] | None = None) -> int:
        """The instructions one ingress process (``env``: more variables) spends per webhook
        under callgrind, answering ``--callgrind-events`` of one signed body,
        :data:`CALLGRIND_IN_FLIGHT` at a time,
        after a warm-up that is not counted."""
        count, in_flight = self.config.callgrind_events, CALLGRIND_IN_FLIGHT
        self.set_sink(True)
        out = self.tmp / f"callgrind.{name}"
        ingress, port, _ = self.start_ingress(
            name, workers=1, prefix=callgrind.prefix(out), env=env
        )
        try:
            if "ingress" not in self.uvloop:  # the bare client runs on the ingress's loop
                self.uvloop["ingress"] = "yes" if uses_uvloop(ingress.pids()) else "no"
            url = webhook_url(port)
            run_hey(url, self.bodies[0], 20 * in_flight, in_flight, self.tmp)  # warm-up
            callgrind.count(ingress.pid, True)
            answered = run_hey(url, self.bodies[0], count, in_flight, self.tmp)
            callgrind.count(ingress.pid, False)
            total = callgrind.instructions(ingress.pid, out)
        finally:
            ingress.stop()
        self.purge_sink()
        if answered != count:
            raise BenchError(f"the ingress under callgrind answered {answered} of {count} with 200")
        return round(total / count)

    def phase_h(self) -> dict[str, Any]:
        """Parked events (:mod:`bench.parked_phase`), in namespaces of their own."""
        config = self.config
        sizes: dict[str, Any] = {
            "dead_letters": config.dead_letters,
            "entries": config.parked_entries,
            "workdir": self.tmp,
        }
        make = parked_phase.ParkedConfig.quick if config.quick else parked_phase.ParkedConfig
        parked = make(**sizes)
        bound = 3 * parked.bound(config.dead_letters) + parked.bound(config.parked_entries) * 2
        return run_async(parked_phase.measure(parked), timeout=bound)

    def saturation_estimate(self) -> float | None:
        value = self.results.get("b", {}).get("saturation", {}).get("ok_per_s")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    # -- the record ------------------------------------------------------------------

    def machine(self) -> dict[str, Any]:
        cpu = "?"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        memory = "?"
        with contextlib.suppress(OSError, IndexError):
            kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
            memory = f"{kb / 1e6:.1f} GB"
        try:
            rabbitmq: dict[str, str] = run_async(broker_version(), timeout=15)
        except Exception as error:
            rabbitmq = {"error": str(error)}
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        return {
            "cores": os.cpu_count(),
            "cpu": cpu,
            "memory": memory,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "rabbitmq": rabbitmq,
            "packages": {
                name: package_version(name)
                for name in ("aiohttp", "httptools", "aio-pika", "aiormq", "orjson", "uvloop")
            },
            "wrk": (wrk.stdout or wrk.stderr).strip().splitlines()[0:1],
            "loadavg_before": loadavg(),
            "background_cpu_percent": cpu_busy_percent(),
            "broker_backlog_before": broker_backlog(),
        }

    def close(self) -> None:
        """Stop every process, then delete the namespace (and empty the Go sink)."""
        self.stack.close()
        try:
            run_async(delete_namespace(self.names, [APP], RetryPolicy().tiers_ms), timeout=120)
        except Exception as error:
            self.notes.append(f"namespace {self.names.prefix} not fully deleted: {error}")
        if self.go_used:
            with contextlib.suppress(Exception):
                run_async(purge(GO_SINK))


def flag_suspicious(results: dict[str, Any], config: Config, notes: list[str]) -> None:
    """Notes on figures that deserve a second look."""
    machine = results.get("machine", {})
    busy = machine.get("background_cpu_percent")
    if isinstance(busy, int | float) and busy > 10:
        notes.append(
            f"the CPUs were {busy}% busy before the run started (other processes): "
            "throughput figures are likely low"
        )
    backlog = machine.get("broker_backlog_before") or {}
    if sum(backlog.values()) > BACKLOG_LIMIT:
        biggest = max(backlog, key=lambda name: backlog[name])
        notes.append(
            f"the broker held {sum(backlog.values()):,} messages before the run (most in "
            f"{biggest}: {backlog[biggest]:,}): throughput and latency figures are likely worse"
        )
    after = machine.get("background_cpu_percent_after")
    if isinstance(after, int | float) and after > 10:
        notes.append(f"the CPUs were {after}% busy after the run: something else was running")
    for path, label in (
        (("b", "saturation"), "ingress saturation"),
        (("b", "saturation_compared"), "ingress saturation, compared process count"),
        (("f", "saturation"), "Go saturation"),
        (("e",), "RSS load"),
    ):
        node: Any = results
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and (node.get("non_2xx") or node.get("socket_errors")):
            notes.append(
                f"{label}: {node.get('non_2xx')} non-2xx answers, "
                f"{node.get('socket_errors')} socket errors"
            )
        samples = node.get("samples", []) if isinstance(node, dict) else []
        values = [s["ok_per_s"] for s in samples if "ok_per_s" in s]
        if len(values) > 1 and (max(values) - min(values)) / median(values) > 0.15:
            notes.append(f"{label}: runs differ by more than 15% ({min(values)}..{max(values)})")
    for key, label in (("b", "ingress"), ("f", "Go")):
        fixed = results.get(key, {}).get("fixed_rate", {})
        if isinstance(fixed.get("achieved_rps"), int | float):
            if fixed["achieved_rps"] < 0.98 * config.rate:
                notes.append(f"{label} fixed rate: loadgen achieved {fixed['achieved_rps']}/s only")
            if fixed.get("errors") or fixed.get("non2xx"):
                notes.append(
                    f"{label} fixed rate: {fixed.get('errors')} errors, "
                    f"{fixed.get('non2xx')} non-2xx"
                )
    c = results.get("c", {})
    if c.get("lost"):
        notes.append(f"e2e: {c['lost']} events answered 200 never reached the handler in time")
    sender = c.get("sender", {})
    if sender:
        statuses = sender.get("statuses", {})
        if sender.get("errors") or set(statuses) - {"200"}:
            notes.append(f"e2e sender: statuses {statuses}, {sender.get('errors')} errors")
        if isinstance(sender.get("achieved_rps"), int | float) and (
            sender["achieved_rps"] < 0.98 * config.rate
        ):
            notes.append(f"e2e sender achieved {sender['achieved_rps']}/s only")
    e = results.get("e", {})
    if isinstance(e.get("answered_200"), int) and e["answered_200"] < config.rss_events:
        notes.append(f"RSS measured after {e['answered_200']:,} events, not {config.rss_events:,}")
    uv = machine.get("uvloop", {})
    if uv.get("ingress") == "yes" and results.get("a", {}).get("loop") == "asyncio":
        notes.append("the ingress runs uvloop but the bare publisher ran on asyncio")


def stopped_by(error: Exception) -> str:
    """Why the run stopped, in one line; the traceback too (on stderr) where it is not one of
    the failures the bench expects (a broker that does not answer, a measurement that failed)."""
    if isinstance(error, ConnectionError):
        where = URL(AMQP_URL)
        return f"RabbitMQ at {where.host}:{where.port} did not answer: {error}"
    if not isinstance(error, BenchError):
        traceback.print_exc()
    return one_line(error)


def one_line(error: BaseException) -> str:
    """The first line of what ``error`` says (its repr when it says nothing)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    interrupted = False
    stopped: str | None = None
    with tempfile.TemporaryDirectory(prefix="attentive-bench-") as tmp:
        bench = Bench(config, Path(tmp))
        say(f"namespace {bench.names.prefix}, phases {','.join(config.only)}")
        try:
            bench.run()
        except KeyboardInterrupt:
            interrupted = True
            bench.notes.append("interrupted: the figures are partial")
        except Exception as error:
            stopped = stopped_by(error)
            bench.notes.append(f"the run stopped early: {stopped}")
        finally:
            bench.close()
        results = bench.results
        machine = results.setdefault("machine", {})
        machine["uvloop"] = {
            "ingress": bench.uvloop.get("ingress", "not run"),
            "worker": bench.uvloop.get("worker", "not run"),
            "clients": ", ".join(
                sorted(
                    {
                        str(node.get("loop"))
                        for node in (results.get("a"), *results.get("d", {}).values())
                        if isinstance(node, dict) and node.get("loop")
                    }
                )
            )
            or "not run",
            "installed": UVLOOP_INSTALLED,
        }
    machine["loadavg_after"] = loadavg()
    machine["background_cpu_percent_after"] = cpu_busy_percent()
    final: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "mode": "quick" if config.quick else "full",
        "config": {**asdict(config), "results_dir": str(config.results_dir)},
        "namespace": bench.names.prefix,
        "payload": {
            "description": (
                f"{len(bench.bodies)} signed bodies ({len(EVENT_TYPES)} types x "
                f"{len(COMPANIES)} companies), {min(map(len, bench.bodies))}-"
                f"{max(map(len, bench.bodies))} bytes"
            ),
            "bodies": len(bench.bodies),
        },
        **results,
        "duration_s": round(time.monotonic() - bench.started, 1),
    }
    report.evaluate(final)
    notes = list(bench.notes)
    flag_suspicious(final, config, notes)
    final["notes"] = notes
    print(report.render(final))
    for path in report.write(final, config.results_dir, stamp):
        print(f"wrote {path}", file=sys.stderr)
    if interrupted:
        return 130
    failed = ([f"the run stopped early: {stopped}"] if stopped else []) + report.failures(final)
    for failure in failed:
        print(f"bench: not measured: {failure}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
