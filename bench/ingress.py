"""Ingress benchmark: the router under load next to a bare aio-pika publisher, in one run.

Not a test: it prints a table and writes bench/results/ingress.json. Run with ``make bench``.

1. bare aio-pika publisher, confirms, N in flight, no HTTP: the client-side ceiling;
2. the router's ingress (a separate process) under wrk at saturation: events/s answered,
   latency percentiles;
3. when the open-loop load generator of ../shared/anchors is built (/tmp/anchors/loadgen),
   p50/p99 at a steady 1,000 events/s.

Every event goes to a quorum queue bound with '#', as a consumer's queue would be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import orjson

from router import topology
from router.events import EVENT_TYPES, Event, parse
from router.examples import example_payload
from router.names import Names
from router.signing import sign
from router.topology import QUORUM_QUEUE_ARGUMENTS

AMQP_URL = os.environ.get("ROUTER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
KEY = "bench-signing-key"
COMPANIES = ("MDc6Q29tcGFueTU", "acme-co", "globex.inc", "initech")
LOADGEN = Path(os.environ.get("ANCHORS_OUT", "/tmp/anchors")) / "loadgen"


def payloads(size: int = 1024) -> list[bytes]:
    """Realistic signed bodies, all 11 types x several companies, padded to about ``size``."""
    bodies = []
    for i, company in enumerate(COMPANIES):
        for event_type in EVENT_TYPES:
            payload = example_payload(event_type, company, external_id=1000 + i)
            base = len(orjson.dumps(payload))
            payload["subscriber"]["custom"] = "x" * max(0, size - base - 14)
            bodies.append(orjson.dumps(payload))
    return bodies


async def sink(names: Names) -> None:
    """Declare the topology and a quorum queue that takes every event (purged)."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await topology.declare(channel, names)
        queue = await channel.declare_queue(
            f"{names.prefix}.sink", durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
        )
        await queue.bind(names.events_exchange, "#")
        await queue.purge()


async def cleanup(names: Names) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(f"{names.prefix}.sink")
        await topology.delete(channel, names)


async def bare_publisher(
    names: Names, bodies: list[bytes], total: int, in_flight: int
) -> dict[str, Any]:
    """Publish ``total`` events with ``in_flight`` awaiting their confirms at once."""
    connection = await aio_pika.connect(AMQP_URL)
    latencies: list[float] = []
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(names.events_exchange)
        events = [event for event in map(parse, bodies) if isinstance(event, Event)]
        assert len(events) == len(bodies)
        counter = iter(range(total))

        async def publisher() -> None:
            for i in counter:
                body, event = bodies[i % len(bodies)], events[i % len(bodies)]
                started = time.perf_counter()
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                        message_id=event.message_id,
                    ),
                    routing_key=event.routing_key,
                )
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(publisher() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "msgs_per_s": round(total / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def wrk_script(bodies: list[bytes], directory: Path) -> Path:
    entries = ",\n".join(f'{{[==[{b.decode()}]==], "{sign(b, KEY)}"}}' for b in bodies)
    script = directory / "post.lua"
    script.write_text(
        f"local events = {{\n{entries}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #events + 1\n"
        '  return wrk.format("POST", nil, {["Content-Type"] = "application/json",\n'
        '    ["x-attentive-hmac-sha256"] = events[i][2]}, events[i][1])\n'
        "end\n"
    )
    return script


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        factor = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return round(float(m.group(1)) * factor, 2)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    assert rps, out
    return {
        "req_per_s": round(float(rps.group(1))),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def run_loadgen(
    url: str, body: bytes, rate: int, seconds: int, directory: Path
) -> dict[str, Any] | None:
    if not LOADGEN.exists():
        return None
    body_file = directory / "body.json"
    body_file.write_bytes(body)
    out = subprocess.run(
        [
            str(LOADGEN),
            "-url",
            url,
            "-body",
            str(body_file),
            "-sig",
            sign(body, KEY),
            "-rate",
            str(rate),
            "-d",
            f"{seconds}s",
            "-warmup",
            "2s",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return {"rate": rate, "output": (out.stdout + out.stderr).strip()}


def start_ingress(names: Names, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ROUTER_SIGNING_KEYS": KEY, "ROUTER_AMQP_URL": AMQP_URL}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router",
            "serve",
            "--port",
            str(port),
            "--namespace",
            names.prefix,
            "--log-format",
            "json",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the ingress did not become ready; see {log_path}")


def machine() -> dict[str, Any]:
    version = subprocess.run(
        ["rabbitmqctl", "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"cores": os.cpu_count(), "python": platform.python_version(), "rabbitmq": version}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--bare-messages", type=int, default=50_000)
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    names = Names(f"bench-{uuid.uuid4().hex[:8]}")
    bodies = payloads()
    results: dict[str, Any] = {"machine": machine(), "payload_bytes": len(bodies[0])}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        asyncio.run(sink(names))
        try:
            results["bare_aio_pika"] = asyncio.run(
                bare_publisher(names, bodies, args.bare_messages, args.connections)
            )
            ingress = start_ingress(names, args.port, directory / "ingress.log")
            try:
                url = f"http://127.0.0.1:{args.port}/webhooks/attentive"
                script = wrk_script(bodies, directory)
                run_wrk(url, script, 2, args.connections)  # warm-up
                results["ingress_saturation"] = run_wrk(url, script, args.seconds, args.connections)
                results["ingress_1000_per_s"] = run_loadgen(
                    url, bodies[0], 1000, args.seconds, directory
                )
            finally:
                ingress.terminate()
                ingress.wait(timeout=30)
        finally:
            asyncio.run(cleanup(names))
    bare = results["bare_aio_pika"]["msgs_per_s"]
    sat = results["ingress_saturation"]["req_per_s"]
    results["ratio_ingress_to_bare"] = round(sat / bare, 2)
    print(f"machine: {results['machine']}")
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'bare aio-pika publisher, confirms (msg/s)':<44}{bare:>12}")
    print(f"{'ingress at saturation (200/s)':<44}{sat:>12}")
    print(f"{'  ratio ingress / bare':<44}{results['ratio_ingress_to_bare']:>12}")
    sat_r = results["ingress_saturation"]
    print(f"{'  p50 / p99 at saturation (ms)':<44}{sat_r['p50_ms']:>6} / {sat_r['p99_ms']}")
    print(f"{'  non-2xx answers':<44}{sat_r['non_2xx']:>12}")
    if results["ingress_1000_per_s"]:
        print("open-loop 1,000/s:\n" + results["ingress_1000_per_s"]["output"])
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ingress.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
