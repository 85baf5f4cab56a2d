"""The internal listener of an ingress under test: ``/metrics``, ``/readyz`` and ``/healthz``
are there, not on the webhook port."""

from __future__ import annotations

import aiohttp

from tests.conftest import Client, served_ingress


async def internal(client: Client, path: str) -> aiohttp.ClientResponse:
    """``GET path`` on the internal listener of the ingress ``client`` talks to, its body read
    (``.text()`` and ``.json()`` answer from it)."""
    port = served_ingress(client).internal_port
    response = await client.session.get(f"http://127.0.0.1:{port}{path}")
    await response.read()
    return response


__all__ = ["internal"]
