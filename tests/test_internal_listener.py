"""The webhook port serves webhooks and ``/healthz`` only; ``/metrics`` and ``/readyz`` are on
the internal listener (issue 28 item 5). With ``serve --workers``, the first process's
internal listener answers for every process: see tests/test_serve.py."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client.parser import text_string_to_metric_families

from router.contract.examples import example_body
from router.contract.names import WEBHOOK_PATH, Names
from router.errors import ConfigError
from router.ingress.metrics import PAGE_MAX_AGE, Metrics, Outcome
from router.ingress.processes import Processes, merge_pages
from router.ingress.service import Ingress
from router.settings import Settings
from tests.conftest import Client, TapFactory, depth, served_ingress, signed
from tests.probes import internal

URL = WEBHOOK_PATH
REQUESTS = "attentive_router_requests_total"


def requests_by_outcome(page: str) -> dict[str, float]:
    found = re.findall(rf'^{REQUESTS}{{outcome="(\w+)"}} (\S+)$', page, re.MULTILINE)
    return {outcome: float(count) for outcome, count in found}


@pytest.mark.broker
async def test_the_webhook_port_answers_404_for_metrics_and_readyz_and_says_only_alive(
    ingress: Client,
) -> None:
    # When a stranger asks the webhook port for /metrics and /readyz, by GET and by HEAD
    for path in ("/metrics", "/readyz"):
        for method in ("GET", "HEAD"):
            response = await ingress.request(method, path)

            # Then they are not there: 404, as for any path that is not a webhook's
            assert response.status == 404, (method, path)
            if method == "GET":
                assert await response.json() == {"error": "not found"}

    # And /healthz says the process is alive, and nothing more
    alive = await ingress.get("/healthz")
    assert (alive.status, await alive.read()) == (200, b'{"status":"alive"}')

    # And the four were counted as not found, where the operator looks: the internal listener
    page = await (await internal(ingress, "/metrics")).text()
    assert requests_by_outcome(page).get("not_found") == 4.0


@pytest.mark.broker
async def test_the_internal_listener_serves_the_probes_and_metrics_and_nothing_else(
    ingress: Client, amqp: AbstractRobustConnection, names: Names, tap_factory: TapFactory
) -> None:
    tap = await tap_factory("#")

    # Given one webhook accepted on the webhook port
    body = example_body("sms.sent")
    assert (await ingress.post(URL, data=body, headers=signed(body))).status == 200

    # Then the internal listener says alive and ready, and counts it
    assert (await internal(ingress, "/healthz")).status == 200
    ready = await internal(ingress, "/readyz")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "connected": True, "blocked": False}
    metrics = await internal(ingress, "/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain")
    counted = requests_by_outcome(await metrics.text())
    assert (counted["accepted"], sum(counted.values())) == (1.0, 1.0)

    # And it takes no webhook: a signed one posted there is not found, and nothing published
    port = served_ingress(ingress).internal_port
    async with ingress.session.post(
        f"http://127.0.0.1:{port}{URL}", data=body, headers=signed(body)
    ) as posted:
        assert posted.status == 404
    # And its paths take GET and HEAD only
    async with ingress.session.post(f"http://127.0.0.1:{port}/metrics") as posted:
        assert (posted.status, posted.headers["Allow"]) == (405, "GET, HEAD")
    async with ingress.session.head(f"http://127.0.0.1:{port}/readyz") as head:
        assert head.status == 200

    # And none of those requests is counted as a webhook's
    page = await (await internal(ingress, "/metrics")).text()
    assert sum(requests_by_outcome(page).values()) == 1.0
    assert len(await tap.take(1)) == 1
    assert await depth(amqp, tap.queue.name) == 0


def test_the_internal_listener_is_on_the_loopback_address_unless_told_otherwise() -> None:
    defaults = Settings.from_env({})
    assert (defaults.internal_host, defaults.internal_port) == ("127.0.0.1", 8082)
    told = Settings.from_env({"ROUTER_INTERNAL_HOST": "0.0.0.0", "ROUTER_INTERNAL_PORT": "9191"})
    assert (told.internal_host, told.internal_port) == ("0.0.0.0", 9191)


@pytest.mark.parametrize(
    "env",
    [
        {"ROUTER_INTERNAL_PORT": "8080"},
        {"ROUTER_INTERNAL_PORT": "9000", "ROUTER_ADMIN_PORT": "9000"},
        {"ROUTER_INTERNAL_PORT": "0"},
        {"ROUTER_INTERNAL_PORT": "metrics"},
    ],
    ids=["webhook-port", "admin-port", "zero", "not-a-number"],
)
def test_an_internal_port_that_cannot_work_is_refused_in_one_line(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert "ROUTER_INTERNAL_PORT" in str(refused.value)
    assert "\n" not in str(refused.value)


Sample = tuple[str, tuple[tuple[str, str], ...], float]


def samples(page: str, process: str | None = None) -> set[Sample]:
    """The samples of a Prometheus page (those of ``process``, without that label)."""
    found: set[Sample] = set()
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.pop("process", None) == process:
                found.add((sample.name, tuple(sorted(labels.items())), sample.value))
    return found


def test_the_pages_of_several_processes_become_one_with_a_process_label() -> None:
    # Given the pages of three processes that counted different things, the third silent
    first, second = Metrics(), Metrics()
    first.count_published("sms.sent", True)
    first.confirm_seconds.observe(0.003)
    second.count_published("loyalty.points", False)
    second.request_outcomes[Outcome.NOT_FOUND].inc(2)
    pages = [first.render(), second.render()]

    # When they are merged
    merged = merge_pages([*pages, None]).decode()

    # Then each family is described once, with every sample of each page under its process
    assert merged.count("# TYPE attentive_router_requests_total counter") == 1
    assert merged.count("# TYPE attentive_router_confirm_seconds histogram") == 1
    # (and one more: whether the process answered)
    answered = {("attentive_router_process_up", (), 1.0)}
    for process, page in enumerate(pages):
        assert samples(merged, str(process)) == samples(page.decode()) | answered, process
    assert not samples(merged)  # (no sample without its process)
    # And the third, which did not answer, has nothing but that
    assert samples(merged, "2") == {("attentive_router_process_up", (), 0.0)}


@pytest.mark.broker
async def test_the_first_of_two_processes_answers_for_both_and_names_one_that_is_missing(
    settings: Settings, tmp_path: Path, test_id: str
) -> None:
    # Given the first of two ingress processes, the second not started yet
    local = replace(settings, host="127.0.0.1", port=0, internal_port=0)
    first = Ingress(local, connection_name=test_id, processes=Processes(str(tmp_path), 2, 0))
    second = Ingress(local, connection_name=test_id, processes=Processes(str(tmp_path), 2, 1))
    await first.start()
    try:
        await first.broker.wait_ready(timeout=15)
        url = f"http://127.0.0.1:{first.internal_port}"
        async with aiohttp.ClientSession() as session:
            # Then it is not ready, and says which process did not answer
            async with session.get(f"{url}/readyz") as response:
                assert response.status == 503
                ready = await response.json()
            assert ready["processes"]["1"] == {"status": "unreachable"}
            assert ready["processes"]["0"]["status"] == "ready"
            async with session.get(f"{url}/metrics") as response:
                page = await response.text()
            assert 'attentive_router_process_up{process="1"} 0.0' in page
            assert 'attentive_router_broker_ready{process="0"} 1.0' in page

            # When the second starts, on its Unix socket beside the first's port
            await second.start()
            await second.broker.wait_ready(timeout=15)
            assert second.internal_address == str(tmp_path / "ingress-1.sock")

            # Then the first answers ready for both, and its page holds the second's series
            async with session.get(f"{url}/readyz") as response:
                assert response.status == 200, await response.text()
            await asyncio.sleep(PAGE_MAX_AGE)  # (the page seen above is served for a second)
            async with session.get(f"{url}/metrics") as response:
                page = await response.text()
            assert 'attentive_router_process_up{process="1"} 1.0' in page
            assert 'attentive_router_broker_ready{process="1"} 1.0' in page
    finally:
        await second.stop()
        await first.stop()
