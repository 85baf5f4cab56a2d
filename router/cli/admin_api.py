"""What the commands that call the admin API share: its options, and the client they make.

The token comes from the environment (``ROUTER_ADMIN_TOKEN``) or a file
(``ROUTER_ADMIN_TOKEN_FILE``, ``--token-file``), so it never has to be on a command line,
where ``ps`` and the shell's history would show it; ``--token`` is still taken.
"""

from __future__ import annotations

import argparse
import dataclasses

from router.admin.client import AdminClient
from router.settings import ADMIN_TOKEN_FILE, Settings


def add_admin_options(parser: argparse.ArgumentParser) -> None:
    """``--admin-url``, ``--token-file`` and ``--token`` (else ``ROUTER_ADMIN_URL``,
    ``ROUTER_ADMIN_TOKEN_FILE``, ``ROUTER_ADMIN_TOKEN``)."""
    parser.add_argument("--admin-url", help="default ROUTER_ADMIN_URL or http://127.0.0.1:8081")
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="a file holding the admin token (default ROUTER_ADMIN_TOKEN_FILE or "
        "ROUTER_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--token", help="admin token (visible to ps: prefer ROUTER_ADMIN_TOKEN or --token-file)"
    )


def admin_client(args: argparse.Namespace, settings: Settings) -> AdminClient:
    """A client of the admin API the flags or the settings name (:class:`ConfigError` when
    there is no token); it connects when entered."""
    return AdminClient(
        args.admin_url or settings.admin_url,
        args.token or _token_in_file(args.token_file) or settings.require_admin_token(),
        ca_file=settings.admin_ca,
    )


#: ``--token-file`` takes what ``ROUTER_ADMIN_TOKEN_FILE`` takes.
_TOKEN_FILE = dataclasses.replace(ADMIN_TOKEN_FILE, name="--token-file")


def _token_in_file(path: str | None) -> str | None:
    """The token in the file ``--token-file`` names, if given."""
    return _TOKEN_FILE.read({"--token-file": path or ""}, None)


__all__ = ["add_admin_options", "admin_client"]
