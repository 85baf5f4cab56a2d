"""The example Prometheus alert rules in deploy/prometheus/: valid, unit-tested by promtool,
and naming only metrics the router exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from consumers.runtime.flow import FlowMetrics
from router.apps.metrics import AppMetrics
from router.parked.metrics import KeeperMetrics

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
_MISSING = "promtool is missing: scripts/ensure-load-tools.sh installs it (Debian: prometheus)"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, _MISSING
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_rules() -> None:
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_each_alert_fires_when_it_should_and_not_before() -> None:
    # alerts.test.yml: a failing consumer, a store that is down, a keeper that stops, none at all
    done = _promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_name_only_metrics_the_router_and_its_workers_export() -> None:
    # Given the families a keeper, the admin API and a worker export (a counter's samples:
    # ..._total)
    registry = CollectorRegistry()
    KeeperMetrics(registry)
    AppMetrics(registry)
    FlowMetrics("crm", registry)
    exported = {family.name for family in registry.collect()} | {
        f"{family.name}_total" for family in registry.collect() if family.type == "counter"
    }

    # Then every metric an alert reads is one of them
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 5
    named = {
        name
        for rule in alerts
        for name in re.findall(r"attentive_(?:router|worker)_\w+", rule["expr"])
    }
    assert named, "the rules name no router metric"
    assert named <= exported, named - exported
