"""Running the process's main coroutine on the fastest event loop available."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (it is, on Linux and macOS): its event
    loop and transports cost the ingress and the workers a good part less CPU per event than
    asyncio's own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def freeze_startup_heap() -> None:
    """Move every object alive now (modules, app, settings) out of the garbage collector's
    reach: a full collection then scans only what requests create, so it no longer pauses
    the answers in flight for the time it takes to walk the whole heap. For processes'
    start-up only: frozen objects are never collected."""
    gc.collect()
    gc.freeze()


__all__ = ["freeze_startup_heap", "run_loop"]
