"""The Attentive page: ``attentive audit`` in the browser, when ``ATTENTIVE_API_TOKEN`` is set.

Attentive's webhooks are listed through its API and compared with the claims, as the command
does: conflicts (a company's event type sent to two webhooks), types Attentive sends that
nobody claims, claims no webhook feeds, and webhooks whose URL names another company. A
failure of Attentive's API is shown on the page; the token never is.
"""

from __future__ import annotations

from aiohttp import web

from router.admin.claims import CLAIMS
from router.attentive.audit import AuditClaim, audit, compact_events, group_conflicts
from router.attentive.client import AttentiveClient
from router.attentive.errors import AttentiveError
from router.console.keys import ATTENTIVE
from router.console.render import render
from router.errors import NotFound
from router.secret import redact_url


def add_routes(console: web.Application) -> None:
    console.router.add_get("/attentive", attentive_page)


async def attentive_page(request: web.Request) -> web.Response:
    """GET /console/attentive: the audit now (404 without ``ATTENTIVE_API_TOKEN``)."""
    settings = request.config_dict.get(ATTENTIVE)
    if settings is None:
        raise NotFound("the Attentive page needs ATTENTIVE_API_TOKEN in the router's environment")
    claims = [
        AuditClaim(claim.app, claim.pattern, claim.company, claim.id)
        for claim in await request.config_dict[CLAIMS].list(None)
    ]
    try:
        async with AttentiveClient(settings) as client:
            webhooks = await client.list_webhooks()
    except AttentiveError as error:
        return render(request, "attentive.html", {"failed": str(error)}, status=502)
    report = audit(webhooks, claims)
    rows = [
        {
            "id": webhook.id,
            "type": webhook.type or "",
            "enabled": webhook.enabled,
            "company": webhook.company_id,
            "url": redact_url(webhook.url),
            "events": ", ".join(compact_events(webhook.events)),
        }
        for webhook in webhooks
    ]
    context = {
        "failed": None,
        "webhooks": rows,
        "claims": len(claims),
        "conflicts": [group.describe() for group in group_conflicts(report.conflicts)],
        "warnings": [warning.describe() for warning in report.warnings],
        "elsewhere": report.elsewhere,
    }
    return render(request, "attentive.html", context)


__all__ = ["add_routes"]
