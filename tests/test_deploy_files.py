"""The deployment files agree with the code and docs/configuration.md.

docker-compose.yml, deploy/Dockerfile, deploy/rabbitmq/ and deploy/k8s/ are read, never
run: no Docker, RabbitMQ or Kubernetes is needed. What is checked is what would otherwise
only fail at deploy time: a command that is not an ``attentive-router`` subcommand, a worker
target that does not load with the environment it is given, an environment variable no
setting reads (a typo) or that docs/configuration.md does not document, a probe on an
undeclared port, a Secret key nobody defined, a RabbitMQ password that does not match its
hash, a policy that fights the router's own queue arguments.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from aio_pika.abc import AbstractChannel

from consumers.runtime.cli import load_worker
from consumers.runtime.errors import WorkerConfigError
from consumers.runtime.settings import WorkerSettings
from consumers.runtime.worker import Worker
from router.amqp import topology
from router.amqp.nodes import split_urls
from router.claims.permissions import (
    HASHING_ALGORITHM,
    NOTHING,
    app_permission_regex,
    password_hash,
    router_permission_regexes,
)
from router.cli.main import _build_parser
from router.contract.names import Names
from router.errors import ConfigError
from router.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
RABBITMQ_DIR = ROOT / "deploy" / "rabbitmq"
NGINX_CONF = ROOT / "deploy" / "compose" / "nginx.conf"
K8S = ROOT / "deploy" / "k8s"

#: The image every router and worker runs (deploy/Dockerfile).
APP_IMAGE = "attentive-router"
#: Prefixes of the variables our code reads; anything else (POSTGRES_*, RABBITMQ_*) belongs
#: to a third-party image and is not ours to check.
SETTING_PREFIXES = ("ROUTER_", "WORKER_", "SMS_AUDIT_", "ATTRIBUTE_FORWARDER_")
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
ANY_ADDRESS = frozenset({"0.0.0.0", "::"})


# -- the documented settings (docs/configuration.md) ---------------------------------------


_SETTING_NAME = re.compile(
    r"\b(?:ROUTER|WORKER|SMS_AUDIT|ATTRIBUTE_FORWARDER)_[A-Z0-9_]*[A-Z0-9]\b"
)


@cache
def documented_settings() -> frozenset[str]:
    """Every setting docs/configuration.md names in inline code (fenced examples do not count)."""
    text = re.sub(r"^```.*?^```", "", CONFIGURATION.read_text(), flags=re.DOTALL | re.MULTILINE)
    names: set[str] = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        names.update(_SETTING_NAME.findall(span))
    return frozenset(names)


def undocumented(names: Iterable[str]) -> list[str]:
    return sorted(
        name
        for name in names
        if name.startswith(SETTING_PREFIXES) and name not in documented_settings()
    )


def test_the_configuration_parser_finds_the_settings_tables() -> None:
    # The tables of the router, the worker and the example workers, and nothing invented.
    found = documented_settings()
    for name in (
        "ROUTER_SIGNING_KEYS",
        "ROUTER_WORKERS",
        "ROUTER_AMQP_URL",
        "ROUTER_ADMIN_HOST",
        "ROUTER_ADMIN_PORT",
        "ROUTER_DATABASE_URL",
        "ROUTER_ADMIN_URL",
        "WORKER_AMQP_URL",
        "WORKER_METRICS_PORT",
        "WORKER_IDEMPOTENCY_URL",
        "SMS_AUDIT_DB",
        "ATTRIBUTE_FORWARDER_URL",
        "ATTRIBUTE_FORWARDER_RETRY_DELAYS",
    ):
        assert name in found
    assert "ROUTER_SIGNING_KEY" not in found
    assert undocumented(["ROUTER_SIGNING_KEY", "WORKER_AMQP_URI", "POSTGRES_DB"]) == [
        "ROUTER_SIGNING_KEY",
        "WORKER_AMQP_URI",
    ]


# -- shared checks: commands, settings, worker targets, AMQP URLs --------------------------


def parse_command(argv: list[str]) -> argparse.Namespace:
    """``argv`` as ``attentive-router`` parses it; AssertionError when it would not."""
    try:
        return _build_parser().parse_args(argv)
    except SystemExit as exit_:
        raise AssertionError(f"`attentive-router {' '.join(argv)}` is not a valid command") from (
            exit_
        )


def load_target(target: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Worker:
    """Load ``MODULE:OBJECT`` the way `attentive-router worker` does, under exactly ``env``."""
    for name in list(os.environ):
        if name.startswith(SETTING_PREFIXES):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        module = None
    lazy = module is not None and "__getattr__" in vars(module)
    if lazy:
        # A worker built lazily from the environment (attribute-forwarder) is cached after
        # its first access: drop the cached one so it is built from ``env`` (monkeypatch puts
        # a previously cached one back afterwards).
        monkeypatch.delattr(module, attribute, raising=False)
    try:
        return load_worker(target)
    except WorkerConfigError as error:
        raise AssertionError(f"{target} does not load: {error}") from error
    finally:
        if lazy:
            vars(module).pop(attribute, None)  # not built from the real environment


def check_app_container(
    where: str,
    argv: list[str],
    env: Mapping[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[argparse.Namespace, Worker | None]:
    """The command parses, every variable is documented and the settings load."""
    args = parse_command(argv)
    assert not undocumented(env), f"{where}: undocumented variables {undocumented(env)}"
    worker: Worker | None = None
    try:
        if args.command == "serve":
            Settings.from_env(env).require_signing_keys()
        elif args.command == "worker":
            WorkerSettings.from_env(env)
            worker = load_target(args.target, env, monkeypatch)
        else:
            Settings.from_env(env)
    except (ConfigError, WorkerConfigError) as error:
        raise AssertionError(f"{where}: {error}") from error
    return args, worker


def amqp_urls(value: str) -> list[str]:
    """The comma-separated broker URLs of ROUTER_AMQP_URL / WORKER_AMQP_URL."""
    return list(split_urls(value))


def check_amqp_url(url: str, user: str, hosts: set[str], password_known: bool) -> None:
    """``url`` is ``amqp://user:…@<one of hosts>:5672/<a defined vhost>``."""
    parts = urlsplit(url)
    definitions = rabbitmq_definitions()
    assert parts.scheme == "amqp", url
    assert parts.hostname in hosts, f"{url}: {parts.hostname} is not one of {sorted(hosts)}"
    assert parts.port == 5672, url
    assert unquote(parts.username or "") == user, f"{url} should connect as {user}"
    vhost = unquote(parts.path.removeprefix("/"))
    assert vhost in {v["name"] for v in definitions["vhosts"]}, f"{url}: no vhost {vhost!r}"
    if password_known:
        [record] = [u for u in definitions["users"] if u["name"] == user]
        salt = base64.b64decode(record["password_hash"])[:4]
        password = unquote(parts.password or "")
        assert password_hash(password, salt=salt) == record["password_hash"], (
            f"{url}: the password is not the one hashed for {user} in definitions.json"
        )


