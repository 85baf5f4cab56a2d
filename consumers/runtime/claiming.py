"""Claiming a worker's events through the router's admin API at start-up, waiting out a
router that is being restarted."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import structlog

from consumers.runtime.errors import ClaimRefused, WorkerConfigError
from consumers.runtime.settings import WorkerSettings
from consumers.runtime.worker import Worker
from router.admin.client import AdminClient, AdminRequestFailed, AdminUnreachable, ClaimAnswer

log = structlog.get_logger("consumers")


async def claim_events(worker: Worker, settings: WorkerSettings) -> None:
    """Claim every pattern of the worker through the admin API; :class:`ClaimRefused` if not."""
    if not settings.admin_token:
        raise WorkerConfigError(
            "a worker claims its events through the router's admin API: "
            "set ROUTER_ADMIN_TOKEN (and ROUTER_ADMIN_URL)"
        )
    if not worker.routes:
        raise WorkerConfigError(f"worker {worker.app} has no handlers")
    by_company: dict[str | None, list[str]] = defaultdict(list)
    for spec in worker.claims:
        by_company[spec.company].append(str(spec.pattern))
    deadline = asyncio.get_running_loop().time() + settings.claim_timeout
    for company, patterns in by_company.items():
        answer = await _claim_with_retries(worker.app, patterns, company, settings, deadline)
        if not answer.granted:
            held = answer.conflicts[0]
            scope = f"company {held['company']}" if held["company"] else "all companies"
            raise ClaimRefused(
                f"{worker.app} cannot claim {held['wanted']}: application "
                f"{held['app']!r} holds {held['event']} ({scope}), claim {held['id']}"
            )
    log.info("claims_granted", app=worker.app, claims=[str(s.pattern) for s in worker.claims])


async def _claim_with_retries(
    app: str, patterns: list[str], company: str | None, settings: WorkerSettings, deadline: float
) -> ClaimAnswer:
    """Ask the admin API, retrying while it is unreachable or unavailable (a router being
    restarted) until ``deadline``; a refusal or a bad request is final at once."""
    loop = asyncio.get_running_loop()
    delay = 0.5
    while True:
        try:
            async with AdminClient(
                settings.admin_url, settings.admin_token.reveal(), ca_file=settings.admin_ca
            ) as admin:
                return await admin.add_claims(app, patterns, company)
        except (AdminUnreachable, AdminRequestFailed) as error:
            retryable = isinstance(error, AdminUnreachable) or error.status in (502, 503, 504)
            if not retryable or loop.time() + delay > deadline:
                raise
            log.warning("claim_retrying", app=app, error=str(error), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


__all__ = ["claim_events"]
