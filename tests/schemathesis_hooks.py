"""A check of our own for schemathesis's run without a token (``SCHEMATHESIS_HOOKS`` names this
module in tests/test_admin_openapi.py): every route but the document itself answers 401."""

from __future__ import annotations

from typing import Any

import schemathesis

#: The one route served without a token.
DOCUMENT_PATH = "/admin/openapi.json"


@schemathesis.check
def answered_401(ctx: Any, response: Any, case: Any) -> bool | None:
    """Without a token, a route answers 401 and asks for a bearer token."""
    if case.path == DOCUMENT_PATH:
        return None
    if response.status_code != 401:
        raise AssertionError(f"{case.method} {case.formatted_path}: {response.status_code}")
    if response.headers.get("www-authenticate", [""])[0].lower() != "bearer":
        raise AssertionError("401 without WWW-Authenticate: Bearer")
    return True