# -- docker-compose.yml ----------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict) and found
    return found


_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)

#: What an operator exports before ``docker compose up``: the file keeps no signing key and no
#: admin token of its own.
OPERATOR_ENV = {
    "ROUTER_SIGNING_KEYS": "an-attentive-signing-key",
    "ROUTER_ADMIN_TOKEN": "an-admin-token-of-at-least-32-characters",
}


class ComposeRefused(Exception):
    """Compose would not start: a required variable (``${X:?reason}``) has no value."""


def interpolate(value: str, shell: Mapping[str, str] = OPERATOR_ENV) -> str:
    """``value`` as Compose would see it with only ``shell`` set: a set variable's value, else
    its default; :class:`ComposeRefused` (Compose's message) for a required one not set."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = shell.get(name)
        if given is not None and (given or op not in (":-", ":?")):
            return given
        if op in (":-", "-"):
            return str(arg)
        if op in (":?", "?"):
            raise ComposeRefused(f"required variable {name} is missing a value: {arg}")
        raise AssertionError(f"{match[0]} has no default: the file needs variables set to run")

    resolved = _INTERPOLATION.sub(substitute, value.replace("$$", "\0"))
    assert "$" not in resolved, f"unsupported interpolation in {value!r}"
    return resolved.replace("\0", "$")


def environment(
    service: Mapping[str, Any], shell: Mapping[str, str] = OPERATOR_ENV
) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(name): interpolate(str(value), shell) for name, value in raw.items()}


def is_app(service: Mapping[str, Any]) -> bool:
    """Runs the attentive-router image (built from deploy/Dockerfile)."""
    build = service.get("build")
    if isinstance(build, dict) and build.get("dockerfile") == "deploy/Dockerfile":
        return True
    return str(service.get("image", "")).partition(":")[0] == APP_IMAGE


def app_services() -> dict[str, dict[str, Any]]:
    found = {name: service for name, service in services().items() if is_app(service)}
    assert found
    return found


def command_of(name: str, service: Mapping[str, Any]) -> list[str]:
    assert "entrypoint" not in service, f"{name}: the image's entry point is attentive-router"
    command = service.get("command")
    assert isinstance(command, list), f"{name}: give `command` as a list"
    return [str(part) for part in command]


def serve_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in app_services().items()
        if command_of(name, service)[:1] == ["serve"]
    }


def rabbit_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services().items()
        if str(service.get("image", "")).startswith("rabbitmq:")
    }


def bind_mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(host path, container path) of every bind mount of ``service``."""
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                yield str(volume["source"]), str(volume["target"])
            continue
        source, _, rest = str(volume).partition(":")
        if source.startswith(("./", "../", "/", "deploy/")):
            yield source, rest.partition(":")[0]


