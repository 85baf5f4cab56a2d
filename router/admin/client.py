"""A client of the admin API, for the CLI and for workers claiming their events at start-up.

An ``https://`` URL is verified (certificate and host name) against the CA file given
(``ROUTER_ADMIN_CA``), else against the system's CAs: see :mod:`router.tls`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from router.errors import Unavailable, UpstreamFailed
from router.tls import client_context


class AdminUnreachable(Unavailable):
    """Raised when the admin API cannot be reached at all."""


class AdminRequestFailed(UpstreamFailed):
    """Raised when the admin API answers with an error (401, 400, 404, 503, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"admin API answered {status}: {message}")
        self.status = status


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    """The answer to a claim request: granted claims, or the conflicting claims."""

    granted: bool
    claims: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]


class AdminClient:
    """``async with AdminClient(url, token) as admin: await admin.add_claims(...)``.

    ``token`` is the token itself (``settings.admin_token.reveal()``); ``ca_file``: the PEM
    file of the CA an ``https://`` URL's certificate is verified against (else the system's).
    """

    def __init__(
        self, base_url: str, token: str, *, ca_file: str = "", timeout: float = 15.0
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        https = self._base.lower().startswith("https://")
        self._tls = client_context(ca_file) if https else None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AdminClient(base_url={self._base!r})"

    async def __aenter__(self) -> AdminClient:
        connector = aiohttp.TCPConnector(ssl=self._tls) if self._tls is not None else None
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, headers=self._headers, connector=connector
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def list_claims(self, app: str | None = None) -> list[dict[str, Any]]:
        params = {"app": app} if app else {}
        _, body = await self._request("GET", "/admin/claims", params=params)
        claims: list[dict[str, Any]] = body["claims"]
        return claims

    async def add_claims(
        self, app: str, events: list[str], company: str | None = None
    ) -> ClaimAnswer:
        payload: dict[str, Any] = {"app": app, "events": events}
        if company is not None:
            payload["company"] = company
        status, body = await self._request("POST", "/admin/claims", json=payload, ok=(409,))
        if status == 409:
            return ClaimAnswer(False, [], body["conflicts"])
        return ClaimAnswer(True, body["claims"], [])

    async def remove_claim(self, claim_id: int) -> bool:
        """True when removed, False when there was no such claim."""
        status, _ = await self._request("DELETE", f"/admin/claims/{claim_id}", ok=(404,))
        return status == 204

    async def backfill(self, **fields: object) -> dict[str, Any]:
        """``POST /admin/history/replay``: a backfill job (``since``, ``to_app``, filters);
        the job, with ``unclaimed``."""
        _, body = await self._request("POST", "/admin/history/replay", json=fields)
        job: dict[str, Any] = body
        return job

    async def app_state(self, app: str) -> dict[str, Any]:
        """``GET /admin/apps/{app}``: whether the application is paused (``paused``, ``since``,
        ``by``, ``reason``), its breaker and its queue; an application never paused is running.
        A worker asks this at start and after each reconnect (a router without the route
        answers 404: :class:`AdminRequestFailed` with its ``status``)."""
        _, body = await self._request("GET", f"/admin/apps/{quote(app, safe='')}")
        state: dict[str, Any] = body
        return state

    async def list_apps(self) -> list[dict[str, Any]]:
        """``GET /admin/apps``: every application (claimed, or ever paused), each as
        :meth:`app_state` answers."""
        _, body = await self._request("GET", "/admin/apps")
        apps: list[dict[str, Any]] = body["apps"]
        return apps

    async def change_app(self, app: str, action: str, **fields: str) -> dict[str, Any]:
        """``POST /admin/apps/{app}/{action}`` (``pause`` with ``reason``, or ``resume``; ``by``
        names who asks beside the token): the application after it, with ``changed``,
        ``notified`` and any ``warning``."""
        path = f"/admin/apps/{quote(app, safe='')}/{action}"
        _, body = await self._request("POST", path, json=fields)
        answer: dict[str, Any] = body
        return answer

    async def _request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any
    ) -> tuple[int, Any]:
        if self._session is None:
            raise RuntimeError("use AdminClient as an async context manager")
        url = self._base + path
        try:
            async with self._session.request(method, url, **kwargs) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise AdminUnreachable(
                f"cannot reach the admin API at {self._base}: {error or type(error).__name__}"
            ) from None
        body = orjson.loads(raw) if raw else None
        if status >= 400 and status not in ok:
            message = body.get("error", raw.decode()) if isinstance(body, dict) else raw.decode()
            raise AdminRequestFailed(status, str(message))
        return status, body


__all__ = ["AdminClient", "AdminRequestFailed", "AdminUnreachable", "ClaimAnswer"]
