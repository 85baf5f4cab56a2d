"""What the CLI writes is safe for a terminal: control characters that came from a webhook, a
header or an error show escaped (``\\x1b``, ``\\r``, ``\\u202e``) instead of acting on the
operator's terminal, and ``--json`` still parses back to the very strings that came in.

The escaping itself is tested alone; then hostile events in the parked-event store (a dead
letter whose type, company, error, reason, routing key and message id carry ESC sequences, CR
and a bidi override, and a quarantined body that is not JSON) go through ``dlq`` and
``invalid`` ``list`` and ``show``, in-process and as a real process.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import os
import subprocess
import sys
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from pamqp.commands import Basic

from router.cli import output
from router.cli.output import escape_controls, print_table, to_json, truncate
from router.contract.examples import example_body
from router.contract.names import (
    COMPANY_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    INVALID_REASON_HEADER,
    ROUTING_KEY_HEADER,
    Names,
)
from router.parked.model import parked_event
from router.parked.store import ParkedStore
from tests.environment import no_router_environment
from tests.test_deadletters import Cli, command_line, opened_store

__all__ = ["no_router_environment"]  # autouse: no ROUTER_* variable of the shell counts

ROOT = Path(__file__).resolve().parent.parent

#: Clear the screen, turn the text red; a carriage return that lets later text overwrite the
#: start of the line; a right-to-left override that makes "txt.exe" read as "exe.txt".
CLEAR_RED = "\x1b[2J\x1b[31m"
HOSTILE_TYPE = f"sms.sent{CLEAR_RED}"
HOSTILE_COMPANY = "acme\rEVIL CORP"
HOSTILE_ERROR = f"{CLEAR_RED}ValueError: all fine\r\x1b]0;pwned\x07 \u202etxt.exe"
HOSTILE_REASON = "exhausted\x08\x08\x08\x08\x08\x08\x08\x08\x08rejected\x9b31m"
HOSTILE_ROUTING_KEY = "sms.sent.acme\x1b[8m"
HOSTILE_ID = "id\x1b[2J\u202e-feed"
HOSTILE_BODY = f"not JSON{CLEAR_RED}\r\nX-Forged: yes\u2066\u202e".encode()

#: The bidirectional classes of the characters that embed, override and isolate.
_EXPLICIT_BIDI = {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}
#: Marks that change direction without a class of their own, and the Unicode line breaks.
_OTHER_INVISIBLE = {"\u061c", "\u200e", "\u200f", "\u2028", "\u2029"}


def is_control(char: str) -> bool:
    """Whether a terminal must never receive ``char`` as it is, judged by the Unicode data
    (not by the escaping's own list, so a gap in that list fails the tests)."""
    return (
        unicodedata.category(char) in ("Cc", "Cs")
        or unicodedata.bidirectional(char) in _EXPLICIT_BIDI
        or char in _OTHER_INVISIBLE
    )


def raw_controls(written: str) -> list[str]:
    """The control characters in what a command wrote, apart from the newlines ending lines."""
    return [char for char in written if char != "\n" and is_control(char)]


# -- the escaping, alone ---------------------------------------------------------------------


def test_every_control_character_is_escaped_and_nothing_else_is() -> None:
    # Given every code point there is
    changed = {chr(code) for code in range(0x110000) if escape_controls(chr(code)) != chr(code)}

    # Then exactly the controls change: C0, DEL, C1, bidi controls, separators, surrogates
    expected = {chr(code) for code in range(0x110000) if is_control(chr(code))}
    assert changed == expected
    assert len(expected) == 65 + 2048 + 9 + 5  # Cc, surrogates, explicit bidi, the others


#: A few controls and how they show: Python's short forms, ``\\xNN`` up to 0xff, else ``\\uNNNN``.
SHOWN = {
    **{"\t": "\\t", "\n": "\\n", "\r": "\\r", "\ud800": "\\ud800"},
    **{chr(c): f"\\x{c:02x}" for c in (0x00, 0x07, 0x08, 0x0B, 0x1B, 0x1F, 0x7F, 0x80, 0x9B, 0x9F)},
    **{chr(c): f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x202A, 0x202E, 0x2028, 0x2066, 0x2069)},
}


