"""``attentive-router contract ...``: the event contract as documents, generated from the code.

- ``contract asyncapi [--yaml] [--claims]``: the AsyncAPI 3.0 document (with ``--claims``,
  each application's receive operation from the live claims registry, through the admin API);
- ``contract schemas DIR``: one JSON Schema per event type;
- ``contract doc``: ``docs/contract.md``, the same contract for a reader.

Exit codes: 0 done, 1 the admin API refused or could not be reached, 2 wrong usage.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from consumers.runtime.retry import RetryPolicy
from router.amqp import topology
from router.claims.model import ClaimSpec
from router.cli import output
from router.cli.admin_api import add_admin_options, admin_client
from router.contract import asyncapi, reference
from router.contract.names import Names
from router.contract.schemas import write_event_schemas
from router.errors import InvalidInput
from router.settings import Settings

#: The claims whose binding keys the document shows as examples.
_KEY_EXAMPLES = (
    ("sms.subscribed", None),
    ("sms.subscribed", "X"),
    ("sms.*", None),
    ("sms.*", "X"),
    ("*", None),
    ("*", "X"),
)


def add_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``contract asyncapi | schemas | doc`` to ``commands``."""
    contract = commands.add_parser("contract", help="the event contract as documents")
    contract.set_defaults(run=run)
    sub = contract.add_subparsers(dest="contract_command", required=True, parser_class=parser_class)
    document = sub.add_parser("asyncapi", help="print the AsyncAPI 3.0 document (JSON)")
    document.add_argument("--yaml", action="store_true", help="YAML instead of JSON")
    document.add_argument(
        "--claims",
        action="store_true",
        help="add each application's receive operation from the claims (the admin API)",
    )
    document.add_argument("--namespace", help="prefix of exchange and queue names (attentive)")
    add_admin_options(document)
    schemas = sub.add_parser("schemas", help="write one JSON Schema per event type into DIR")
    schemas.add_argument("directory", metavar="DIR")
    sub.add_parser("doc", help="print docs/contract.md (Markdown)")


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one ``contract`` subcommand; the exit code."""
    match args.contract_command:
        case "schemas":
            try:
                written = write_event_schemas(Path(args.directory))
            except OSError as error:
                raise InvalidInput(
                    f"cannot write into {args.directory}: {error.strerror or error}"
                ) from None
            output.print_line(f"{len(written)} JSON Schemas written to {args.directory}")
        case "doc":
            output.print_document(
                reference.render(asyncapi.document(broker_facts(Names())), Names())
            )
        case "asyncapi":
            settings = Settings.from_env(env, namespace=args.namespace)
            applications = None
            if args.claims:
                applications = asyncio.run(_applications(args, settings))
            doc = asyncapi.document(broker_facts(settings.names, applications))
            if args.yaml:
                output.print_document(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
            else:
                output.print_json(doc, indent=True)
    return 0


def broker_facts(
    names: Names, applications: Sequence[asyncapi.Application] | None = None
) -> asyncapi.Broker:
    """What the document says besides names and models, from the topology, the worker
    runtime's retry policy and the claims model."""
    return asyncapi.Broker(
        names=names,
        version=importlib.metadata.version("attentive-router"),
        app_queue_arguments=lambda app: topology.app_queue_arguments(names, app),
        retry_queue_arguments=lambda app, ms: topology.retry_queue_arguments(names, app, ms),
        landing_arguments=topology.QUORUM_QUEUE_ARGUMENTS,
        retry_tiers_ms=RetryPolicy().tiers_ms,
        key_examples=[
            (_claim_words(event, company), ClaimSpec.parse("app", event, company).binding_key)
            for event, company in _KEY_EXAMPLES
        ],
        applications=applications,
    )


def _claim_words(event: str, company: str | None) -> str:
    return f"`{event}`, " + ("all companies" if company is None else f"company `{company}`")


async def _applications(args: argparse.Namespace, settings: Settings) -> list[asyncapi.Application]:
    """Every application of the claims registry, with its claims and their binding keys."""
    async with admin_client(args, settings) as admin:
        claims = await admin.list_claims()
    by_app: dict[str, list[asyncapi.Claimed]] = {}
    for claim in claims:
        spec = ClaimSpec.parse(claim["app"], claim["event"], claim["company"])
        by_app.setdefault(spec.app, []).append(
            asyncapi.Claimed(claim["event"], claim["company"], spec.binding_key)
        )
    return [asyncapi.Application(app, tuple(c)) for app, c in sorted(by_app.items())]


__all__ = ["add_commands", "broker_facts", "run"]
