"""``attentive-router jobs list | show | cancel | audit`` on a SQLite store: tables, --json,
exit codes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from router.cli.main import main
from router.parked.jobs import Job, JobRequest, JobState
from router.parked.query import Query
from router.parked.sqlite import SqliteParkedStore
from tests.environment import no_router_environment
from tests.parked_stores import body_of, dead_letter

__all__ = ["no_router_environment"]  # autouse: no ROUTER_* variable of the shell counts


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``attentive-router jobs ...``; (exit code, stdout, stderr)."""
    try:
        code = main(["jobs", *argv])
    except SystemExit as leaving:  # argparse's wrong usage
        code = int(leaving.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def prepared(database: Path) -> tuple[Job, Job]:
    """Three dead letters; a replay job that ran to done, and a queued purge."""
    store = SqliteParkedStore(database)
    await store.open()
    await store.upgrade()
    await store.add_many(
        [dead_letter(body_of("sms.sent", n=n), message_id=f"m{n}") for n in range(3)]
    )
    query = Query.build(place="dlq", app="alerts")
    replay = await store.create_job(JobRequest.build("replay", query, "ops-alice", limit=2))
    claimed = await store.claim_job("runner", timedelta(seconds=30), replay.id)
    assert claimed is not None
    finished = await store.finish_job(replay.id, "runner", JobState.DONE)
    assert finished is not None
    purge = await store.create_job(JobRequest.build("purge", query, "ops-bob", dry_run=True))
    await store.close()
    return finished, purge


def test_jobs_are_listed_shown_and_cancelled(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "router.db"
    replay, purge = asyncio.run(prepared(database))
    monkeypatch.setenv("ROUTER_DATABASE_URL", f"sqlite:///{database}")

    # jobs list: newest first, one row each
    code, out, _ = cli(capsys, "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == [
        "ID", "KIND", "STATE", "MATCHED", "DONE", "FAILED", "BY", "CREATED"
    ]  # fmt: skip
    assert lines[1].split()[:5] == [str(purge.id), "purge", "(dry", "run)", "queued"]
    assert lines[2].split()[:4] == [str(replay.id), "replay", "done", "2"]

    # jobs list --state --json
    code, out, _ = cli(capsys, "list", "--state", "queued", "--json")
    assert code == 0
    assert [j["id"] for j in orjson.loads(out)["jobs"]] == [purge.id]

    # jobs show
    code, out, _ = cli(capsys, "show", str(replay.id))
    assert code == 0
    assert "progress:     0 of 2 (0%)" in out and "requested by: ops-alice" in out
    code, out, _ = cli(capsys, "show", str(replay.id), "--json")
    assert orjson.loads(out)["job"]["query"] == {"place": "dlq", "app": "alerts", "state": "parked"}

    # jobs cancel: a queued one is cancelled, a finished one is refused (exit 1)
    code, out, _ = cli(capsys, "cancel", str(purge.id), "--by", "ops-carol")
    assert code == 0 and out.startswith(f"job {purge.id} (purge) cancelled by ops-carol")
    code, _, err = cli(capsys, "cancel", str(replay.id))
    assert code == 1 and "done already" in err

    # jobs audit: who did what, newest first (the finished replay, the cancel)
    code, out, _ = cli(capsys, "audit", "--json")
    assert code == 0
    records = orjson.loads(out)["audit"]
    assert [(r["action"], r["who"], r["job_id"]) for r in records] == [
        ("cancel", "ops-carol", purge.id),
        ("replay", "ops-alice", replay.id),
    ]
    assert records[1]["filter"]["app"] == "alerts" and records[1]["counts"]["matched"] == 2
    code, out, _ = cli(capsys, "audit", "--job", str(replay.id))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["AT", "WHO", "ACTION", "JOB", "FILTER", "COUNTS"]
    assert len(lines) == 2 and "ops-alice" in lines[1] and "replay" in lines[1]

    # not found (1) and wrong usage (2)
    code, _, err = cli(capsys, "show", "999")
    assert code == 1 and "no job 999" in err
    code, _, err = cli(capsys, "list", "--limit", "0")
    assert code == 2 and "--limit must be between 1 and 1000" in err
    code, _, _ = cli(capsys, "list", "--state", "sleeping")
    assert code == 2

    # --database-url names the store when the environment does not
    monkeypatch.delenv("ROUTER_DATABASE_URL")
    code, out, _ = cli(capsys, "list", "--json", "--database-url", f"sqlite:///{database}")
    assert code == 0 and len(orjson.loads(out)["jobs"]) == 2