def test_compose_parses_and_every_service_has_an_image_or_a_build() -> None:
    for name, service in services().items():
        assert "image" in service or "build" in service, name


def test_compose_builds_from_files_that_exist() -> None:
    for name, service in services().items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (COMPOSE.parent / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: no build context {context}"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: no Dockerfile {dockerfile}"


def test_compose_bind_mounts_name_files_in_the_repository() -> None:
    mounted = 0
    for name, service in services().items():
        for source, _ in bind_mounts(service):
            assert source.startswith(("./", "deploy/")), f"{name}: {source} is outside the repo"
            assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
            mounted += 1
    assert mounted


def test_compose_dependencies_exist_and_health_conditions_have_healthchecks() -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services().items():
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, list):
            depends_on = {target: {"condition": "service_started"} for target in depends_on}
        for target, spec in depends_on.items():
            assert target in services(), f"{name} depends on an unknown service {target}"
            condition = spec.get("condition", "service_started")
            assert condition in conditions, f"{name}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services()[target], f"{target} has no healthcheck"


def test_compose_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in services().items():
        if service.get("profiles"):
            continue  # started on demand (the CLI)
        assert "healthcheck" in service, name
        assert service["healthcheck"].get("test"), name


def test_compose_router_and_worker_services_run_real_commands_with_documented_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kinds: set[str] = set()
    targets: set[str] = set()
    for name, service in app_services().items():
        argv = command_of(name, service)
        args, worker = check_app_container(name, argv, environment(service), monkeypatch)
        kinds.add(args.command)
        if worker is not None:
            targets.add(args.target)
    assert {"serve", "worker"} <= kinds
    assert targets == {
        "consumers.sms_audit:worker",
        "consumers.email_engagement:worker",
        "consumers.attribute_forwarder:worker",
    }


def test_compose_worker_target_fails_without_its_required_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The check above is not vacuous: attribute-forwarder without its URL does not load.
    env = environment(services()["attribute-forwarder"])
    del env["ATTRIBUTE_FORWARDER_URL"]
    with pytest.raises(AssertionError, match="does not load"):
        load_target("consumers.attribute_forwarder:worker", env, monkeypatch)


