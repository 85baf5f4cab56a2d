"""The console's replay and purge flows and its jobs and audit page, against the real admin app,
broker and store: a count and a confirmation before anything changes, a purge that wants its
count typed back, a job's progress live until it ends, cancel, and the server refusing a
viewer's, a forged or an empty selection's request. The end-to-end story dead-letters events
through a failing worker and lets the keeper park them, then goes through the console's own
pages as on-call would: the application's DLQ from the navigation, a filter by type, an entry
masked, ten ticked and replayed to the worker now healthy, and the rest purged.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from consumers import Event, Reject, Worker
from router.contract.examples import example_body
from router.contract.names import WEBHOOK_PATH, Names
from router.parked.keeper import Keeper
from router.parked.open import parked_store_from_url
from router.parked.runner import JobRunner
from router.parked.settings import KeeperSettings
from tests.conftest import AMQP_URL, AUTH, Client, MakeIngress, StartWorker, signed
from tests.console_steps import TOKENS, Console, log_in
from tests.environment import no_router_environment
from tests.parked_stores import body_of, dead_letter
from tests.steps import claim

pytest.importorskip("playwright", reason="playwright is not installed: pip install -e '.[dev]'")
from playwright.async_api import Page, expect

from tests.browser import screenshot

pytestmark = [pytest.mark.broker, pytest.mark.browser]
#: ``no_router_environment``, autouse: no ROUTER_* variable of the shell counts.
__all__ = ["no_router_environment"]

APP = "crm-sync"
#: The longest any wait of these tests takes (seconds).
TIMEOUT = 30.0
#: Small batches and quick looks around, so that the keeper parks and runs jobs promptly.
KEEPER = KeeperSettings(batch_size=50, batch_wait=0.05, apps_interval=0.3, stats_interval=0.3)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# -- steps ----------------------------------------------------------------------------------------


async def park(console: Console, count: int, app: str = APP) -> list[str]:
    """``count`` dead letters of ``app`` in the console's store (as the keeper parks them);
    their message ids."""
    ids = [f"m-{uuid.uuid4().hex[:8]}-{n}" for n in range(count)]
    store = parked_store_from_url(console.settings.database_url.reveal())
    await store.open()
    try:
        entries = [
            dead_letter(body_of("sms.sent", n=n), app=app, message_id=i) for n, i in enumerate(ids)
        ]
        assert await store.add_many(entries) == count
    finally:
        await store.close()
    return ids


async def logged_in(api: Client, as_: str) -> str:
    """Log the client in through the form as ``as_`` (its cookie replaces any other); the
    session's CSRF token."""
    response = await api.post(
        "/console/login", data={"token": TOKENS[as_], "next": "/console/jobs"}
    )
    assert response.status == 200, await response.text()
    found = _CSRF.search(await response.text())
    assert found is not None
    return found.group(1)


async def jobs_made(api: Client) -> list[dict[str, Any]]:
    """Every job in the store, newest first (through the admin API)."""
    response = await api.get("/admin/jobs", headers=AUTH)
    assert response.status == 200
    jobs: list[dict[str, Any]] = (await response.json())["jobs"]
    return jobs


async def parked(api: Client, app: str = APP) -> list[str]:
    """The message ids of ``app``'s parked entries (through the admin API)."""
    response = await api.get(f"/admin/dlq/{app}", params={"limit": "1000"}, headers=AUTH)
    assert response.status == 200
    return [entry["message_id"] for entry in (await response.json())["entries"]]


async def open_from_navigation(page: Page, label: str) -> None:
    """Open the console page ``label`` through the navigation at the top, and wait for it."""
    async with page.expect_navigation():
        await (
            page.get_by_role("navigation", name="Console pages")
            .get_by_role("link", name=label, exact=True)
            .click()
        )


async def run_job(console: Console, names: Names, job_id: int) -> None:
    """Run the job to its end, as a keeper would."""
    store = parked_store_from_url(console.settings.database_url.reveal())
    await store.open()
    runner = JobRunner(store, AMQP_URL, names)
    try:
        async with asyncio.timeout(TIMEOUT):
            ended = await runner.run_job(job_id)
        assert ended is not None and ended.state.finished
    finally:
        await runner.close()
        await store.close()