@pytest.mark.parametrize(("raw", "shown"), SHOWN.items())
def test_a_control_character_shows_as_its_escape(raw: str, shown: str) -> None:
    assert escape_controls(f"a{raw}b") == f"a{shown}b"


def test_every_c0_and_c1_control_and_del_become_printable_escapes() -> None:
    controls = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0)]))

    escaped = escape_controls(controls)

    assert escaped.isprintable() and escaped.isascii()
    assert escaped.count("\\") == len(controls)


@pytest.mark.parametrize(
    "text",
    [
        "Jöhn Müller <jöhn@exämple.de>",
        "👨\u200d👩\u200d👧 ❤️ 🇩🇪",  # zero-width joiners and a variation selector stay
        "日本語のテキスト",
        "שלום עולם",  # right-to-left text itself is not a control
        "C:\\temp\\x1b is a path, not an escape",
        "".join(map(chr, range(0x20, 0x7F))),
        "",
    ],
)
def test_printable_text_is_left_as_it_is(text: str) -> None:
    assert escape_controls(text) == text


def test_escaping_twice_changes_nothing_more() -> None:
    once = escape_controls(HOSTILE_ERROR)
    assert escape_controls(once) == once
    assert once == "\\x1b[2J\\x1b[31mValueError: all fine\\r\\x1b]0;pwned\\x07 \\u202etxt.exe"


def test_json_keeps_every_string_exact_without_a_raw_control_character() -> None:
    # Given a document whose keys and values hold every control character and some Unicode
    controls = "".join(chr(code) for code in range(0x110000) if is_control(chr(code)))
    controls = "".join(c for c in controls if unicodedata.category(c) != "Cs")  # not UTF-8
    document = {controls: [controls, "Jöhn 👨\u200d👩\u200d👧", "\\x1b is text"], "n": 1}

    for indent in (False, True):
        # When it is written as JSON
        text = to_json(document, indent=indent)

        # Then no control character is in it raw, nothing is escaped twice, and a JSON
        # parser reads back exactly the document
        assert raw_controls(text) == []
        assert orjson.loads(text) == document
        assert orjson.loads(to_json(orjson.loads(text))) == document


def test_a_table_escapes_every_cell_and_aligns_what_is_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_table(["TYPE", "ERROR", "AT"], [[HOSTILE_TYPE, truncate(HOSTILE_ERROR, 30), "now"]])

    lines = capsys.readouterr().out.splitlines()
    assert raw_controls("\n".join(lines)) == []
    assert lines[1].startswith("sms.sent\\x1b[2J\\x1b[31m  \\x1b[2J")
    assert lines[0].index("ERROR") == lines[1].index("\\x1b[2J\\x1b[31mValueError")
    assert lines[0].index("AT") == lines[1].index("now")


def test_a_cut_error_is_cut_after_escaping_so_its_column_keeps_its_width() -> None:
    cut = truncate(HOSTILE_ERROR, 20)
    assert cut == "\\x1b[2J\\x1b[31mValu…"
    assert len(cut) == 20
    assert truncate("  several   spaces\tand a tab  ", 40) == "several spaces\\tand a tab"


def test_notes_warnings_and_errors_on_stderr_are_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output.note(HOSTILE_COMPANY)
    output.warn(HOSTILE_TYPE)
    assert output.fail(f"no event {HOSTILE_ID}", 1) == 1

    err = capsys.readouterr().err
    assert raw_controls(err) == []
    assert err.splitlines() == [
        "note: acme\\rEVIL CORP",
        "warning: sms.sent\\x1b[2J\\x1b[31m",
        "attentive-router: no event id\\x1b[2J\\u202e-feed",
    ]


