"""Signing keys bound to companies (issue 28 item 8), against ``attentive-router serve`` over
raw HTTP: ``ROUTER_SIGNING_KEYS=KEY@COMPANY|COMPANY,KEY``.

A bound key authenticates its companies' events only: another company's is refused 401, the
same answer as an unsigned request, and counted as ``key_not_for_company``, on the universal
URL and on the per-company one. A key without companies authenticates every company, as
before. What the format accepts, and what the verifier does with it, is in
tests/test_signing.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from router.contract.events import message_id
from router.contract.names import WEBHOOK_PATH, Names
from router.settings import Settings
from tests.conftest import AMQP_URL, TapFactory, depth
from tests.hostile import Ingress, event, running_ingress, webhook

pytestmark = pytest.mark.broker

BRANDS_KEY = "5f2b8c0e9d41a7b3c6e8f0a1d2c3b4a5"
OTHER_KEY = "bm90LWEtcmVhbC1rZXktYnV0LWJhc2U2NA=="
UNIVERSAL = WEBHOOK_PATH.encode()


def company_url(company: str) -> bytes:
    return f"{WEBHOOK_PATH}/{company}".encode()


async def post(ingress: Ingress, body: bytes, key: str, target: bytes = UNIVERSAL) -> int:
    """The status the ingress answers a webhook signed with ``key``, posted to ``target``."""
    request = webhook(body, key, target=target, extra=b"Connection: close\r\n")
    (answer,) = await ingress.ask(request)
    if answer.status == 401:
        assert orjson.loads(answer.body) == {"error": "unauthorized"}  # (no hint)
    return answer.status


def refusals(ingress: Ingress) -> list[dict[str, object]]:
    """The ``webhook`` lines of the refusals for a key's company, from the ingress's log."""
    lines = [orjson.loads(line) for line in ingress.log.read_bytes().splitlines() if line]
    return [
        line
        for line in lines
        if line.get("event") == "webhook" and line.get("outcome") == "key_not_for_company"
    ]


async def test_a_bound_key_speaks_for_its_companies_only_on_both_urls(
    names: Names, tmp_path: Path, tap_factory: TapFactory, amqp: AbstractRobustConnection
) -> None:
    # Given the ingress with one key bound to two brands and one key bound to none
    keys = f"{BRANDS_KEY}@brand-a|brand-b,{OTHER_KEY}"
    tap = await tap_factory("#")
    env = {"ROUTER_LOG_LEVEL": "info"}
    with running_ingress(names.prefix, tmp_path, AMQP_URL, keys, **env) as ingress:
        await ingress.wait_ready()

        # When the brands' key signs its brands' events, on both URLs
        ours = [event("brand-a", 1), event("brand-b", 2), event("brand-a", 3)]
        statuses = [
            await post(ingress, ours[0], BRANDS_KEY),
            await post(ingress, ours[1], BRANDS_KEY),
            await post(ingress, ours[2], BRANDS_KEY, company_url("brand-a")),
        ]
        # Then they are accepted
        assert statuses == [200, 200, 200]

        # When it signs another company's events, on both URLs, and an unreadable body on
        # that company's URL
        theirs = [event("brand-c", 4), event("brand-c", 5), b"not json"]
        statuses = [
            await post(ingress, theirs[0], BRANDS_KEY),
            await post(ingress, theirs[1], BRANDS_KEY, company_url("brand-c")),
            await post(ingress, theirs[2], BRANDS_KEY, company_url("brand-c")),
        ]
        # Then each is refused 401, as unsigned ones are
        assert statuses == [401, 401, 401]

        # And the unbound key still speaks for every company, on both URLs
        anyone = [event("brand-c", 6), event("brand-d", 7)]
        assert await post(ingress, anyone[0], OTHER_KEY) == 200
        assert await post(ingress, anyone[1], OTHER_KEY, company_url("brand-d")) == 200
        # And an unreadable body on the universal URL (its company unknown) is quarantined
        assert await post(ingress, b"not json either", BRANDS_KEY) == 202

        # And the refusals are counted apart from unsigned requests, and logged
        assert await post(ingress, event("brand-a", 8), "a key of nobody") == 401
        outcomes = await ingress.outcomes()
        assert (outcomes["key_not_for_company"], outcomes["unauthorized"]) == (3.0, 1.0)
        assert outcomes["accepted"] == 5.0
    logged = refusals(ingress)
    assert [(line["company_id"], line["status"]) for line in logged] == [("brand-c", 401)] * 3
    assert [line.get("event_type") for line in logged] == ["sms.sent", "sms.sent", None]
    assert logged[0]["message_id"] == message_id(theirs[0])
    text = ingress.log.read_text()
    assert BRANDS_KEY not in text and OTHER_KEY not in text

    # And exactly the accepted events were published: none of the refused ones
    published = {m.message_id for m in await tap.take(5)}
    assert published == {message_id(body) for body in [*ours, *anyone]}
    assert await depth(amqp, tap.queue.name) == 0


async def test_a_bound_key_is_rotated_like_any_other(
    names: Names, tmp_path: Path, tap_factory: TapFactory
) -> None:
    # Given a brand's key being rotated: the old and the new one, both bound to the brand
    old, new = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
    tap = await tap_factory("#")
    keys = f"{new}@brand-a,{old}@brand-a"
    with running_ingress(names.prefix, tmp_path, AMQP_URL, keys) as ingress:
        await ingress.wait_ready()

        # Then either key is taken for the brand, on both URLs, and neither for another
        assert await post(ingress, event("brand-a", 1), old) == 200
        assert await post(ingress, event("brand-a", 2), new, company_url("brand-a")) == 200
        assert await post(ingress, event("brand-b", 3), old) == 401
        assert await post(ingress, event("brand-b", 4), new, company_url("brand-b")) == 401
        assert (await ingress.outcomes())["key_not_for_company"] == 2.0

    # When the old key is removed (the ingress restarted with the new one alone)
    with running_ingress(names.prefix, tmp_path, AMQP_URL, f"{new}@brand-a") as ingress:
        await ingress.wait_ready()

        # Then the old key is a stranger's (unsigned, not a wrong company) and the new one works
        assert await post(ingress, event("brand-a", 5), old) == 401
        assert await post(ingress, event("brand-a", 6), new) == 200
        outcomes = await ingress.outcomes()
        assert (outcomes["unauthorized"], outcomes["key_not_for_company"]) == (1.0, 0.0)
    assert len(await tap.take(3)) == 3


@pytest.mark.parametrize(
    "entry",
    [f"{BRANDS_KEY}@", f"{BRANDS_KEY}@|", "@brand-a", f"{BRANDS_KEY}@brand-a@brand-b"],
    ids=["no-company", "blank-companies", "no-key", "two-ats"],
)
def test_serve_refuses_a_malformed_entry_in_one_line_without_the_key(entry: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env["ROUTER_SIGNING_KEYS"] = f"{OTHER_KEY},{entry}"
    done = subprocess.run(
        [sys.executable, "-m", "router", "serve"], env=env, capture_output=True, timeout=30
    )
    assert done.returncode == 2
    line = done.stderr.decode().strip()
    assert "\n" not in line and "ROUTER_SIGNING_KEYS" in line
    assert not re.search(f"{BRANDS_KEY[:8]}|{OTHER_KEY[:8]}", line)


def test_the_settings_hold_each_key_with_its_companies_and_show_neither_key() -> None:
    settings = Settings.from_env(
        {"ROUTER_SIGNING_KEYS": f"{BRANDS_KEY}@brand-a|brand-b,{OTHER_KEY}"}
    )
    keys = settings.signing_keys
    assert [(k.reveal(), k.companies) for k in keys] == [
        (BRANDS_KEY, frozenset({"brand-a", "brand-b"})),
        (OTHER_KEY, None),
    ]
    shown = repr(settings)
    assert "SigningKey('***@brand-a|brand-b'), SigningKey('***')" in shown
    assert BRANDS_KEY not in shown and OTHER_KEY not in shown