@pytest.fixture
async def keeper(console: Console, test_id: str) -> AsyncIterator[Keeper]:
    """A keeper on the console's broker namespace and database: it parks what the claimed
    applications dead-letter, and runs the replay and purge jobs."""
    running = Keeper(console.settings, KEEPER, connection_name=test_id)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    async with asyncio.timeout(TIMEOUT):
        while not running.ready.is_set():
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    yield running
    stop.set()
    async with asyncio.timeout(TIMEOUT):
        await task


async def until(condition: Any, timeout: float = TIMEOUT) -> None:
    """Wait until ``condition()`` (a coroutine function) holds."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.1)


# -- the end-to-end story ---------------------------------------------------------------------


async def test_ten_dead_letters_replayed_from_the_browser_reach_the_worker_and_the_rest_are_purged(
    console: Console,
    make_ingress: MakeIngress,
    start_worker: StartWorker,
    keeper: Keeper,
    browser_page: Page,
) -> None:
    """Given an application whose worker fails every event, and the 12 sms.sent and 3
    sms.subscribed events it dead-lettered that the keeper parked; when on-call opens its DLQ
    in the console and filters it by type, then the URL holds the filter and 12 match; an
    entry's payload shows its phone number and email masked; when they tick ten, confirm
    their replay and the worker is healthy again, then the job's page follows it to done and
    the worker gets exactly those ten; when they purge the other five, typing their count
    back, then nothing is parked any more, and the jobs page lists both jobs and who."""
    # Given an application that claims sms.sent and sms.subscribed, its worker failing them all
    await claim(console.api, APP, "sms.sent", "sms.subscribed")
    healthy = asyncio.Event()
    received: list[str] = []
    worker = Worker(APP)

    @worker.on("sms.sent")
    @worker.on("sms.subscribed")
    async def deliver(event: Event) -> None:
        if not healthy.is_set():
            raise Reject("the CRM is down")
        received.append(event.message_id)

    await start_worker(worker)
    ingress = await make_ingress(console.settings)

    # And 15 events Attentive sent (each subscriber's phone and email in it), all parked
    for n, event_type in enumerate(["sms.sent"] * 12 + ["sms.subscribed"] * 3):
        body = example_body(event_type, external_id=n)
        response = await ingress.post(WEBHOOK_PATH, data=body, headers=signed(body))
        assert response.status == 200

    async def fifteen_parked() -> bool:
        return len(await parked(console.api)) == 15

    await until(fifteen_parked)

    # When on-call logs in, opens "Parked events" and picks the application's DLQ
    page = browser_page
    await log_in(page, console, as_="oncall")
    await open_from_navigation(page, "Parked events")
    await page.locator("#places").get_by_role("link", name=f"{APP} (dlq)").click()

    # Then the DLQ is shown, with all 15
    await page.wait_for_url(re.compile(rf".*[?&]app={APP}"))
    await expect(page.locator("#places [aria-current=page]")).to_have_text(f"{APP} (dlq)")
    await expect(page.locator("#matched strong")).to_have_text("15")
    await expect(page.locator("#matched")).to_contain_text(
        f"parked events match in the dlq of {APP}."
    )

    # When they filter it by type through the filter form
    await page.get_by_label("Type", exact=True).fill("sms.sent")
    await page.get_by_role("button", name="Filter", exact=True).click()

    # Then the URL holds the filter, and the count and the list follow it
    await page.wait_for_url(re.compile(r".*[?&]type=sms\.sent"))
    assert f"app={APP}" in page.url
    await expect(page.locator("#matched strong")).to_have_text("12")
    rows = page.locator("#entries tbody tr")
    await expect(rows).to_have_count(12)
    await expect(rows.filter(has_text="sms.subscribed")).to_have_count(0)

    # When they open one
    listing = page.url
    await rows.first.get_by_role("link").click()

    # Then its payload shows the subscriber's phone number and email masked
    await page.wait_for_url(re.compile(rf".*/console/parked/dlq/{APP}/"))
    payload = page.locator("#payload")
    await expect(payload).to_contain_text("+1******5555")
    await expect(payload).to_contain_text("t***@gmail.com")
    await expect(payload).not_to_contain_text("+15555555555")
    await expect(payload).not_to_contain_text("test@gmail.com")
    await expect(page.locator("#masked")).to_be_visible()

    # When they go back, tick ten events and press "Replay selected"
    await page.go_back()
    await page.wait_for_url(listing)
    await expect(rows).to_have_count(12)
    boxes = page.locator("#entries tbody").get_by_role("checkbox")
    chosen = [str(await boxes.nth(n).get_attribute("value")) for n in range(10)]
    for message_id in chosen:
        await page.get_by_label(f"Select {message_id}", exact=True).check()
    await page.get_by_role("button", name="Replay selected").click()

    # Then the confirmation says how many, of what, and where they go; nothing is made yet
    await page.wait_for_url(re.compile(r".*/console/actions/replay$"))
    what = page.locator("#what")
    await expect(what).to_contain_text(
        f"Replay 10 parked events of the dlq of {APP}, type sms.sent, 10 selected entries "
        f"to {console.settings.names.app_queue(APP)}."
    )
    await expect(what).to_contain_text("They go back to the application's queue")
    assert await jobs_made(console.api) == []
    await screenshot(page, "replay-confirm")

    # When the worker is healthy again and on-call confirms
    healthy.set()
    await page.get_by_label("Rate (events/s)").fill("100")
    await page.get_by_role("button", name="Replay 10 events").click()

    # Then the job's page follows it until it is done
    await page.wait_for_url(re.compile(r".*/console/jobs/[0-9]+$"))
    progress = page.locator("#progress")
    await expect(progress).to_contain_text("Done: 10 replayed", timeout=TIMEOUT * 1000)
    await expect(progress).not_to_have_attribute("hx-trigger", re.compile(".*"))
    await expect(page.locator("dl.facts")).to_contain_text("oncall")
    await expect(page.locator("#job-audit")).to_contain_text("10 of 10 done, 0 failed (done)")
    await expect(page.get_by_role("button", name=re.compile("Cancel job"))).to_have_count(0)
    await screenshot(page, "job")

    # And the worker received exactly those ten; the other five are still parked
    async def ten_received() -> bool:
        return len(received) >= 10

    await until(ten_received)
    assert sorted(received) == sorted(chosen)
    rest = await parked(console.api)
    assert len(rest) == 5 and not set(rest) & set(chosen)

    # When on-call opens the DLQ again and asks to purge all that matches
    await open_from_navigation(page, "Parked events")
    await expect(page.locator("#matched strong")).to_have_text("5")
    await expect(page.locator("#matched")).to_contain_text(
        f"parked events match in the dlq of {APP}."
    )
    await page.get_by_role("button", name="Purge all 5 matching").click()

    # Then the confirmation says what goes, and the purge stays disabled until the count is
    # typed back right
    await page.wait_for_url(re.compile(r".*/console/actions/purge$"))
    await expect(page.locator("#what")).to_contain_text(
        f"Purge 5 parked events of the dlq of {APP}."
    )
    purge = page.get_by_role("button", name="Purge 5 events")
    typed = page.get_by_label("Type 5 to confirm")
    await expect(purge).to_be_disabled()
    await typed.fill("4")
    await expect(purge).to_be_disabled()
    await typed.fill("5")
    await expect(purge).to_be_enabled()
    await purge.click()

    # And the purge job ends with the five purged, and nothing of the application is parked
    await page.wait_for_url(re.compile(r".*/console/jobs/[0-9]+$"))
    await expect(page.locator("#progress")).to_contain_text(
        "Done: 5 purged", timeout=TIMEOUT * 1000
    )
    assert await parked(console.api) == []
    await open_from_navigation(page, "Parked events")
    await expect(page.locator("#nothing-parked")).to_be_visible()

    # And the jobs page lists both jobs, and the audit log names who did them
    await open_from_navigation(page, "Jobs and audit")
    jobs = page.get_by_role("table").first
    await expect(jobs.get_by_role("row")).to_have_count(3)
    await expect(jobs).to_contain_text("replay")
    await expect(jobs).to_contain_text("purge")
    audit = page.locator("table[aria-labelledby=audit-heading]")
    await expect(audit.get_by_role("row").filter(has_text="oncall")).to_have_count(2)
    await screenshot(page, "jobs")
    assert [job["requested_by"] for job in await jobs_made(console.api)] == ["oncall", "oncall"]


# -- refusals at the HTTP level ------------------------------------------------------------------


async def test_a_viewer_cannot_replay_purge_or_cancel_and_nothing_is_made(
    console: Console,
) -> None:
    """Given parked entries and a viewer's session; when the viewer posts a replay, a purge
    (with the right count) or a cancel, then each is refused with 403 and no job exists."""
    await park(console, 3)
    csrf = await logged_in(console.api, "grafana")
    form = {"csrf_token": csrf, "place": "dlq", "app": APP, "confirm": "1"}

    replayed = await console.api.post("/console/actions/replay", data=form)
    purged = await console.api.post(
        "/console/actions/purge", data={**form, "typed": "3", "shown": "3"}
    )

    assert (replayed.status, purged.status) == (403, 403)
    assert "only an operator may replay events" in await replayed.text()
    assert "only an operator may purge events" in await purged.text()
    assert await jobs_made(console.api) == []


async def test_replay_selected_with_nothing_ticked_is_refused_and_nothing_is_made(
    console: Console,
) -> None:
    """Given 3 parked entries and an operator; when "Replay selected" is posted with none of
    them ticked (the selection form's ``selected=1``, its filter, no message id), asked or
    confirmed, then each is refused with 400 saying to tick the events first, and no job
    exists (it is not taken for a replay of every match)."""
    await park(console, 3)
    csrf = await logged_in(console.api, "oncall")
    form = {"csrf_token": csrf, "selected": "1", "place": "dlq", "app": APP}

    asked = await console.api.post("/console/actions/replay", data=form)
    confirmed = await console.api.post("/console/actions/replay", data={**form, "confirm": "1"})

    assert (asked.status, confirmed.status) == (400, 400)
    for answer in (asked, confirmed):
        text = await answer.text()
        assert "tick the events to replay first (none was selected)" in text
        assert "Replay 3" not in text
    assert await jobs_made(console.api) == []


async def test_a_change_without_the_csrf_token_is_refused_and_nothing_is_made(
    console: Console,
) -> None:
    """Given an operator's session; when a replay or a purge is posted without the session's
    CSRF token (or with another), then it is refused with 403 and no job exists."""
    await park(console, 3)
    await logged_in(console.api, "oncall")
    form = {"place": "dlq", "app": APP, "confirm": "1", "typed": "3", "shown": "3"}

    missing = await console.api.post("/console/actions/replay", data=form)
    forged = await console.api.post(
        "/console/actions/purge", data={**form, "csrf_token": "not-the-token"}
    )

    assert (missing.status, forged.status) == (403, 403)
    assert "security token is missing or stale" in await missing.text()
    assert await jobs_made(console.api) == []


async def test_a_purge_needs_the_count_typed_back_as_it_is_now(console: Console) -> None:
    """Given 3 parked entries and an operator; when the purge is confirmed without the
    count, with a wrong one, or after the count changed, then the confirmation comes back
    saying why and nothing is purged; with the count, the job covers the 3."""
    await park(console, 3)
    csrf = await logged_in(console.api, "oncall")
    form = {"csrf_token": csrf, "place": "dlq", "app": APP}

    asked = await console.api.post("/console/actions/purge", data=form)
    assert asked.status == 200
    page = await asked.text()
    assert "Purge <strong>3</strong> parked events of the dlq of crm-sync." in page
    assert 'data-confirm-value="3"' in page
    assert await jobs_made(console.api) == []

    confirm = {**form, "confirm": "1", "shown": "3"}
    blank = await console.api.post("/console/actions/purge", data=confirm)
    wrong = await console.api.post("/console/actions/purge", data={**confirm, "typed": "4"})
    assert (blank.status, wrong.status) == (400, 400)
    assert "That is not the count: type 3 to purge them." in await wrong.text()

    await park(console, 1)
    changed = await console.api.post("/console/actions/purge", data={**confirm, "typed": "3"})
    assert changed.status == 409
    assert "The count changed since: 4 entries match now." in await changed.text()
    assert await jobs_made(console.api) == []

    made = await console.api.post(
        "/console/actions/purge",
        data={**confirm, "shown": "4", "typed": "4"},
        allow_redirects=False,
    )
    assert made.status == 303
    (job,) = await jobs_made(console.api)
    assert made.headers["Location"] == f"/console/jobs/{job['id']}"
    assert (job["kind"], job["matched"], job["requested_by"]) == ("purge", 4, "oncall")


async def test_a_replay_counts_first_and_refuses_what_cannot_be_replayed(
    console: Console,
) -> None:
    """Given no invalid events and 2 parked dead letters; when an operator asks to replay
    invalid events, then 400 says they can only be purged; when nothing matches, the
    confirmation says so and has no button; a bad limit is refused on the confirmation."""
    await park(console, 2)
    csrf = await logged_in(console.api, "oncall")

    invalid = await console.api.post(
        "/console/actions/replay", data={"csrf_token": csrf, "place": "invalid", "confirm": "1"}
    )
    assert invalid.status == 400
    assert "invalid events cannot be replayed, only purged" in await invalid.text()

    nothing = await console.api.post(
        "/console/actions/replay",
        data={"csrf_token": csrf, "place": "dlq", "app": APP, "type": "email.*"},
    )
    assert nothing.status == 200
    text = await nothing.text()
    assert "No parked event matches" in text
    assert '<button type="submit">Replay' not in text

    form = {"csrf_token": csrf, "place": "dlq", "app": APP, "confirm": "1", "limit": "0"}
    bad = await console.api.post("/console/actions/replay", data=form)
    assert bad.status == 400
    assert "limit must be a whole number of 1 or more" in await bad.text()
    assert await jobs_made(console.api) == []


async def test_a_queued_job_polls_its_progress_until_an_operator_cancels_it(
    console: Console,
) -> None:
    """Given a replay job no keeper runs; its page polls its progress and offers a cancel to
    an operator only (a viewer's cancel is refused); when the operator cancels it, then the
    page shows it cancelled, by whom, and no longer polls."""
    ids = await park(console, 2)
    csrf = await logged_in(console.api, "oncall")
    form = [("csrf_token", csrf), ("place", "dlq"), ("app", APP), ("confirm", "1")]
    form += [("message_id", i) for i in ids]
    made = await console.api.post("/console/actions/replay", data=form)
    assert made.status == 200
    (job,) = await jobs_made(console.api)
    path = f"/console/jobs/{job['id']}"
    assert made.url.path == path

    queued = await (await console.api.get(path + "/progress")).text()
    assert 'hx-trigger="every 1s"' in queued
    assert "waiting for a keeper" in queued
    assert f"Cancel job {job['id']}" in await made.text()

    viewer_csrf = await logged_in(console.api, "grafana")
    assert f"Cancel job {job['id']}" not in await (await console.api.get(path)).text()
    refused = await console.api.post(path + "/cancel", data={"csrf_token": viewer_csrf})
    assert refused.status == 403
    assert (await jobs_made(console.api))[0]["state"] == "queued"

    csrf = await logged_in(console.api, "oncall")
    cancelled = await console.api.post(path + "/cancel", data={"csrf_token": csrf})
    assert cancelled.status == 200
    page = await cancelled.text()
    assert "Cancelled by oncall after 0 of 2." in page
    assert "hx-trigger" not in page
    assert f"Cancel job {job['id']}" not in page


async def test_a_job_that_ended_cannot_be_cancelled(console: Console, names: Names) -> None:
    """Given a purge job a runner has run to its end; its progress no longer polls, and
    hands htmx the page's parts that changed (no cancel, the audit record); when an operator
    posts a cancel anyway, then its page says it is over (409)."""
    await park(console, 2)
    csrf = await logged_in(console.api, "oncall")
    form = {"csrf_token": csrf, "place": "dlq", "app": APP, "confirm": "1"}
    await console.api.post("/console/actions/purge", data={**form, "shown": "2", "typed": "2"})
    (job,) = await jobs_made(console.api)
    await run_job(console, names, job["id"])

    path = f"/console/jobs/{job['id']}"
    page = await (await console.api.get(path)).text()
    assert "Done: 2 purged." in page
    assert "hx-trigger" not in page
    assert "Cancel job" not in page

    fragment = await console.api.get(path + "/progress", headers={"HX-Request": "true"})
    swapped = await fragment.text()
    assert 'id="job-cancel" hx-swap-oob="true"' in swapped
    assert "2 of 2 done, 0 failed (done)" in swapped

    again = await console.api.post(path + "/cancel", data={"csrf_token": csrf})
    assert again.status == 409
    text = await again.text()
    assert f"job {job['id']} is done already: there is nothing to cancel" in text
    assert "Done: 2 purged." in text


async def test_the_jobs_page_says_what_to_do_when_there_is_nothing_and_a_missing_job_is_404(
    console: Console,
) -> None:
    """Given no job; the jobs page says how to start one and that the audit log is empty;
    a job that does not exist is a 404 page."""
    await logged_in(console.api, "grafana")

    page = await (await console.api.get("/console/jobs")).text()
    missing = await console.api.get("/console/jobs/4242")
    paged = await console.api.get("/console/jobs?before=abc")

    assert "No replay or purge yet." in page
    assert "Nothing recorded yet" in page
    assert missing.status == 404
    assert "no job 4242" in await missing.text()
    assert paged.status == 400
