"""Both claim stores, SQLite and the real local PostgreSQL, held to the same stories.

Each test gets a store of its own: a SQLite file under ``tmp_path`` or a PostgreSQL table
named for the test run (dropped afterwards). ``ROUTER_TEST_POSTGRES_URL`` points the
PostgreSQL half elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from router.claims.model import ClaimSpec
from router.claims.open import DEFAULT_DATABASE_URL, store_from_url
from router.claims.postgres import DEFAULT_TABLE, PostgresClaimStore
from router.claims.sqlite import SqliteClaimStore
from router.claims.store import ClaimStore, Conflict, Granted, Refused
from router.errors import ClaimStoreError, ConfigError
from tests.databases import POSTGRES_URL

pytestmark = pytest.mark.database

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The longest any one wait in these tests may take (seconds).
TIMEOUT = 60.0


@dataclass(frozen=True)
class Backend:
    """Where one test's claims live; :meth:`make` gives another store on the same place."""

    kind: str
    #: The SQLite file, or the PostgreSQL table.
    location: str

    def make(self) -> ClaimStore:
        if self.kind == "sqlite":
            return SqliteClaimStore(self.location)
        return PostgresClaimStore(POSTGRES_URL, table=self.location)

    async def opened(self) -> ClaimStore:
        store = self.make()
        async with asyncio.timeout(TIMEOUT):
            await store.open()
        return store


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A place no other test uses: a file in a directory yet to be made, or a new table."""
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "not-yet" / "claims.db"))
        return
    table = f"test_claims_{uuid.uuid4().hex[:16]}"
    yield Backend("postgres", table)
    conn = await asyncpg.connect(POSTGRES_URL, timeout=TIMEOUT)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}", timeout=TIMEOUT)
    finally:
        await conn.close(timeout=TIMEOUT)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[ClaimStore]:
    """An opened store on the test's own place, closed afterwards."""
    opened = await backend.opened()
    yield opened
    await opened.close()


def spec(app: str, pattern: str, company: str | None = None) -> ClaimSpec:
    return ClaimSpec.parse(app, pattern, company)


def granted(result: Granted | Refused) -> Granted:
    assert isinstance(result, Granted), result
    return result


def refused(result: Granted | Refused) -> Refused:
    assert isinstance(result, Refused), result
    return result


async def test_granted_claims_are_listed_with_id_app_pattern_company_and_time(
    store: ClaimStore,
) -> None:
    """Given an empty store, when "alerts" is granted two claims, both are listed as granted."""
    before = datetime.now(UTC) - timedelta(seconds=5)

    result = granted(await store.grant([spec("alerts", "sms.*", "c1"), spec("alerts", "*")]))

    assert result.created == result.claims
    assert [(c.app, str(c.pattern), c.company) for c in result.claims] == [
        ("alerts", "sms.*", "c1"),
        ("alerts", "*", None),
    ]
    first, second = result.claims
    assert 0 < first.id < second.id
    for claim in result.claims:
        assert claim.created_at is not None
        assert claim.created_at.utcoffset() == timedelta(0)
        assert before <= claim.created_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert await store.list() == [first, second]
    assert await store.list("alerts") == [first, second]
    assert await store.list("someone-else") == []


async def test_claiming_what_you_already_hold_creates_nothing(store: ClaimStore) -> None:
    """Given "alerts" holds sms.sent, asking for it again succeeds with the same claim."""
    held = granted(await store.grant([spec("alerts", "sms.sent")])).claims[0]

    again = granted(await store.grant([spec("alerts", "sms.sent")]))
    mixed = granted(
        await store.grant(
            [spec("alerts", "email.sent"), spec("alerts", "sms.sent"), spec("alerts", "email.sent")]
        )
    )

    assert again.claims == (held,)
    assert again.created == ()
    # The new claim is created once although asked twice; the answer follows the request.
    (new,) = mixed.created
    assert (new.app, str(new.pattern)) == ("alerts", "email.sent")
    assert mixed.claims == (new, held)
    assert await store.list() == [held, new]


async def test_a_claim_overlapping_another_apps_claim_is_refused_and_nothing_is_inserted(
    store: ClaimStore,
) -> None:
    """Given "billing" holds sms.*, "marketing" asking for email.opened and sms.sent of c1
    gets neither: the refusal names billing's claim, and email.opened is not inserted."""
    held = granted(await store.grant([spec("billing", "sms.*")])).claims[0]
    wanted = spec("marketing", "sms.sent", "c1")

    result = refused(await store.grant([spec("marketing", "email.opened"), wanted]))

    assert result.conflicts == (Conflict(wanted=wanted, held=held),)
    assert await store.list() == [held]


