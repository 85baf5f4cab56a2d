"""The admin API over TLS: the listener serves the certificate it is given, and its clients (the
CLI, a worker claiming its events) verify it against the CA they are given, with the token read
from the environment or a file, never from the command line.

The certificate is a self-signed one made for the test (``openssl``), naming ``localhost`` and
``127.0.0.1``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from consumers import Worker
from consumers.runtime.runner import claim_events
from consumers.runtime.settings import WorkerSettings
from router.admin.app import admin_site, create_admin_app
from router.admin.client import AdminClient, AdminUnreachable
from router.cli.main import main
from router.contract.names import Names
from router.errors import ConfigError
from router.settings import Settings
from router.tls import server_context
from tests.conftest import AMQP_URL, SIGNING_KEY, TOKEN
from tests.hostile import running_ingress
from tests.wire import free_port

pytestmark = pytest.mark.broker

UNTRUSTED = "certificate verify failed"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "admin.crt", tmp_path / "admin.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key)),
            *("-out", str(cert), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Certificate(cert, key)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-token"
    path.write_text(TOKEN + "\n")
    return path


def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, **env: str
) -> tuple[int, str, str]:
    """``attentive-router ARGV`` with exactly the admin variables ``env``: (code, out, err)."""
    for name in (
        "ROUTER_ADMIN_URL",
        "ROUTER_ADMIN_CA",
        "ROUTER_ADMIN_TOKEN",
        "ROUTER_ADMIN_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def served_router(
    names: Names, tmp_path: Path, certificate: Certificate
) -> Iterator[tuple[int, Path]]:
    """``attentive-router serve`` as a process, its admin API on HTTPS: (admin port, log)."""
    tls = {
        "ROUTER_ADMIN_TOKEN": TOKEN,
        "ROUTER_ADMIN_TLS_CERT": str(certificate.cert),
        "ROUTER_ADMIN_TLS_KEY": str(certificate.key),
        "ROUTER_LOG_LEVEL": "info",
    }
    with running_ingress(names.prefix, tmp_path, AMQP_URL, SIGNING_KEY, **tls) as router:
        yield int(router.env["ROUTER_ADMIN_PORT"]), router.log


def wait_listening(log: Path) -> None:
    """Until serve says its admin listener is up (20 s at most)."""
    deadline = time.monotonic() + 20
    while b'"listener":"admin"' not in log.read_bytes().replace(b" ", b""):
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)


def test_serve_speaks_https_on_the_admin_port_and_the_cli_verifies_it(
    served_router: tuple[int, Path],
    certificate: Certificate,
    token_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given serve with a certificate and key for its admin listener
    port, log = served_router
    wait_listening(log)
    https = f"https://127.0.0.1:{port}"

    # When the CLI calls it over https, trusting that certificate, the token in a file
    code, out, err = cli(
        capsys,
        monkeypatch,
        *("claims", "list", "--json"),
        ROUTER_ADMIN_URL=https,
        ROUTER_ADMIN_CA=str(certificate.cert),
        ROUTER_ADMIN_TOKEN_FILE=str(token_file),
    )

    # Then it is answered
    assert (code, err) == (0, "")
    assert orjson.loads(out) == {"claims": []}

    # And so it is with the token file named by a flag, and the name localhost verified too
    code, out, err = cli(
        capsys,
        monkeypatch,
        *("claims", "list", "--json", "--token-file", str(token_file)),
        ROUTER_ADMIN_URL=f"https://localhost:{port}",
        ROUTER_ADMIN_CA=str(certificate.cert),
    )
    assert (code, err) == (0, "")

    # But a client that does not trust the certificate refuses it, in one line
    code, out, err = cli(
        capsys, monkeypatch, "claims", "list", ROUTER_ADMIN_URL=https, ROUTER_ADMIN_TOKEN=TOKEN
    )
    assert code == 1 and err.count("\n") == 1 and UNTRUSTED in err

    # And plain HTTP gets nothing from the TLS port
    code, out, err = cli(
        capsys,
        monkeypatch,
        *("claims", "list"),
        ROUTER_ADMIN_URL=f"http://127.0.0.1:{port}",
        ROUTER_ADMIN_TOKEN=TOKEN,
    )
    assert code == 1 and "cannot reach the admin API" in err
    assert TOKEN not in log.read_text()


@pytest.fixture
async def admin_over_tls(admin_settings: Settings, certificate: Certificate) -> AsyncIterator[str]:
    """The real admin listener in this process, over TLS: its https:// URL (by name)."""
    settings = replace(
        admin_settings,
        admin_host="127.0.0.1",
        admin_port=free_port(),
        admin_tls_cert=str(certificate.cert),
        admin_tls_key=str(certificate.key),
    )
    runner = web.AppRunner(create_admin_app(settings), access_log=None)
    await runner.setup()
    await admin_site(runner, settings).start()
    yield f"https://localhost:{settings.admin_port}"
    await runner.cleanup()


async def test_a_worker_claims_its_events_over_https_trusting_the_ca_it_is_given(
    admin_over_tls: str, certificate: Certificate, names: Names
) -> None:
    worker = Worker("tls-claimer")
    worker.on("sms.*")(noop)
    trusting = WorkerSettings(
        admin_url=admin_over_tls,
        admin_token=TOKEN,
        admin_ca=str(certificate.cert),
        namespace=names.prefix,
        claim_timeout=5,
    )

    await claim_events(worker, trusting)

    async with AdminClient(admin_over_tls, TOKEN, ca_file=str(certificate.cert)) as admin:
        claims = await admin.list_claims("tls-claimer")
    assert [claim["event"] for claim in claims] == ["sms.*"]

    # A worker that does not trust it gives up (after its claim timeout), saying why
    with pytest.raises(AdminUnreachable, match=UNTRUSTED):
        await claim_events(worker, replace(trusting, admin_ca="", claim_timeout=0.5))


async def noop(_: object) -> None:
    return None


def test_the_admin_url_is_https_when_the_listener_serves_tls(certificate: Certificate) -> None:
    env = {
        "ROUTER_ADMIN_TLS_CERT": str(certificate.cert),
        "ROUTER_ADMIN_TLS_KEY": str(certificate.key),
    }

    assert Settings.from_env(env).admin_url == "https://127.0.0.1:8081"
    assert Settings.from_env({}).admin_url == "http://127.0.0.1:8081"


@pytest.mark.parametrize("missing", ["ROUTER_ADMIN_TLS_CERT", "ROUTER_ADMIN_TLS_KEY"])
def test_a_certificate_without_its_key_or_the_reverse_is_refused_in_one_line(
    missing: str, certificate: Certificate
) -> None:
    env = {
        "ROUTER_ADMIN_TLS_CERT": str(certificate.cert),
        "ROUTER_ADMIN_TLS_KEY": str(certificate.key),
    }
    del env[missing]

    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)

    assert str(refused.value).endswith(f"but {missing} is not: TLS needs both")


def test_files_that_are_no_certificate_and_key_are_refused_in_one_line(
    certificate: Certificate, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")

    for cert, key in ((garbage, certificate.key), (certificate.cert, tmp_path / "absent.key")):
        with pytest.raises(ConfigError) as refused:
            server_context(str(cert), str(key))
        message = str(refused.value)
        assert message.startswith("ROUTER_ADMIN_TLS_CERT / ROUTER_ADMIN_TLS_KEY: cannot load")
        assert "\n" not in message

    assert server_context("", "") is None
