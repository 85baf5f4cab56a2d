"""What the commands that call the admin API share: its options, and the client they make."""

from __future__ import annotations

import argparse

from router.admin.client import AdminClient
from router.settings import Settings


def add_admin_options(parser: argparse.ArgumentParser) -> None:
    """``--admin-url`` and ``--token`` (else ``ROUTER_ADMIN_URL``, ``ROUTER_ADMIN_TOKEN``)."""
    parser.add_argument("--admin-url", help="default ROUTER_ADMIN_URL or http://127.0.0.1:8081")
    parser.add_argument("--token", help="admin token (default ROUTER_ADMIN_TOKEN)")


def admin_client(args: argparse.Namespace, settings: Settings) -> AdminClient:
    """A client of the admin API the flags or the settings name (:class:`ConfigError` when
    there is no token); it connects when entered."""
    return AdminClient(
        args.admin_url or settings.admin_url, args.token or settings.require_admin_token()
    )


__all__ = ["add_admin_options", "admin_client"]
