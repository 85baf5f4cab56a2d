"""The environment a test of the command line starts from.

The CLI reads ``ROUTER_*`` variables; whatever the shell running pytest has must not count.
A test module imports :func:`no_router_environment` to have it apply to each of its tests.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def no_router_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without any ROUTER_* variable."""
    for name in list(os.environ):
        if name.startswith("ROUTER_"):
            monkeypatch.delenv(name)


__all__ = ["no_router_environment"]
