"""What the deployment files do to keep secrets, the admin plane and the internal listener to
themselves.

docker-compose.yml keeps no signing key or admin token (Compose refuses to start without them,
in one line) and publishes its ports on the loopback address unless told otherwise; in
deploy/k8s the admin API is served over TLS and its clients verify it, no pod gets a service
account token, and the workers may reach only DNS, RabbitMQ, the admin API and their own
downstream. Prometheus and the probes ask the routers' internal listener, which no Service,
load balancer or published port reaches; nginx passes on the webhook paths and /healthz only.
Read, never run, like tests/test_deploy_files.py, whose readers these share.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest

from router.settings import Settings
from router.tls import CA_VARIABLE, CERT_VARIABLE, KEY_VARIABLE
from tests.test_deploy_files import (
    ANY_ADDRESS,
    COMPOSE,
    NGINX_CONF,
    OPERATOR_ENV,
    ComposeRefused,
    amqp_urls,
    app_services,
    container_env,
    deployments_selected,
    environment,
    interpolate,
    manifests,
    pod_spec,
    port_number,
    secrets,
    selects,
    serve_services,
    services,
)

LOOPBACK = "127.0.0.1"
DEFAULT_PORTS = {"https": 443, "http": 80, "amqp": 5672, "amqps": 5671, "postgresql": 5432}

# -- docker-compose.yml ----------------------------------------------------------------------


@pytest.mark.parametrize("variable", sorted(OPERATOR_ENV))
def test_compose_refuses_to_start_without_a_signing_key_or_admin_token(variable: str) -> None:
    # Given an operator who exported everything but ``variable``
    shell = {name: value for name, value in OPERATOR_ENV.items() if name != variable}

    # Then every service that needs it refuses, with Compose's one line naming the variable
    refusing = set()
    for name, service in app_services().items():
        raw = (service.get("environment") or {}).get(variable)
        if raw is None:
            continue
        with pytest.raises(ComposeRefused) as refused:
            interpolate(str(raw), shell)
        reason = str(refused.value).partition(": ")[2]
        assert variable in reason and "\n" not in reason, f"{name}: {refused.value}"
        refusing.add(name)
    assert set(serve_services()) <= refusing
    # And a blank one is no value either
    with pytest.raises(ComposeRefused):
        interpolate(f"${{{variable}:?set it}}", {variable: ""})


def test_compose_has_no_default_signing_key_or_admin_token() -> None:
    text = COMPOSE.read_text()
    assert "ROUTER_SIGNING_KEYS" in text and "ROUTER_ADMIN_TOKEN" in text
    for variable in OPERATOR_ENV:
        assert not re.search(rf"\$\{{{variable}:?-", text), f"{variable} has a default"
        assert not re.search(rf"^\s*{variable}:\s*[^$\s*]", text, re.MULTILINE), (
            f"{variable} is spelled out"
        )


def published(shell: Mapping[str, str]) -> Iterator[tuple[str, str, str]]:
    """(service, host address, host port) of every published port, as Compose reads it."""
    for name, service in services().items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                yield name, str(port.get("host_ip", "")), str(port.get("published", ""))
                continue
            parts = interpolate(str(port), shell).split(":")
            assert len(parts) == 3, f"{name}: {port} publishes on every address"
            yield name, parts[0], parts[1]


def test_compose_publishes_ports_on_the_loopback_address_unless_told_otherwise() -> None:
    ports = list(published(OPERATOR_ENV))

    assert ports
    for name, address, port in ports:
        assert address == LOOPBACK, f"{name} publishes {port} on {address or 'every address'}"

    # When told to (ROUTER_BIND), the webhook port, and only it, is published there
    told = {**OPERATOR_ENV, "ROUTER_BIND": "0.0.0.0"}
    elsewhere = [(name, port) for name, address, port in published(told) if address != LOOPBACK]
    assert elsewhere == [("router-lb", "8080")]


# -- deploy/k8s: the admin plane -------------------------------------------------------------


def mounted_secret(
    spec: Mapping[str, Any], container: Mapping[str, Any], path: str
) -> tuple[str, str]:
    """(Secret name, key) of the file ``path`` in ``container``: it must be mounted from a
    Secret that exists and holds that key."""
    for mount in container.get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(directory):
            continue
        [volume] = [v for v in spec.get("volumes", []) if v["name"] == mount["name"]]
        assert "secret" in volume, f"{path}: {mount['name']} is not a Secret volume"
        name, relative = volume["secret"]["secretName"], path[len(directory) :]
        items = volume["secret"].get("items")
        keys = [i["key"] for i in items if i["path"] == relative] if items else [relative]
        assert keys, f"{path}: the volume {mount['name']} has no {relative}"
        assert keys[0] in secrets().get(name, {}), f"{path}: Secret {name} has no {keys[0]}"
        return name, keys[0]
    raise AssertionError(f"{container['name']}: nothing is mounted at {path}")


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, str]]]:
    """(Deployment, container, its environment) of every container."""
    for deployment in manifests("Deployment"):
        for container in pod_spec(deployment)["containers"]:
            yield deployment, container, container_env(container)


def test_k8s_admin_listener_serves_tls_from_a_mounted_certificate() -> None:
    routers = [c for c in containers() if c[1]["args"][0] == "serve"]
    assert routers
    for deployment, container, env in routers:
        spec = pod_spec(deployment)
        cert = mounted_secret(spec, container, env[CERT_VARIABLE])
        key = mounted_secret(spec, container, env[KEY_VARIABLE])
        assert cert[0] == key[0]
        [secret] = [s for s in manifests("Secret") if s["metadata"]["name"] == cert[0]]
        assert secret["type"] == "kubernetes.io/tls"


def test_k8s_admin_clients_call_it_over_https_and_verify_it_with_the_ca() -> None:
    clients = [c for c in containers() if "ROUTER_ADMIN_URL" in c[2]]
    assert len(clients) >= 3
    for deployment, container, env in clients:
        where = f"{deployment['metadata']['name']}/{container['name']}"
        assert urlsplit(env["ROUTER_ADMIN_URL"]).scheme == "https", where
        _, key = mounted_secret(pod_spec(deployment), container, env[CA_VARIABLE])
        assert key == "ca.crt", f"{where} mounts {key}: a client needs the CA, not the key"


def test_k8s_no_pod_gets_a_service_account_token() -> None:
    for deployment in manifests("Deployment"):
        spec = pod_spec(deployment)
        assert spec.get("automountServiceAccountToken") is False, deployment["metadata"]["name"]


# -- deploy/k8s: what the workers may reach ---------------------------------------------------


def egress_rules(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The egress rules of every policy that selects ``deployment``'s pods (they add up)."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    rules: list[dict[str, Any]] = []
    for policy in manifests("NetworkPolicy"):
        if selects(policy["spec"]["podSelector"].get("matchLabels", {}), labels):
            assert "Egress" in policy["spec"]["policyTypes"], policy["metadata"]["name"]
            rules += policy["spec"].get("egress", [])
    return rules


def allowed_ports(rule: Mapping[str, Any]) -> set[tuple[int, str]]:
    """(port, protocol) a rule allows; a named port is resolved on the pods it selects."""
    assert rule.get("ports"), "every egress rule names its ports"
    targets = [
        d
        for peer in rule.get("to", [])
        if "podSelector" in peer and "namespaceSelector" not in peer
        for d in deployments_selected(peer["podSelector"]["matchLabels"])
    ]
    found = set()
    for port in rule["ports"]:
        protocol = port.get("protocol", "TCP")
        if isinstance(port["port"], int):
            found.add((port["port"], protocol))
            continue
        assert targets, f"the named port {port['port']} must be on pods of ours"
        for target in targets:
            [container] = pod_spec(target)["containers"]
            found.add((port_number(container, port["port"]), protocol))
    return found


def needed_ports(env: Mapping[str, str]) -> dict[str, int]:
    """Every (TCP) port the worker's settings make it connect to, by what it is for."""
    urls = {f"amqp {i}": url for i, url in enumerate(amqp_urls(env["WORKER_AMQP_URL"]))}
    urls["admin API"] = env["ROUTER_ADMIN_URL"]
    for variable in ("WORKER_IDEMPOTENCY_URL", "ATTRIBUTE_FORWARDER_URL"):
        if variable in env:
            urls[variable] = env[variable]
    return {
        what: urlsplit(url).port or DEFAULT_PORTS[urlsplit(url).scheme]
        for what, url in urls.items()
    }