def test_compose_amqp_urls_list_every_node_with_users_that_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rabbits = {service.get("hostname", name) for name, service in rabbit_services().items()}
    assert len(rabbits) == 3
    names = Names()
    for name, service in app_services().items():
        env = environment(service)
        args = parse_command(command_of(name, service))
        if args.command == "worker":
            worker = load_target(args.target, env, monkeypatch)
            variable, user = "WORKER_AMQP_URL", names.app_user(worker.app)
        else:
            variable, user = "ROUTER_AMQP_URL", "attentive-router"
        assert variable in env, f"{name} sets no {variable}"
        urls = amqp_urls(env[variable])
        assert {urlsplit(url).hostname for url in urls} == rabbits, f"{name}: not every node"
        for url in urls:
            check_amqp_url(url, user, rabbits, password_known=True)


def test_compose_routers_share_postgresql_and_listen_for_the_load_balancer() -> None:
    routers = serve_services()
    assert len(routers) >= 2
    for name, service in routers.items():
        env = environment(service)
        assert urlsplit(env["ROUTER_DATABASE_URL"]).scheme in ("postgresql", "postgres"), name
        assert env.get("ROUTER_ADMIN_TOKEN"), f"{name}: without a token no admin API"
        assert env.get("ROUTER_ADMIN_HOST") in ANY_ADDRESS, f"{name}: admin API unreachable"


def test_compose_workers_claim_through_a_service_that_exists() -> None:
    for name, service in app_services().items():
        env = environment(service)
        if "ROUTER_ADMIN_URL" in env:
            host = urlsplit(env["ROUTER_ADMIN_URL"]).hostname
            assert host in services(), f"{name}: ROUTER_ADMIN_URL names no service ({host})"


def test_compose_load_balancer_spreads_over_every_router() -> None:
    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+)\b", NGINX_CONF.read_text(), re.MULTILINE)
    assert upstream
    routers = set(serve_services())
    by_port: dict[int, set[str]] = {}
    for host, port in upstream:
        assert host in routers, f"nginx.conf proxies to {host}, which runs no `serve`"
        by_port.setdefault(int(port), set()).add(host)
    defaults = Settings()
    assert by_port == {defaults.port: routers, defaults.admin_port: routers}


def test_compose_rabbitmq_nodes_are_the_configured_cluster() -> None:
    config = rabbitmq_conf()
    nodes = {
        value
        for key, value in config.items()
        if key.startswith("cluster_formation.classic_config.nodes.")
    }
    assert config["cluster_formation.peer_discovery_backend"] == "classic_config"
    rabbits = rabbit_services()
    assert {f"rabbit@{service.get('hostname')}" for service in rabbits.values()} == nodes
    cookies = {environment(service).get("RABBITMQ_ERLANG_COOKIE") for service in rabbits.values()}
    assert len(cookies) == 1 and None not in cookies, "the nodes need one shared Erlang cookie"
    for name, service in rabbits.items():
        mounts = {target: source for source, target in bind_mounts(service)}
        assert Path(mounts["/etc/rabbitmq/rabbitmq.conf"]).name == "rabbitmq.conf", name
        assert Path(mounts[config["definitions.local.path"]]).name == "definitions.json", name
        assert Path(mounts["/etc/rabbitmq/enabled_plugins"]).name == "enabled_plugins", name


# -- deploy/rabbitmq -----------------------------------------------------------------------


