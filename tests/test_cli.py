"""The ``attentive-router`` command, run in-process: exit codes and one-line messages.

Exit codes: 0 done, 1 the operation failed, 2 wrong usage or configuration.
"""

from __future__ import annotations

import pytest

from router.cli.main import main
from router.contract.events import EVENT_TYPES
from tests.environment import no_router_environment

__all__ = ["no_router_environment"]  # autouse: no ROUTER_* variable of the shell counts

#: Port 9 (discard) is closed on the test machine: connecting to it is refused at once.
CLOSED_URL = "http://127.0.0.1:9/webhooks/attentive"


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


@pytest.mark.parametrize(
    ("environment", "argv", "named"),
    [
        pytest.param({}, ["serve"], "ROUTER_SIGNING_KEYS", id="no-signing-key"),
        pytest.param(
            {"ROUTER_SIGNING_KEYS": " , ,"},
            ["serve", "--signing-key", ""],
            "ROUTER_SIGNING_KEYS",
            id="only-blank-signing-keys",
        ),
        pytest.param(
            {"ROUTER_PORT": "eighty"},
            ["serve", "--signing-key", "k"],
            "ROUTER_PORT",
            id="bad-setting-in-the-environment",
        ),
    ],
)
def test_serve_with_a_bad_configuration_refuses_to_start_naming_the_variable(
    environment: dict[str, str],
    argv: list[str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given no signing key, only blank ones, or a bad ROUTER_* variable, serve exits 2 with
    one line naming the variable."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    assert main(argv) == 2

    line = _one_line(capsys.readouterr().err)
    assert line.startswith("attentive-router: ")
    assert named in line


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
