"""`make run`'s last step: delete the demo's queues and exchanges from the broker.

The demo runs in a namespace of its own (``demo-<pid>``), so that on a broker others share
it touches nothing of theirs; this removes what the router and the example workers declared
in it: ``python scripts/demo-cleanup.py NAMESPACE APP...`` (ROUTER_AMQP_URL as the demo's).
"""

from __future__ import annotations

import asyncio
import os
import sys

from consumers.runtime.retry import RetryPolicy
from router.amqp.nodes import connect_first
from router.amqp.topology import delete, delete_app
from router.contract.names import Names
from router.settings import DEFAULT_AMQP_URL


async def main(namespace: str, apps: list[str]) -> None:
    names = Names(namespace)
    url = os.environ.get("ROUTER_AMQP_URL") or DEFAULT_AMQP_URL
    connection, _ = await connect_first(url, name="demo-cleanup")
    async with connection:
        channel = await connection.channel()
        for app in apps:  # (the example workers keep the default delay tiers)
            await delete_app(channel, names, app, RetryPolicy().tiers_ms)
        await delete(channel, names)


if __name__ == "__main__":
    if len(sys.argv) < 2 or not sys.argv[1].startswith("demo-"):
        sys.exit("usage: demo-cleanup.py demo-NAMESPACE APP... (only a demo's namespace)")
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