@cache
def rabbitmq_conf() -> dict[str, str]:
    config: dict[str, str] = {}
    for number, line in enumerate((RABBITMQ_DIR / "rabbitmq.conf").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        assert equals and key.strip() and value.strip(), f"rabbitmq.conf:{number}: {line}"
        assert key.strip() not in config, f"rabbitmq.conf:{number}: {key.strip()} twice"
        config[key.strip()] = value.strip()
    return config


@cache
def rabbitmq_definitions() -> dict[str, Any]:
    document = json.loads((RABBITMQ_DIR / "definitions.json").read_text())
    assert isinstance(document, dict)
    return document


def test_rabbitmq_conf_and_plugins_fit_together() -> None:
    config = rabbitmq_conf()
    match = re.fullmatch(
        r"\s*\[([a-z_,\s]*)\]\.\s*", (RABBITMQ_DIR / "enabled_plugins").read_text()
    )
    assert match, "enabled_plugins is an Erlang list of atoms ending with a full stop"
    plugins = {name.strip() for name in match[1].split(",") if name.strip()}
    for key in config:
        if key.startswith("management."):
            assert "rabbitmq_management" in plugins, key
        if key.startswith("prometheus."):
            assert "rabbitmq_prometheus" in plugins, key
    assert config["definitions.import_backend"] == "local_filesystem"


def test_rabbitmq_definitions_have_the_shape_rabbitmq_imports() -> None:
    document = rabbitmq_definitions()
    known = {
        "rabbit_version",
        "rabbitmq_version",
        "product_name",
        "product_version",
        "users",
        "vhosts",
        "permissions",
        "topic_permissions",
        "parameters",
        "global_parameters",
        "policies",
        "queues",
        "exchanges",
        "bindings",
    }
    assert set(document) <= known
    for key in ("users", "vhosts", "permissions", "policies"):
        assert isinstance(document[key], list) and document[key], key
    vhosts = {vhost["name"] for vhost in document["vhosts"]}
    users = {user["name"] for user in document["users"]}
    for user in document["users"]:
        assert set(user) >= {"name", "password_hash", "hashing_algorithm", "tags"}
        assert user["hashing_algorithm"] == HASHING_ALGORITHM
        assert len(base64.b64decode(user["password_hash"], validate=True)) == 4 + 32
        assert isinstance(user["tags"], list)
    for permission in [*document["permissions"], *document.get("topic_permissions", [])]:
        assert permission["user"] in users and permission["vhost"] in vhosts, permission
    for policy in document["policies"]:
        assert set(policy) == {"vhost", "name", "pattern", "apply-to", "priority", "definition"}
        assert policy["vhost"] in vhosts
        assert isinstance(policy["priority"], int)
        re.compile(policy["pattern"])
    assert any("administrator" in user["tags"] for user in document["users"])


def test_rabbitmq_users_have_the_permissions_the_router_module_grants() -> None:
    document = rabbitmq_definitions()
    names = Names()
    permissions = {p["user"]: p for p in document["permissions"]}
    router = permissions["attentive-router"]
    assert {k: router[k] for k in ("configure", "write", "read")} == router_permission_regexes(
        names
    )
    topic = {p["user"]: p for p in document["topic_permissions"]}
    for app in ("sms-audit", "email-engagement", "attribute-forwarder"):
        user = names.app_user(app)
        own = app_permission_regex(names, app)
        assert {k: permissions[user][k] for k in ("configure", "write", "read")} == {
            "configure": own,
            "write": own,
            "read": own,
        }
        assert topic[user]["exchange"] == names.events_exchange
        assert topic[user]["write"] == topic[user]["read"] == NOTHING


class _Declared:
    async def bind(self, *args: object, **kwargs: object) -> None:
        return None


class _RecordingChannel:
    """Stands in for a channel: records the queues (and arguments) topology declares."""

    def __init__(self) -> None:
        self.queues: dict[str, dict[str, Any]] = {}
        self.default_exchange = _Declared()

    async def declare_exchange(self, name: str, *args: object, **kwargs: object) -> _Declared:
        return _Declared()

    async def declare_queue(
        self, name: str, durable: bool = False, arguments: Mapping[str, Any] | None = None
    ) -> _Declared:
        self.queues[name] = dict(arguments or {})
        return _Declared()


#: Policy keys both queue types accept, then those only one of them does.
_POLICY_KEYS = frozenset(
    {"max-length", "max-length-bytes", "overflow", "expires", "message-ttl"}
    | {"dead-letter-exchange", "dead-letter-routing-key"}
)
QUORUM_POLICY_KEYS = _POLICY_KEYS | {
    "dead-letter-strategy",
    "delivery-limit",
    "queue-leader-locator",
    "target-group-size",
}
CLASSIC_POLICY_KEYS = _POLICY_KEYS | {"queue-version"}


async def test_rabbitmq_policies_cover_the_routers_queues_without_overriding_their_arguments() -> (
    None
):
    channel = _RecordingChannel()
    names = Names()
    fake = cast(AbstractChannel, channel)
    await topology.declare(fake, names)
    await topology.declare_app_queue(fake, names, "sms-audit")
    await topology.declare_retry_queues(fake, names, "sms-audit", (5_000, 1_800_000))
    policies = rabbitmq_definitions()["policies"]
    used: set[str] = set()
    for queue, arguments in channel.queues.items():
        kind = str(arguments.get("x-queue-type", "classic"))
        applies = {"all", "queues", f"{kind}_queues"}
        matching = [
            p for p in policies if p["apply-to"] in applies and re.search(p["pattern"], queue)
        ]
        assert matching, f"no policy for {queue}"
        priorities = [p["priority"] for p in matching]
        assert priorities.count(max(priorities)) == 1, f"{queue}: tied policies"
        effective = max(matching, key=lambda p: p["priority"])
        used.add(effective["name"])
        keys = set(effective["definition"])
        assert keys <= (QUORUM_POLICY_KEYS if kind == "quorum" else CLASSIC_POLICY_KEYS), queue
        declared = {name.removeprefix("x-") for name in arguments} - {"queue-type"}
        assert not keys & declared, f"{effective['name']} overrides {keys & declared} of {queue}"
        if keys & {"max-length", "max-length-bytes"}:
            # A full queue refuses the publish (the router answers 503, a worker requeues);
            # the default, drop-head, would silently drop the oldest parked event.
            overflow = effective["definition"].get("overflow", arguments.get("x-overflow"))
            assert overflow == "reject-publish", f"{queue} would drop events at its limit"
    assert used == {p["name"] for p in policies}, "a policy matches none of the router's queues"


# -- deploy/Dockerfile -----------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _glob_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regular expression (``**``, ``*``, ``?``)."""
    out = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token)
        )
    return out


