"""attribute-forwarder: POST every ``custom_attribute.set`` to an HTTP endpoint of yours.

``ATTRIBUTE_FORWARDER_URL`` is required, so ``worker`` is built on first access (not at
import): ``attentive-router worker consumers.attribute_forwarder:worker`` reads the
environment then, and a missing URL is a one-line configuration error. Tests call
:func:`build_worker` with an environment of their own.
"""

from __future__ import annotations

from typing import Any

from consumers.attribute_forwarder.forwarder import build_worker
from consumers.runtime.worker import Worker


def __getattr__(name: str) -> Any:
    """``worker``: built from ``os.environ`` the first time it is asked for, then kept."""
    if name != "worker":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built: Worker = build_worker()
    globals()["worker"] = built
    return built


__all__ = ["build_worker"]