def test_log_lines_on_stderr_are_escaped_on_a_terminal_and_exact_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output.stderr_logger(console=True).warning(HOSTILE_TYPE, reason=HOSTILE_ERROR)
    output.stderr_logger(console=False).warning(HOSTILE_TYPE, reason=HOSTILE_ERROR)

    console, as_json = capsys.readouterr().err.splitlines()
    assert raw_controls(console + as_json) == []
    assert "sms.sent\\x1b[2J\\x1b[31m" in console
    assert "reason='\\x1b[2J\\x1b[31mValueError: all fine\\r" in console
    assert orjson.loads(as_json) | {"timestamp": None} == {
        "event": HOSTILE_TYPE,
        "reason": HOSTILE_ERROR,
        "level": "warning",
        "timestamp": None,
    }


def test_no_command_module_writes_to_the_terminal_but_through_output() -> None:
    """Every command writes through router/cli/output.py, so none can forget to escape."""
    offenders: list[str] = []
    for path in sorted((ROOT / "router" / "cli").glob("*.py")):
        if path.name == "output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _writes(node.func):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def _writes(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id == "print"
    return (
        isinstance(func, ast.Attribute)
        and func.attr in ("write", "writelines")
        and isinstance(func.value, ast.Attribute)
        and func.value.attr in ("stdout", "stderr")
    )


# -- hostile entries in the parked-event store -------------------------------------------------


@pytest.fixture
def parked_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'router.db'}"


@pytest.fixture
async def parked(parked_url: str) -> AsyncIterator[ParkedStore]:
    async with opened_store(parked_url) as store:
        yield store


@pytest.fixture
def command(capsys: pytest.CaptureFixture[str], names: Names, parked_url: str) -> Cli:
    return command_line(capsys, names, parked_url)


@pytest.fixture
async def hostile_dlq(parked: ParkedStore) -> str:
    """An application whose DLQ holds one dead letter with control characters in every field
    ops see."""
    app = "hostile"
    payload = orjson.loads(example_body("sms.sent", "acme"))
    payload["type"] = HOSTILE_TYPE
    payload["company"]["company_id"] = HOSTILE_COMPANY
    properties = Basic.Properties(
        message_id=HOSTILE_ID,
        content_type="application/json",
        headers={
            COMPANY_HEADER: HOSTILE_COMPANY,
            ERROR_HEADER: HOSTILE_ERROR,
            DEAD_LETTER_REASON_HEADER: HOSTILE_REASON,
            ROUTING_KEY_HEADER: HOSTILE_ROUTING_KEY,
            DEAD_LETTERED_AT_HEADER: "2026-11-26T09:00:00.000Z",
        },
    )
    await park_now(
        parked, orjson.dumps(payload), properties, place="dlq", app=app, routing_key="sms.sent.acme"
    )
    return app


async def park_now(
    store: ParkedStore,
    body: bytes,
    properties: Basic.Properties,
    *,
    place: str,
    app: str | None,
    routing_key: str,
) -> None:
    """Store one delivery of ``place`` as the keeper stores it, seen now."""
    entry = parked_event(
        body, properties, place=place, app=app, routing_key=routing_key, seen_at=datetime.now(UTC)
    )
    await store.add_many([entry])


def assert_safe(*written: str) -> None:
    for text in written:
        assert raw_controls(text) == [], text


@pytest.mark.broker
async def test_a_hostile_dead_letter_is_listed_and_shown_escaped(
    hostile_dlq: str, command: Cli
) -> None:
    app = hostile_dlq

    # When ops list the DLQ
    code, out, err = await command("dlq", "list", "--app", app)

    # Then nothing raw reaches the terminal, and what was there shows escaped
    assert code == 0
    assert_safe(out, err)
    row = out.splitlines()[2]
    assert row.split()[1] == "id\\x1b[2J\\u202e-feed"
    assert "acme\\rEVIL CORP" in row  # (the type is no event type: the store keeps none)
    assert "\\x1b[2J\\x1b[31mValueError: all fine\\r" in row

    # When ops show it
    code, out, err = await command("dlq", "show", HOSTILE_ID, "--app", app)

    # Then every field shows escaped, in the head and in the headers' JSON
    assert code == 0
    assert_safe(out, err)
    fields = dict(line.split(":", 1) for line in out.splitlines()[:11])
    assert {k: v.strip() for k, v in fields.items()} | {"parked at": None, "id": None} == {
        "id": None,
        "message id": "id\\x1b[2J\\u202e-feed",
        "state": "parked",
        "type": "-",
        "company": "acme\\rEVIL CORP",
        "routing key": "sms.sent.acme\\x1b[8m",
        "attempts": "-",
        "error": "\\x1b[2J\\x1b[31mValueError: all fine\\r\\x1b]0;pwned\\x07 \\u202etxt.exe",
        "reason": "exhausted" + "\\x08" * 9 + "rejected\\x9b31m",
        "parked at": None,
        "replays": "0",
    }
    assert '"x-attentive-error": "\\u001b[2J\\u001b[31mValueError' in out
    assert '"type": "sms.sent\\u001b[2J\\u001b[31m"' in out

    # When a missing id carrying escapes is asked for, the error line is escaped too
    code, out, err = await command("dlq", "show", f"{HOSTILE_ID}!", "--app", app)
    assert (code, out) == (1, "")
    assert_safe(err)
    assert "no event id\\x1b[2J\\u202e-feed!" in err