def ignored(path: str) -> bool:
    """Whether Dockerfile.dockerignore keeps ``path`` out of the build context.

    As Docker decides: the last pattern that matches the path or one of its parent
    directories wins, and a ``!`` pattern lets the path back in.
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = _glob_regex(line.removeprefix("!").strip("/"))
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerfile_copies_files_that_exist_and_are_in_the_context() -> None:
    copied: list[str] = []
    for keyword, rest in dockerfile_instructions():
        if keyword not in ("COPY", "ADD") or "--from=" in rest:
            continue
        arguments = [a for a in rest.split() if not a.startswith("--")]
        copied.extend(arguments[:-1])
    assert copied
    for source in copied:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        assert not ignored(source), f"COPY {source}: excluded by {DOCKERIGNORE.name}"
        if path.is_dir():
            assert not ignored(f"{source}/__init__.py"), source
    for heavy in (".venv", ".git", "tests", ".demo"):
        assert ignored(heavy), f"{heavy} should stay out of the build context"
    # Every package pyproject.toml installs is copied.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in copied, f"the image lacks the {pattern} packages"


def test_dockerfile_is_one_non_root_image_whose_entry_point_is_the_cli() -> None:
    instructions = dockerfile_instructions()
    stages = [rest.split() for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    assert all(stage[0] == "python:3.11-slim" for stage in stages)
    named = {stage[2] for stage in stages if len(stage) == 3 and stage[1].upper() == "AS"}
    for keyword, rest in instructions:
        for stage in re.findall(r"from=([\w.-]+)", rest):
            assert stage in named, f"{keyword} refers to an unknown stage {stage}"
    [entrypoint] = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["attentive-router"]
    [cmd] = [rest for keyword, rest in instructions if keyword == "CMD"]
    parse_command(json.loads(cmd))
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].partition(":")[0] not in ("root", "0")


# -- deploy/k8s ------------------------------------------------------------------------------


@cache
def k8s_documents() -> dict[str, list[dict[str, Any]]]:
    """Every manifest file of deploy/k8s (but the kustomization) and its documents."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S.glob("*.y*ml")):
        if path.name == "kustomization.yaml":
            continue
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert documents, path.name
        found[path.name] = documents
    return found