def test_k8s_workers_may_reach_only_dns_rabbitmq_the_admin_api_and_their_downstream() -> None:
    workers = [
        d
        for d in manifests("Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == "worker"
    ]
    assert len(workers) == 3
    for deployment in workers:
        name = deployment["metadata"]["name"]
        rules = egress_rules(deployment)
        assert rules, f"{name}: no egress policy"
        allowed = set().union(*(allowed_ports(rule) for rule in rules))
        [container] = pod_spec(deployment)["containers"]
        # DNS, and every port its settings connect to
        assert {(53, "UDP"), (53, "TCP")} <= allowed, name
        for what, port in needed_ports(container_env(container)).items():
            assert (port, "TCP") in allowed, f"{name}: {what} ({port}) is not allowed"
        # and nothing more than what some worker needs
        assert {port for port, _ in allowed} <= {53, 5672, 5671, 8081, 5432, 443}, name
    admin = [
        rule
        for rule in egress_rules(workers[0])
        if any("podSelector" in peer for peer in rule.get("to", []))
        and (8081, "TCP") in allowed_ports(rule)
    ]
    assert admin, "the admin API is reached on the router's pods"


# -- the webhook port serves webhooks only ----------------------------------------------------


def routers() -> list[tuple[dict[str, Any], dict[str, Any], Settings]]:
    """(Deployment, container, its settings) of every ``serve`` container."""
    found = [
        (d, c, Settings.from_env(env)) for d, c, env in containers() if c["args"][0] == "serve"
    ]
    assert found
    return found


def test_k8s_prometheus_and_the_probes_ask_the_internal_listener_not_the_webhook_port() -> None:
    for deployment, container, settings in routers():
        name = deployment["metadata"]["name"]
        internal = settings.internal_port
        assert internal not in (settings.port, settings.admin_port)
        assert settings.internal_host in ANY_ADDRESS, f"{name}: the kubelet probes the pod IP"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == internal, f"{name} is scraped elsewhere"
        assert annotations["prometheus.io/path"] == "/metrics"
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container[kind]["httpGet"]
            assert port_number(container, probe["port"]) == internal, f"{name} {kind}"


def test_k8s_no_service_reaches_the_internal_port_and_only_prometheus_may() -> None:
    for deployment, container, settings in routers():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        # No Service routes to it (so no Ingress or load balancer can)
        for service in manifests("Service"):
            if selects(service["spec"]["selector"], labels):
                for port in service["spec"]["ports"]:
                    target = port.get("targetPort", port["port"])
                    assert port_number(container, target) != settings.internal_port, service
        # And the network policy admits it only from a namespace of its own (Prometheus')
        admitting = [
            rule
            for policy in manifests("NetworkPolicy")
            if selects(policy["spec"]["podSelector"].get("matchLabels", {}), labels)
            for rule in policy["spec"].get("ingress", [])
            if any(
                port_number(container, p["port"]) == settings.internal_port
                for p in rule.get("ports", [])
            )
        ]
        assert admitting, "the internal port must be admitted for Prometheus"
        for rule in admitting:
            assert rule.get("from"), "the internal port is admitted from anywhere"
            assert all("namespaceSelector" in peer for peer in rule["from"]), rule


def test_compose_routers_are_checked_on_their_internal_listener_which_is_not_published() -> None:
    routers_ = serve_services()
    for name, service in routers_.items():
        settings = Settings.from_env(environment(service))
        command = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{settings.internal_port}/readyz" in command, name
        assert settings.internal_host == LOOPBACK, f"{name}: the internal listener is reachable"
        assert not service.get("ports"), f"{name} publishes a port of its own"
    published_ports = {port for _, _, port in published(OPERATOR_ENV)}
    assert str(Settings().internal_port) not in published_ports


def nginx_locations(server_port: int) -> dict[str, str]:
    """The locations of nginx.conf's server on ``server_port``: their match, and their body."""
    text = NGINX_CONF.read_text()
    servers = re.findall(r"\n    server \{\n(.*?)\n    \}\n", text, re.DOTALL)
    [server] = [s for s in servers if re.search(rf"^\s*listen {server_port};", s, re.MULTILINE)]
    return dict(re.findall(r"location ([^{]+?) \{\n(.*?)\n        \}", server, re.DOTALL))


def test_nginx_passes_on_the_webhook_paths_and_healthz_and_answers_404_for_the_rest() -> None:
    locations = nginx_locations(Settings().port)
    proxied = {where for where, body in locations.items() if "proxy_pass" in body}
    assert proxied == {"/webhooks/attentive", "= /healthz"}
    assert "return 404" in locations["/"]