async def test_one_app_may_hold_overlapping_claims(store: ClaimStore) -> None:
    """Given "alerts" holds sms.*, it may also claim sms.sent; another app then meets both."""
    wide = granted(await store.grant([spec("alerts", "sms.*")])).claims[0]

    narrow = granted(await store.grant([spec("alerts", "sms.sent")])).created[0]
    other = refused(await store.grant([spec("other", "sms.sent")]))

    assert await store.list() == [wide, narrow]
    assert [conflict.held for conflict in other.conflicts] == [wide, narrow]


async def test_a_removed_claim_is_returned_once_and_no_longer_conflicts(
    store: ClaimStore,
) -> None:
    """Given "billing" holds sms.*, removing it returns it, then None; "marketing" may have it."""
    held = granted(await store.grant([spec("billing", "sms.*")])).claims[0]

    first = await store.remove(held.id)
    second = await store.remove(held.id)
    taken = granted(await store.grant([spec("marketing", "sms.*")]))

    assert first == held
    assert second is None
    assert await store.remove(held.id + 1_000_000) is None
    assert await store.list() == list(taken.claims)
    assert taken.claims[0].app == "marketing"


async def test_claims_outlive_the_store_that_granted_them(
    backend: Backend, store: ClaimStore
) -> None:
    """Given claims granted and the store closed, a new store on the same place has them."""
    claims = granted(
        await store.grant([spec("alerts", "sms.*"), spec("alerts", "email.opened", "c1")])
    ).claims
    await store.close()

    reopened = await backend.opened()
    try:
        listed = await reopened.list()
        result = refused(await reopened.grant([spec("other", "sms.sent")]))
    finally:
        await reopened.close()

    assert listed == list(claims)
    assert [conflict.held for conflict in result.conflicts] == [claims[0]]


async def test_a_closed_store_refuses_to_work(store: ClaimStore) -> None:
    """Given a closed store, using it is a ClaimStoreError (not a crash or a silent no-op)."""
    await store.close()

    with pytest.raises(ClaimStoreError, match="not open"):
        await store.list()


async def test_of_twenty_stores_racing_for_one_pattern_exactly_one_wins(
    backend: Backend,
) -> None:
    """Given 20 stores opened at once on one new place, when 20 apps all ask for sms.* at
    the same moment, exactly one is granted and every other is refused by that claim."""
    apps = [f"app-{n:02d}" for n in range(20)]
    async with asyncio.timeout(TIMEOUT):
        stores = await asyncio.gather(*(backend.opened() for _ in apps))
    try:
        async with asyncio.timeout(TIMEOUT):
            results = await asyncio.gather(
                *(
                    store.grant([spec(app, "sms.*")])
                    for store, app in zip(stores, apps, strict=True)
                )
            )
        listed = await stores[0].list()
    finally:
        await asyncio.gather(*(store.close() for store in stores))

    winners = [result for result in results if isinstance(result, Granted)]
    assert len(winners) == 1, results
    (winner,) = winners[0].created
    assert listed == [winner]
    for result in results:
        if isinstance(result, Refused):
            assert [conflict.held for conflict in result.conflicts] == [winner]


#: One racer: open the store when ``open`` appears, claim email.* when ``claim`` appears.
_RACER = """
import asyncio, json, sys, time
from pathlib import Path

from router.claims.postgres import PostgresClaimStore
from router.claims.model import ClaimSpec
from router.claims.sqlite import SqliteClaimStore
from router.claims.store import Granted

kind, location, url, app, gate = sys.argv[1:]
gate = Path(gate)

async def wait_for(name):
    deadline = time.monotonic() + 30
    while not (gate / name).exists():
        if time.monotonic() > deadline:
            sys.exit(f"{app}: {name} never appeared")
        await asyncio.sleep(0.001)

async def main():
    (gate / f"{app}.started").touch()
    await wait_for("open")
    if kind == "sqlite":
        store = SqliteClaimStore(location)
    else:
        store = PostgresClaimStore(url, table=location)
    await store.open()
    try:
        (gate / f"{app}.opened").touch()
        await wait_for("claim")
        result = await store.grant([ClaimSpec.parse(app, "email.*")])
    finally:
        await store.close()
    if isinstance(result, Granted):
        print(json.dumps({"app": app, "granted": [c.id for c in result.created]}))
    else:
        print(json.dumps({"app": app, "refused_by": [c.held.app for c in result.conflicts]}))

asyncio.run(main())
"""