def manifests(kind: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for documents in k8s_documents().values()
        for doc in documents
        if kind is None or doc["kind"] == kind
    ]


def kustomization() -> dict[str, Any]:
    document = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(document, dict)
    return document


def secrets() -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for secret in manifests("Secret"):
        values = dict(secret.get("stringData", {}))
        for key, encoded in secret.get("data", {}).items():
            values[key] = base64.b64decode(encoded).decode()
        found[secret["metadata"]["name"]] = values
    return found


def pod_spec(deployment: Mapping[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment, Secret references resolved from the Secret manifests."""
    env: dict[str, str] = {}
    assert "envFrom" not in container, "name each variable, so that each can be checked"
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = str(entry["value"])
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        values = secrets().get(ref["name"])
        assert values is not None, f"{name}: no Secret {ref['name']}"
        assert ref["key"] in values, f"{name}: Secret {ref['name']} has no key {ref['key']}"
        env[name] = values[ref["key"]]
    return env


def port_number(container: Mapping[str, Any], port: int | str) -> int:
    """The containerPort a probe or Service names, by name or number; fails when undeclared."""
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return int(declared["containerPort"])
    raise AssertionError(f"{container['name']}: port {port} is not a declared containerPort")


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def deployments_selected(selector: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        d
        for d in manifests("Deployment")
        if selects(selector, d["spec"]["template"]["metadata"]["labels"])
    ]


API_VERSIONS = {
    "Namespace": "v1",
    "Secret": "v1",
    "Service": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
}


def test_k8s_manifests_parse_and_the_kustomization_lists_every_file() -> None:
    document = kustomization()
    assert document["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert document["kind"] == "Kustomization"
    resources = document["resources"]
    assert len(resources) == len(set(resources))
    for resource in resources:
        assert (K8S / resource).is_file(), f"kustomization lists a missing {resource}"
    assert set(resources) == set(k8s_documents()), "every manifest file is in the kustomization"
    for doc in manifests():
        assert API_VERSIONS.get(doc["kind"]) == doc["apiVersion"], (doc["kind"], doc["apiVersion"])
        assert doc["metadata"]["name"]
    kinds = {doc["kind"] for doc in manifests()}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Secret",
    } <= kinds


def test_k8s_secrets_hold_only_placeholders() -> None:
    for name, values in secrets().items():
        for key, value in values.items():
            assert "REPLACE-ME" in value, f"Secret {name}/{key} looks like a real value"


def test_k8s_containers_run_real_commands_with_documented_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images = {image["name"] for image in kustomization().get("images", [])}
    targets: set[str] = set()
    names = Names()
    for deployment in manifests("Deployment"):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], labels), name
        for container in pod_spec(deployment)["containers"]:
            where = f"{name}/{container['name']}"
            assert container["image"].partition(":")[0] == APP_IMAGE, where
            assert APP_IMAGE in images, "the kustomization sets the image's registry and tag"
            assert "command" not in container, f"{where}: the entry point is attentive-router"
            env = container_env(container)
            args, worker = check_app_container(where, container["args"], env, monkeypatch)
            if worker is not None:
                targets.add(args.target)
                for url in amqp_urls(env["WORKER_AMQP_URL"]):
                    hosts = {urlsplit(url).hostname or ""}
                    check_amqp_url(url, names.app_user(worker.app), hosts, password_known=False)
            elif args.command == "serve":
                for url in amqp_urls(env["ROUTER_AMQP_URL"]):
                    hosts = {urlsplit(url).hostname or ""}
                    check_amqp_url(url, "attentive-router", hosts, password_known=False)
    assert targets == {
        "consumers.sms_audit:worker",
        "consumers.email_engagement:worker",
        "consumers.attribute_forwarder:worker",
    }


def test_k8s_probes_ask_the_health_endpoints_on_declared_ports() -> None:
    probed = 0
    for deployment in manifests("Deployment"):
        for container in pod_spec(deployment)["containers"]:
            env = container_env(container)
            command = container["args"][0]
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                get = probe["httpGet"]
                assert get["path"] in HEALTH_PATHS, f"{container['name']} {kind}: {get['path']}"
                port = port_number(container, get["port"])
                probed += 1
                if command == "serve":
                    # /healthz and /readyz are asked of the internal listener (the webhook port
                    # has no /readyz), on the pod's address: the kubelet probes the pod IP.
                    assert port == Settings.from_env(env).internal_port, kind
                    assert env.get("ROUTER_INTERNAL_HOST") in ANY_ADDRESS, (
                        "kubelet probes the pod IP"
                    )
                else:
                    assert port == int(env["WORKER_METRICS_PORT"]), kind
                    assert env.get("WORKER_METRICS_HOST") in ANY_ADDRESS, (
                        "kubelet probes the pod IP"
                    )
            if command == "serve":
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probed


def test_k8s_services_select_pods_and_target_declared_ports() -> None:
    services_ = {s["metadata"]["name"]: s for s in manifests("Service")}
    for name, service in services_.items():
        selected = deployments_selected(service["spec"]["selector"])
        assert selected, f"Service {name} selects no Deployment"
        for deployment in selected:
            [container] = pod_spec(deployment)["containers"]
            for port in service["spec"]["ports"]:
                port_number(container, port.get("targetPort", port["port"]))
    admin_port = Settings().admin_port
    admin = [
        s for s in services_.values() if any(p["port"] == admin_port for p in s["spec"]["ports"])
    ]
    assert admin, "a Service for the admin API"
    for service in admin:
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "admin API stays inside"
        assert len(service["spec"]["ports"]) == 1, "the admin API has a Service of its own"
        for deployment in deployments_selected(service["spec"]["selector"]):
            [container] = pod_spec(deployment)["containers"]
            assert container_env(container).get("ROUTER_ADMIN_HOST") in ANY_ADDRESS
    # Workers claim through the admin Service.
    for deployment in manifests("Deployment"):
        for container in pod_spec(deployment)["containers"]:
            admin_url = container_env(container).get("ROUTER_ADMIN_URL")
            if admin_url:
                parts = urlsplit(admin_url)
                assert parts.hostname in services_, f"{admin_url}: no such Service"
                ports = {p["port"] for p in services_[parts.hostname]["spec"]["ports"]}
                assert parts.port in ports, admin_url


def test_k8s_routers_scale_on_cpu_with_postgresql_and_a_disruption_budget() -> None:
    deployments = {d["metadata"]["name"]: d for d in manifests("Deployment")}
    [hpa] = manifests("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] in deployments
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    router = deployments[target["name"]]
    [container] = pod_spec(router)["containers"]
    assert container["args"][0] == "serve"
    assert container["resources"]["requests"]["cpu"], "CPU utilization needs a CPU request"
    assert hpa["spec"]["minReplicas"] >= 2
    env = container_env(container)
    assert urlsplit(env["ROUTER_DATABASE_URL"]).scheme in ("postgresql", "postgres")
    [pdb] = manifests("PodDisruptionBudget")
    assert deployments_selected(pdb["spec"]["selector"]["matchLabels"]) == [router]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain must be possible"


def test_k8s_network_policy_ports_and_volumes_exist() -> None:
    for policy in manifests("NetworkPolicy"):
        selected = deployments_selected(policy["spec"]["podSelector"]["matchLabels"])
        assert selected
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                for deployment in selected:
                    [container] = pod_spec(deployment)["containers"]
                    port_number(container, port["port"])
    claims = {pvc["metadata"]["name"] for pvc in manifests("PersistentVolumeClaim")}
    for deployment in manifests("Deployment"):
        spec = pod_spec(deployment)
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, mount["name"]
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
                # A ReadWriteOnce SQLite file: one pod at a time.
                assert deployment["spec"]["replicas"] == 1
                assert deployment["spec"]["strategy"]["type"] == "Recreate"
