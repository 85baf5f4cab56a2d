"""``attentive-router worker MODULE:OBJECT``: load a worker definition and run it until a signal."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import signal
import sys
from collections.abc import Callable, Mapping

from consumers.runtime.errors import ClaimRefused, WorkerConfigError
from consumers.runtime.runner import WorkerRunner
from consumers.runtime.settings import WorkerSettings
from consumers.runtime.worker import Worker
from router.admin.client import AdminRequestFailed, AdminUnreachable
from router.errors import codes_for
from router.loop import freeze_startup_heap, run_loop
from router.observability import configure_logging


def load_worker(target: str) -> Worker:
    """Import ``module:object``; the object is a :class:`Worker` or a function returning one."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise WorkerConfigError(
            f"expected MODULE:OBJECT, such as consumers.sms_audit:worker, not {target!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise WorkerConfigError(f"cannot import {module_name}: {error}") from None
    found = getattr(module, attribute, None)
    if callable(found) and not isinstance(found, Worker) and _takes_no_arguments(found):
        try:
            found = found()
        except Exception as error:
            raise WorkerConfigError(f"{target}() failed: {error!r}") from None
    if not isinstance(found, Worker):
        raise WorkerConfigError(f"{target} is not a consumers.Worker")
    return found


def _takes_no_arguments(function: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters
    )


def run_worker_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The exit code: 0 stopped by a signal, 1 refused or failed, 2 misconfigured."""
    try:
        settings = WorkerSettings.from_env(
            env, prefetch=args.prefetch, metrics_port=args.metrics_port, log_format=args.log_format
        )
        worker = load_worker(args.target)
        configure_logging(settings.log_format, settings.log_level)
        run_loop(_run(worker, settings))
    except WorkerConfigError as error:
        print(f"attentive-router worker: {error}", file=sys.stderr)
        return codes_for(error).exit_code
    except (ClaimRefused, AdminUnreachable, AdminRequestFailed) as error:
        print(f"attentive-router worker: refusing to start: {error}", file=sys.stderr)
        return codes_for(error).exit_code
    return 0


async def _run(worker: Worker, settings: WorkerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    freeze_startup_heap()  # no long collection pauses in the tail of handling latency
    await WorkerRunner(worker, settings).run(stop)


__all__ = ["load_worker", "run_worker_command"]