async def _wait_for_files(
    gate: Path, names: list[str], racers: list[asyncio.subprocess.Process]
) -> None:
    """Wait until every file in ``names`` exists in ``gate``, failing if a racer exits first."""
    async with asyncio.timeout(TIMEOUT):
        while not all((gate / name).exists() for name in names):
            exited = [racer for racer in racers if racer.returncode is not None]
            assert not exited, [
                (await racer.communicate())[1].decode(errors="replace") for racer in exited
            ]
            await asyncio.sleep(0.01)


async def test_of_six_processes_racing_for_one_pattern_exactly_one_wins(
    backend: Backend, tmp_path: Path
) -> None:
    """Given 6 OS processes that open their own store on one new place at the same moment,
    when they all ask for email.* for their own app at the same moment, exactly one wins
    and the 5 others are refused by the winner's claim."""
    gate = tmp_path / "gate"
    gate.mkdir()
    apps = [f"proc-{n}" for n in range(6)]
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RACER,
            backend.kind,
            backend.location,
            POSTGRES_URL,
            app,
            str(gate),
            cwd=PROJECT_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for app in apps
    ]
    try:
        await _wait_for_files(gate, [f"{app}.started" for app in apps], racers)
        (gate / "open").touch()
        await _wait_for_files(gate, [f"{app}.opened" for app in apps], racers)
        (gate / "claim").touch()
        async with asyncio.timeout(TIMEOUT):
            outputs = [await racer.communicate() for racer in racers]
    finally:
        for racer in racers:
            if racer.returncode is None:
                racer.kill()
                await racer.wait()

    for racer, (_, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, err.decode(errors="replace")
    reports = [json.loads(out) for out, _ in outputs]
    winners = [report["app"] for report in reports if "granted" in report]
    assert len(winners) == 1, reports
    assert all(report["refused_by"] == winners for report in reports if "refused_by" in report)
    store = await backend.opened()
    try:
        listed = await store.list()
    finally:
        await store.close()
    assert [(claim.app, str(claim.pattern)) for claim in listed] == [(winners[0], "email.*")]


async def test_an_unusable_database_is_a_one_line_claim_store_error(tmp_path: Path) -> None:
    """Given a SQLite path under a regular file and a PostgreSQL port nobody listens on,
    opening either store is a ClaimStoreError of one line."""
    (tmp_path / "a-file").write_text("not a directory")
    stores: list[ClaimStore] = [
        SqliteClaimStore(tmp_path / "a-file" / "claims.db"),
        PostgresClaimStore("postgresql://postgres@127.0.0.1:9/test", timeout=5),
    ]

    for store in stores:
        with pytest.raises(ClaimStoreError) as raised:
            async with asyncio.timeout(TIMEOUT):
                await store.open()
        assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///claims/router.db", Path("claims/router.db")),
        ("sqlite:////var/lib/router/claims.db", Path("/var/lib/router/claims.db")),
        (DEFAULT_DATABASE_URL, Path("attentive-router.db")),
    ],
)
def test_a_sqlite_url_names_a_relative_or_absolute_file(url: str, path: Path) -> None:
    """Three slashes: a path relative to the working directory; four: an absolute path."""
    store = store_from_url(url)

    assert isinstance(store, SqliteClaimStore)
    assert store.path == path
    assert store.path.is_absolute() == url.startswith("sqlite:////")


async def test_a_relative_sqlite_url_is_a_file_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the working directory is tmp_path, sqlite:///data/claims.db lives in tmp_path/data."""
    monkeypatch.chdir(tmp_path)
    store = store_from_url("sqlite:///data/claims.db", busy_timeout=5.0)

    await store.open()
    try:
        granted(await store.grant([spec("alerts", "sms.*")]))
    finally:
        await store.close()

    assert (tmp_path / "data" / "claims.db").is_file()


@pytest.mark.parametrize(
    "url", ["postgresql://postgres@db.example:5432/router", "postgres://router@localhost/claims"]
)
def test_a_postgres_url_goes_to_postgres_as_it_is(url: str) -> None:
    default = store_from_url(url)
    named = store_from_url(url, table="other_claims")

    assert isinstance(default, PostgresClaimStore)
    assert (default.url, default.table) == (url, DEFAULT_TABLE)
    assert isinstance(named, PostgresClaimStore)
    assert (named.url, named.table) == (url, "other_claims")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "attentive-router.db",
        "sqlite://claims.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "mysql://router:s3cret@db/claims",
        "redis://localhost",
    ],
)
def test_any_other_url_is_a_config_error_listing_the_accepted_forms(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        store_from_url(url)

    message = str(raised.value)
    assert "\n" not in message
    assert "sqlite:///" in message
    assert "sqlite:////" in message
    assert "postgresql://" in message
    assert "s3cret" not in message
