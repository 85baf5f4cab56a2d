"""The keeper: drains the landing zones into the parked-event store, commit first, then ack.

The landing zones are ``attentive.unrouted``, ``attentive.invalid`` and the DLQ of every
application the claims registry knows (read again every ``ROUTER_KEEPER_APPS_INTERVAL``
seconds, so a newly claimed application's DLQ is drained without a restart; a classic DLQ of
an earlier release is replaced by a quorum one first: :mod:`router.parked.landing`). How one
connection's deliveries are batched, committed and acked: :mod:`router.parked.keeper_session`;
how a commit waits out a database outage: :mod:`router.parked.keeper_commit`.

Several keepers may run at once (router replicas): they compete for the deliveries, and the
store keeps a message seen by two of them once. When the broker connection is lost, the
keeper connects again (to the next listed node first) and goes on; what it had not acked
comes back to the queues, and is stored once. Each keeper also runs replay and purge jobs
(:class:`~router.parked.runner.JobRunner`; unless ``ROUTER_KEEPER_JOBS=off``) and deletes
what retention lets go (:class:`~router.parked.janitor.Janitor`). It runs inside
``attentive-router serve`` (the first process) and on its own as ``attentive-router keeper``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import timedelta

import aiormq
import structlog

from router.amqp.nodes import BrokerUnreachable, connect_first
from router.claims.model import Claim
from router.claims.open import store_from_url
from router.claims.store import ClaimStore
from router.errors import RouterError
from router.parked.janitor import Janitor
from router.parked.keeper_commit import Committer
from router.parked.keeper_session import Session
from router.parked.metrics import KeeperMetrics
from router.parked.open import parked_store_from_url
from router.parked.runner import JobRunner
from router.parked.settings import KeeperSettings
from router.parked.store import ParkedStore
from router.settings import Settings

log = structlog.get_logger("router.parked.keeper")

#: Seconds between two attempts to reach the broker.
RECONNECT_INTERVAL = 1.0
#: Seconds a stopping keeper gives the job it runs to end by itself before cancelling it
#: (its lease then expires and another keeper resumes it where it was recorded).
JOBS_STOP_TIMEOUT = 5.0
#: What a lost or refused broker connection raises (as :mod:`router.amqp.nodes` catches).
BROKER_ERRORS = (OSError, TimeoutError, aiormq.exceptions.AMQPError, RuntimeError)


class Keeper:
    """Drains the landing zones of ``settings``'s broker and namespace into the parked-event
    store of its database URL (or ``store``), with the applications of the claims registry
    there (or ``claims``)."""

    def __init__(
        self,
        settings: Settings,
        keeper: KeeperSettings | None = None,
        *,
        store: ParkedStore | None = None,
        claims: ClaimStore | None = None,
        metrics: KeeperMetrics | None = None,
        connection_name: str = "attentive-router keeper",
    ) -> None:
        self.settings = keeper or KeeperSettings()
        self._amqp_url = settings.amqp_url.reveal()
        self._names = settings.names
        database = settings.database_url.reveal()
        self.store = store or parked_store_from_url(database)
        self.claims = claims or store_from_url(database)
        self.metrics = metrics
        named = str(settings.database_url) if store is None else repr(store)
        self.committer = Committer(self.store, metrics, database=named)
        self.connection_name = connection_name
        #: The applications whose DLQ the current connection drains.
        self.draining: frozenset[str] = frozenset()
        #: Set once a connection drains unrouted, invalid and every claimed application's DLQ
        #: that it could; cleared when the connection is lost.
        self.ready = asyncio.Event()
        self._claims_open = False
        self._claims_failing = False

    async def run(self, stop: asyncio.Event) -> None:
        """Drain (and run jobs) until ``stop`` is set; the store and the claims registry are
        closed after."""
        try:
            if not await _until(stop, self.committer.prepare(upgrade=self.settings.upgrade)):
                return
            jobs = None
            if self.settings.jobs:
                runner = JobRunner(
                    store=self.store,
                    amqp_url=self._amqp_url,
                    names=self._names,
                    claims_of=self.app_claims,
                    lease=timedelta(seconds=self.settings.job_lease),
                )
                jobs = asyncio.create_task(runner.run(stop), name="keeper-jobs")
            janitor = Janitor(
                self.store,
                timedelta(days=self.settings.retention_days),
                self.settings.janitor_interval,
                self.metrics,
            )
            sweeping = asyncio.create_task(janitor.run(stop), name="keeper-janitor")
            try:
                await self._drain_until(stop)
            finally:
                await _ended(sweeping, JOBS_STOP_TIMEOUT)
                if jobs is not None:
                    await _ended(jobs, JOBS_STOP_TIMEOUT)
        finally:
            with contextlib.suppress(RouterError):
                await self.store.close()
            with contextlib.suppress(RouterError):
                await self.claims.close()
            log.info("keeper_stopped")

    async def _drain_until(self, stop: asyncio.Event) -> None:
        start, attempt = 0, 0
        while not stop.is_set():
            attempt += 1
            try:
                connection, node = await connect_first(
                    self._amqp_url, start, name=self.connection_name
                )
            except BrokerUnreachable as error:
                if attempt == 1 or attempt % 30 == 0:
                    log.warning("broker_unreachable", attempt=attempt, error=str(error))
                start += 1
                await _until(stop, asyncio.sleep(RECONNECT_INTERVAL))
                continue
            attempt = 0
            session = Session(
                connection,
                self._names,
                self.settings,
                self.committer,
                self._claimed_apps,
                self.metrics,
                self._drained,
            )
            try:
                log.info("keeper_connected", node=node)
                await session.run(stop)
                if not stop.is_set():
                    log.warning("keeper_connection_lost", node=node)
            except BROKER_ERRORS as error:
                log.warning("keeper_connection_lost", node=node, error=repr(error))
            finally:
                self.ready.clear()
                self.draining = frozenset()
                if not connection.is_closed:
                    with contextlib.suppress(*BROKER_ERRORS):
                        await connection.close()  # (what was not acked goes back)
            if not stop.is_set():
                start = node + 1
                await _until(stop, asyncio.sleep(RECONNECT_INTERVAL))

    def _drained(self, apps: frozenset[str]) -> None:
        self.draining = apps
        self.ready.set()

    async def app_claims(self, app: str | None = None) -> list[Claim]:
        """The claims of ``app`` (of every application) in the registry now."""
        if not self._claims_open:
            await self.claims.open()
            self._claims_open = True
        return await self.claims.list(app)

    async def _claimed_apps(self) -> set[str] | None:
        """The applications the claims registry knows (None while it cannot be read)."""
        try:
            apps = {claim.app for claim in await self.app_claims()}
        except RouterError as error:
            if not self._claims_failing:
                log.warning("keeper_claims_unreadable", error=str(error), retrying=True)
            self._claims_failing = True
            return None
        self._claims_failing = False
        return apps


async def _ended(task: asyncio.Task[None], timeout: float) -> None:
    """Wait for ``task`` to end by itself for ``timeout`` seconds, then cancel it."""
    await asyncio.wait({task}, timeout=timeout)
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _until(stop: asyncio.Event, work: Awaitable[object]) -> bool:
    """Run ``work`` unless ``stop`` is set first; True when it finished (its error raised)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        stopping.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return True


__all__ = ["BROKER_ERRORS", "JOBS_STOP_TIMEOUT", "RECONNECT_INTERVAL", "Keeper"]
