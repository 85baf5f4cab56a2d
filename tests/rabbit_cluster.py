"""Real RabbitMQ nodes started by a test, beside the machine's own broker.

Each node has its own name, AMQP and distribution ports, and data directory; they share the
machine's Erlang cookie (rabbitmq-server runs as the ``rabbitmq`` user), so ``rabbitmqctl
-n NODE`` reaches them. Used for the cluster failover test and for killing a node with
SIGKILL without touching the broker the rest of the suite uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def _ctl(node: str, *args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-n", node, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl -n {node} {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Node:
    """One RabbitMQ node of a test's own."""

    name: str
    amqp_port: int
    dist_port: int
    base: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    def start(self) -> None:
        """Start the node detached (returns at once; see :meth:`wait_up`)."""
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.amqp_port}\nloopback_users.guest = false\n"
        )
        (self.base / "enabled_plugins").write_text("[].\n")
        shutil.chown(self.base, "rabbitmq", "rabbitmq")
        for path in self.base.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_BASE": str(self.base),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
        }
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, timeout=60)

    def wait_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    ["rabbitmqctl", "-n", self.name, "status"], capture_output=True, timeout=60
                ).returncode
                == 0
            ):
                _ctl(self.name, "await_startup", "--timeout", "120")
                return
            time.sleep(1)
        raise TimeoutError(f"{self.name} did not start; see {self.base / 'log'}")

    def ctl(self, *args: str, check: bool = True) -> str:
        return _ctl(self.name, *args, check=check)

    def stop(self) -> None:
        """Stop the whole node cleanly (``rabbitmqctl stop``)."""
        self.ctl("stop", check=False)

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM."""
        pid_file = self.base / "pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)

    def running(self) -> bool:
        return (
            subprocess.run(
                ["rabbitmqctl", "-n", self.name, "ping"], capture_output=True, timeout=60
            ).returncode
            == 0
        )


@dataclass
class LocalCluster:
    """``size`` nodes on ports ``base_port + 1 ...``, clustered with the first."""

    size: int = 3
    base_port: int = 5710
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        root = Path(tempfile.mkdtemp(prefix="attentive-cluster-"))
        shutil.chown(root, "rabbitmq", "rabbitmq")
        self.root = root
        self.nodes = [
            Node(
                f"attentive-{tag}-{i}@localhost",
                self.base_port + i,
                self.base_port + 20000 + i,
                root / f"node{i}",
            )
            for i in range(1, self.size + 1)
        ]

    @property
    def urls(self) -> str:
        """Every node's AMQP URL, comma-separated (what ROUTER_AMQP_URL takes)."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_up()
        first = self.nodes[0].name
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first)
            node.ctl("start_app")
            node.ctl("await_startup", "--timeout", "120")

    def stop(self) -> None:
        """Stop every node and remove their data (also after a failed test)."""
        for node in self.nodes:
            node.stop()
        for node in self.nodes:
            node.kill()
        if not os.environ.get("KEEP_CLUSTER_FILES"):  # keep the node logs to look into a failure
            shutil.rmtree(self.root, ignore_errors=True)


__all__ = ["LocalCluster", "Node"]
