"""The ``attentive-router`` command, run in-process: exit codes and one-line messages.

Exit codes: 0 done, 1 the operation failed, 2 wrong usage or configuration.
"""

from __future__ import annotations

import os

import pytest

from router.cli.main import main
from router.contract.events import EVENT_TYPES

#: Port 9 (discard) is closed on the test machine: connecting to it is refused at once.
CLOSED_URL = "http://127.0.0.1:9/webhooks/attentive"


@pytest.fixture(autouse=True)
def _no_router_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without any ROUTER_* variable, whatever the shell running pytest has."""
    for name in list(os.environ):
        if name.startswith("ROUTER_"):
            monkeypatch.delenv(name)


def _one_line(text: str) -> str:
    """The single line of ``text``, failing the test when there is not exactly one."""
    assert text.endswith("\n"), repr(text)
    assert text.count("\n") == 1, repr(text)
    return text.rstrip("\n")


def test_no_command_is_wrong_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """Given no arguments, the command exits 2 with one line saying a command is required."""
    with pytest.raises(SystemExit) as exited:
        main([])

    assert exited.value.code == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert line.startswith("attentive-router: ")
    assert "required" in line
    assert "--help" in line
    assert captured.out == ""


def test_an_unknown_command_is_wrong_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["launch"])

    assert exited.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("attentive-router: ")
    assert "launch" in line


def test_an_unknown_option_is_wrong_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["send-test", "sms.sent", "--colour", "blue"])

    assert exited.value.code == 2
    assert "--colour" in _one_line(capsys.readouterr().err)


def test_serve_without_a_signing_key_refuses_to_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given no ROUTER_SIGNING_KEYS and no --signing-key, serve exits 2 naming the variable."""
    assert main(["serve"]) == 2

    line = _one_line(capsys.readouterr().err)
    assert line.startswith("attentive-router: ")
    assert "ROUTER_SIGNING_KEYS" in line


def test_serve_with_only_blank_signing_keys_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROUTER_SIGNING_KEYS", " , ,")

    assert main(["serve", "--signing-key", ""]) == 2

    assert "ROUTER_SIGNING_KEYS" in _one_line(capsys.readouterr().err)


def test_serve_with_a_bad_setting_in_the_environment_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROUTER_PORT", "eighty")

    assert main(["serve", "--signing-key", "k"]) == 2

    assert "ROUTER_PORT" in _one_line(capsys.readouterr().err)


def test_send_test_of_an_unknown_type_lists_the_valid_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A typo in the event type is wrong usage; the message offers the 11 types."""
    assert main(["send-test", "sms.delivered", "--signing-key", "k", "--url", CLOSED_URL]) == 2

    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert "'sms.delivered'" in line
    for event_type in EVENT_TYPES:
        assert event_type in line
    assert captured.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["send-test", "--signing-key", "k"], id="neither"),
        pytest.param(["send-test", "sms.sent", "--all", "--signing-key", "k"], id="both"),
    ],
)
def test_send_test_needs_exactly_one_of_a_type_or_all(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--url", CLOSED_URL]) == 2

    line = _one_line(capsys.readouterr().err)
    assert "EVENT_TYPE" in line
    assert "--all" in line


def test_send_test_to_a_closed_port_fails_saying_it_cannot_reach_the_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given nothing listening at the URL, send-test exits 1 (the operation failed)."""
    assert main(["send-test", "sms.sent", "--url", CLOSED_URL, "--signing-key", "k"]) == 1

    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert line.startswith(f"attentive-router: cannot reach {CLOSED_URL}")
    assert captured.out == ""


def test_send_test_takes_the_first_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --signing-key, ROUTER_SIGNING_KEYS is used: the send is attempted (and fails)."""
    monkeypatch.setenv("ROUTER_SIGNING_KEYS", "new,old")

    assert main(["send-test", "--all", "--url", CLOSED_URL]) == 1

    assert "cannot reach" in _one_line(capsys.readouterr().err)


def test_send_test_without_any_signing_key_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No --signing-key and no ROUTER_SIGNING_KEYS: exit 2 before anything is sent."""
    assert main(["send-test", "sms.sent", "--url", CLOSED_URL]) == 2

    line = _one_line(capsys.readouterr().err)
    assert "ROUTER_SIGNING_KEYS" in line
    assert "--signing-key" in line
