"""``make run`` as a newcomer runs it: the demo's events flow, and Ctrl-C leaves nothing of it
on the broker (it may be one that others share)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import _NAMESPACES, AMQP_URL, rabbitmqctl
from tests.wire import free_port

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parent.parent


def broker_names(prefix: str) -> list[str]:
    """The queues and exchanges at the machine's node whose names start with ``prefix``."""
    listed = rabbitmqctl("-q", "list_queues", "name", "--no-table-headers").split()
    listed += rabbitmqctl("-q", "list_exchanges", "name", "--no-table-headers").split()
    return [name for name in listed if name.startswith(prefix)]


def test_the_demo_handles_every_event_and_ctrl_c_leaves_nothing_on_the_broker(
    tmp_path: Path,
) -> None:
    # Given the demo on free ports, in a namespace of its own
    namespace = f"demo-test-{uuid.uuid4().hex[:8]}"
    _NAMESPACES.add(namespace)  # (swept after the session, should the demo fail to)
    log = tmp_path / "demo.log"
    env = {
        **os.environ,
        "VENV": str(Path(sys.executable).parent.parent),
        "ROUTER_AMQP_URL": AMQP_URL,
        "ROUTER_NAMESPACE": namespace,
        "ROUTER_PORT": str(free_port()),
        "ROUTER_ADMIN_PORT": str(free_port()),
        "ROUTER_INTERNAL_PORT": str(free_port()),
        "ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'claims.db'}",
        "DEMO_METRICS_PORT": str(free_port()),
        "DEMO_RECEIVER_PORT": str(free_port()),
    }
    with log.open("wb") as out:
        demo = subprocess.Popen(
            ["scripts/run-demo.sh"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        # When it has sent its events and says so
        deadline = time.monotonic() + 90
        while b"Ctrl-C to stop" not in log.read_bytes():
            assert demo.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        text = log.read_text()
        assert broker_names(f"{namespace}.")  # (its queues exist while it runs)

        # And the console it names takes the token it wrote for its user alone
        token_file = ROOT / ".demo" / "admin-token"
        assert token_file.stat().st_mode & 0o077 == 0
        console = f"http://127.0.0.1:{env['ROUTER_ADMIN_PORT']}/console/"
        assert f"The console: {console}" in text
        assert _logs_in(console + "login", token_file.read_text().strip())
        assert token_file.read_text().strip() not in text

        # And a newcomer presses Ctrl-C
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()

    # Then every event was accepted and handled, and nothing of it is left on the broker
    assert text.count(" 200  ") == 11, text[-3000:]
    assert f"{namespace}.app.sms-audit " in text
    assert broker_names(f"{namespace}.") == []
    assert not (ROOT / ".demo" / "admin-token").exists()


def _logs_in(login_url: str, token: str) -> bool:
    """Whether the console's login form takes ``token`` (it answers with a redirect)."""
    form = urllib.parse.urlencode({"token": token}).encode()
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(urllib.request.Request(login_url, data=form), timeout=10)
    except urllib.error.HTTPError as answer:
        return answer.code == 303
    return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
