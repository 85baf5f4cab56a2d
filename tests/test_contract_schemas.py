"""The JSON Schemas of the event types: written one per type, and everything the router's own
tools and docs show as an event validates against its type's schema (checked with jsonschema,
not with the models they were made from)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator

from router.cli.main import main
from router.cli.sendtest import send_examples
from router.contract.events import EVENT_TYPES
from router.contract.examples import example_payload
from router.contract.schemas import event_schema

ROOT = Path(__file__).resolve().parent.parent
_JSON_BLOCK = re.compile(r"^```json\n(.*?)^```", re.MULTILINE | re.DOTALL)


def validator(event_type: str) -> Draft202012Validator:
    schema = event_schema(event_type)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_the_command_writes_one_valid_json_schema_per_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["contract", "schemas", str(tmp_path / "schemas")]) == 0
    assert "11 JSON Schemas written" in capsys.readouterr().out
    written = sorted((tmp_path / "schemas").iterdir())
    assert [p.name for p in written] == sorted(f"{t}.json" for t in EVENT_TYPES)
    for path in written:
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        assert schema["properties"]["type"]["const"] == path.name.removesuffix(".json")


def test_a_directory_that_cannot_be_written_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("not a directory")
    assert main(["contract", "schemas", str(a_file)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "cannot write into" in captured.err
    assert a_file.read_text() == "not a directory"


def test_a_schema_refuses_another_types_payload_and_a_malformed_one() -> None:
    subscribed = validator("sms.subscribed")
    assert subscribed.is_valid(example_payload("sms.subscribed"))
    assert not subscribed.is_valid(example_payload("sms.sent"))
    assert not subscribed.is_valid({"type": "sms.subscribed", "company": {"company_id": 5}})
    assert not subscribed.is_valid({"type": "sms.subscribed"})
    # unknown fields are allowed: Attentive may add some
    assert subscribed.is_valid({**example_payload("sms.subscribed"), "new_part": {"x": 1}})


async def test_every_payload_send_test_sends_validates_against_its_types_schema() -> None:
    # Given an HTTP endpoint that keeps what it is sent
    bodies: list[bytes] = []

    async def keep(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post("/webhooks/attentive", keep)
    async with TestServer(app) as server:
        # When send-test sends one of each type there
        sent = await send_examples(
            str(server.make_url("/webhooks/attentive")),
            EVENT_TYPES,
            signing_key="k",
            company_id="c1",
        )
    # Then every body is valid against the schema of its type
    assert [s.status for s in sent] == [200] * len(EVENT_TYPES)
    payloads: list[dict[str, Any]] = [orjson.loads(b) for b in bodies]
    assert [p["type"] for p in payloads] == list(EVENT_TYPES)
    for payload in payloads:
        errors = [e.message for e in validator(payload["type"]).iter_errors(payload)]
        assert errors == [], payload["type"]


def test_every_json_event_in_the_docs_validates_against_its_types_schema() -> None:
    # Given every JSON block of the README and docs/ that is an event of a documented type
    examples = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in _JSON_BLOCK.findall(page.read_text()):
            value = json.loads(block)
            if isinstance(value, dict) and value.get("type") in EVENT_TYPES:
                examples.append((page.name, value))
    # (the contract page shows one of each)
    assert {value["type"] for _, value in examples} == set(EVENT_TYPES)
    for where, value in examples:
        errors = [e.message for e in validator(value["type"]).iter_errors(value)]
        assert errors == [], f"{where}: {value['type']}"
