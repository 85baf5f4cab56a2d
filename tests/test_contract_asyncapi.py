"""The AsyncAPI document: generated from the names and the models, accepted by the AsyncAPI
project's own parser (which refuses a broken one), and with ``--claims`` saying who receives
what from the live claims registry."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.cli.contract import broker_facts
from router.cli.main import main
from router.contract import names as names_module
from router.contract.asyncapi import document
from router.contract.models import MODELS
from router.contract.names import Names
from router.contract.schemas import EVENT_HEADERS, INVALID_HEADERS
from tests.conftest import AUTH, TOKEN, Client

ROOT = Path(__file__).resolve().parent.parent
PARSER_DIR = ROOT / "tests" / "asyncapi"
NODE = shutil.which("node")


def parse_with_asyncapi(*documents: Path) -> list[dict[str, Any]]:
    """What @asyncapi/parser says of each document (one JSON line each)."""
    if NODE is None:
        pytest.skip("node is not installed: the AsyncAPI parser cannot run (make test installs it)")
    if not (PARSER_DIR / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail("the AsyncAPI parser is not installed: run scripts/ensure-node-tools.sh")
    run = subprocess.run(
        [NODE, "validate.mjs", *map(str, documents)],
        cwd=PARSER_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.stderr == "", run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def cli_document(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["contract", "asyncapi", *args]) == 0
    return capsys.readouterr().out


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a JSON document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_the_document_is_accepted_by_the_asyncapi_parser_and_a_broken_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the document as the command prints it, in JSON and in YAML
    as_json = tmp_path / "asyncapi.json"
    as_json.write_text(cli_document(capsys))
    as_yaml = tmp_path / "asyncapi.yaml"
    as_yaml.write_text(cli_document(capsys, "--yaml"))
    assert yaml.safe_load(as_yaml.read_text()) == json.loads(as_json.read_text())
    # and two broken copies: an operation on a channel that does not exist, and the object
    # form of discriminator that JSON-schema generators emit
    broken = json.loads(as_json.read_text())
    broken["operations"]["worker.receive"]["channel"] = {"$ref": "#/channels/nowhere"}
    missing_channel = tmp_path / "missing-channel.json"
    missing_channel.write_text(json.dumps(broken))
    broken = json.loads(as_json.read_text())
    broken["components"]["schemas"]["SmsSubscribed"]["discriminator"] = {"propertyName": "type"}
    object_discriminator = tmp_path / "object-discriminator.json"
    object_discriminator.write_text(json.dumps(broken))

    # When the AsyncAPI project's parser reads all four
    results = parse_with_asyncapi(as_json, as_yaml, missing_channel, object_discriminator)

    # Then ours are valid AsyncAPI 3.0.0 without an error, and both broken ones are refused
    good_json, good_yaml, bad_channel, bad_discriminator = results
    for good in (good_json, good_yaml):
        assert (good["valid"], good["version"], good["errors"]) == (True, "3.0.0", [])
    assert not bad_channel["valid"] and bad_channel["errors"]
    assert not bad_discriminator["valid"]
    assert any("discriminator" in error for error in bad_discriminator["errors"])


def test_every_type_is_a_channel_of_the_events_exchange_keyed_by_company() -> None:
    names = Names("t-contract")
    doc = document(broker_facts(names))
    for event_type, model in MODELS.items():
        channel = doc["channels"][event_type]
        assert channel["address"] == f"{event_type}.{{companyId}}"
        assert "companyId" in channel["parameters"]
        exchange = channel["bindings"]["amqp"]["exchange"]
        assert (exchange["name"], exchange["type"], exchange["durable"]) == (
            "t-contract.events",
            "topic",
            True,
        )
        assert list(channel["messages"]) == [model.__name__]
        payload = doc["components"]["messages"][model.__name__]["payload"]["$ref"]
        schema = doc["components"]["schemas"][payload.rsplit("/", 1)[1]]
        assert schema["properties"]["type"]["const"] == event_type


def test_the_queues_come_from_the_names_with_their_arguments_and_binding_keys() -> None:
    doc = document(broker_facts(Names("t-contract")))
    channels = doc["channels"]
    addresses = {c["address"] for c in channels.values()}
    assert {
        "t-contract.app.{app}",
        "t-contract.app.{app}.retry.5000ms",
        "t-contract.app.{app}.retry.1800000ms",
        "t-contract.app.{app}.dlq",
        "t-contract.unrouted",
        "t-contract.invalid",
    } <= addresses
    app = channels["app"]
    assert app["x-queue-arguments"]["x-queue-type"] == "quorum"
    assert app["x-queue-arguments"]["x-dead-letter-exchange"] == "t-contract.app.{app}.dead"
    assert {"claim": "`sms.*`, company `X`", "bindingKey": "sms.#.X"} in app["x-binding-keys"]
    assert channels["app.retry.30000ms"]["x-queue-arguments"]["x-message-ttl"] == 30000


def test_every_header_in_the_names_module_is_described() -> None:
    spelled = {
        value
        for name, value in vars(names_module).items()
        if name.endswith("_HEADER") and name != "SIGNATURE_HEADER"  # (HTTP, not AMQP)
    }
    described = set(EVENT_HEADERS) | set(INVALID_HEADERS)
    assert spelled - described == set()
    doc = document(broker_facts(Names()))
    assert set(doc["components"]["schemas"]["EventHeaders"]["properties"]) == set(EVENT_HEADERS)


def test_no_schema_uses_the_object_form_of_discriminator() -> None:
    doc = document(broker_facts(Names()))
    assert [v for k, v in walk(doc) if k == "discriminator" and not isinstance(v, str)] == []


@pytest.mark.broker
async def test_with_claims_each_application_receives_what_it_claims(
    admin: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two applications' claims in the registry
    for body in (
        {"app": "sms-audit", "events": ["sms.*"]},
        {"app": "crm-sync", "events": ["custom_attribute.set"], "company": "c1"},
    ):
        response = await admin.post("/admin/claims", json=body, headers=AUTH)
        assert response.status == 201, await response.text()
    url = f"http://127.0.0.1:{admin.server.port}"

    # When the document is asked for with --claims
    text = await asyncio.to_thread(
        cli_document, capsys, "--claims", "--admin-url", url, "--token", TOKEN
    )
    text = text[text.index('{\n  "asyncapi"') :]  # (after the admin API's own log lines)
    doc = json.loads(text)

    # Then each application has its queue, its binding keys and its receive operation
    audit = doc["channels"]["applications.sms-audit"]
    assert audit["x-binding-keys"] == ["sms.#"]
    assert audit["address"].endswith(".app.sms-audit")
    crm = doc["channels"]["applications.crm-sync"]
    assert crm["x-binding-keys"] == ["custom_attribute.set.c1"]
    receive = doc["operations"]["crm-sync.receive"]
    assert receive["action"] == "receive"
    assert receive["channel"] == {"$ref": "#/channels/applications.crm-sync"}
    assert [m["$ref"].rsplit("/", 1)[1] for m in receive["messages"]] == ["CustomAttributeSet"]
    sms = [m["$ref"].rsplit("/", 1)[1] for m in doc["operations"]["sms-audit.receive"]["messages"]]
    assert sms == [m.__name__ for t, m in MODELS.items() if t.startswith("sms.")] + ["GenericEvent"]
    # and the parser accepts it too
    path = tmp_path / "claims.json"
    path.write_text(text)
    (result,) = await asyncio.to_thread(parse_with_asyncapi, path)
    assert result["errors"] == [] and result["valid"]


def test_claims_without_a_reachable_admin_api_fail_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["contract", "asyncapi", "--claims", "--admin-url", "http://127.0.0.1:9", "--token", "t"]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
