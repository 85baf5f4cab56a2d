"""What every admin route shares: JSON answers, the answer to an error, JSON request bodies."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from router.errors import ClaimStoreError, InvalidInput, RouterError, codes_for

#: Seconds a client is asked to wait before asking again after a 503.
RETRY_AFTER = "5"
#: What the API says instead of these errors' own text, which names files and tables.
_WITHHELD: dict[type[RouterError], str] = {ClaimStoreError: "the claims database is unavailable"}


def json_response(
    payload: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


def error_response(error: RouterError, *, said: str | None = None) -> web.Response:
    """The answer to ``error``: the status of its kind, ``{"error": <its message>}``.

    A route that says what the failure means for the request passes ``said``; the error's own
    message then comes as ``reason``. A 503 asks the client to come back (``Retry-After``).
    """
    status = codes_for(error).http_status
    text = next((text for cls, text in _WITHHELD.items() if isinstance(error, cls)), str(error))
    payload = {"error": said, "reason": text} if said else {"error": text}
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    return json_response(payload, status=status, headers=headers)


async def json_object(
    request: web.Request, *, shape: str = "a JSON object", required: bool = True
) -> dict[str, Any]:
    """The request's body as a JSON object (an empty body is ``{}`` unless ``required``);
    :class:`InvalidInput` when it is not one (``shape`` says what is expected)."""
    raw = await request.read()
    if not raw.strip() and not required:
        return {}
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput("the body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"the body must be {shape}")
    return data


__all__ = ["RETRY_AFTER", "error_response", "json_object", "json_response"]