@pytest.mark.broker
async def test_json_of_a_hostile_dead_letter_parses_back_to_the_original_strings(
    hostile_dlq: str, command: Cli
) -> None:
    app = hostile_dlq

    code, out, err = await command("dlq", "list", "--app", app, "--json")
    assert code == 0
    assert_safe(out, err)
    (entry,) = orjson.loads(out)["entries"]
    assert (entry["message_id"], entry["type"], entry["company"]) == (
        HOSTILE_ID,
        None,
        HOSTILE_COMPANY,
    )
    assert (entry["error"], entry["reason"]) == (HOSTILE_ERROR, HOSTILE_REASON)

    for reveal in ((), ("--reveal",)):
        code, out, err = await command("dlq", "show", HOSTILE_ID, "--app", app, "--json", *reveal)
        assert code == 0
        assert_safe(out, err)
        shown = orjson.loads(out)
        assert (shown["type"], shown["company"], shown["error"]) == (
            None,
            HOSTILE_COMPANY,
            HOSTILE_ERROR,
        )
        assert (shown["routing_key"], shown["reason"]) == (HOSTILE_ROUTING_KEY, HOSTILE_REASON)
        assert shown["headers"][ERROR_HEADER] == HOSTILE_ERROR
        assert shown["payload"]["type"] == HOSTILE_TYPE
        assert shown["payload"]["company"]["company_id"] == HOSTILE_COMPANY


async def test_a_hostile_body_that_is_not_json_is_shown_escaped_by_a_real_process(
    parked: ParkedStore, parked_url: str
) -> None:
    # Given an authentic webhook whose body is not JSON but terminal escapes, quarantined
    message_id = hashlib.sha256(HOSTILE_BODY).hexdigest()
    properties = Basic.Properties(
        message_id=message_id, headers={INVALID_REASON_HEADER: "body is not valid JSON"}
    )
    await park_now(parked, HOSTILE_BODY, properties, place="invalid", app=None, routing_key="")
    run = _process(parked_url)

    # When ops list and show it with the real command, the bytes it writes are safe
    listed = await run("invalid", "list")
    shown = await run("invalid", "show", message_id, "--reveal")
    assert_safe(*listed, *shown)
    assert message_id[:12] in listed[0]
    body_line = shown[0].splitlines()[-1]
    assert body_line == "not JSON\\x1b[2J\\x1b[31m\\r\\nX-Forged: yes\\u2066\\u202e"

    # And --json gives the body back exactly, masked or not
    for reveal in ((), ("--reveal",)):
        out, err = await run("invalid", "show", message_id, "--json", *reveal)
        assert_safe(out, err)
        assert orjson.loads(out)["payload"] == HOSTILE_BODY.decode()


def _process(database_url: str) -> Callable[..., Awaitable[tuple[str, str]]]:
    """``python -m router ARGV`` on the test's store: its stdout and stderr, as written
    (decoding fails on anything that is not UTF-8)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}

    async def run(*argv: str) -> tuple[str, str]:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "router", *argv, "--database-url", database_url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.decode("utf-8"), done.stderr.decode("utf-8")

    return run
