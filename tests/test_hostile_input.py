"""Hostile input against the real ingress and admin API, with RabbitMQ up.

Hypothesis sends random, huge, malformed and mis-signed requests. Whatever arrives: never a
5xx, never a crash (the next request is answered), nothing published without a valid
signature, and for signed requests exactly what each answer promises (200: the event in a
tap bound to '#', 202: one message in the invalid queue, 403 / 413: nothing). Slow clients
(slowloris headers, bodies that never finish) are cut off by the header and body timeouts and
do not keep other requests waiting. Without the token the admin API answers 401 and nothing
else; with it, its inputs are validated (4xx, never 5xx).

Hypothesis runs in a thread and hands each example to this test's event loop, so one ingress
serves all the examples of a test and the queues are counted once, at the end.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import string
import unicodedata
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import aiohttp
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from router.amqp import topology
from router.contract.events import EVENT_TYPES, Routable, parse
from router.contract.names import SIGNATURE_HEADER, WEBHOOK_PATH, Names
from router.contract.signing import sign
from router.ingress.http1 import LINGER
from router.settings import Settings
from tests import wire
from tests.conftest import AUTH, OLD_SIGNING_KEY, Client, MakeIngress, TapFactory, depth, signed
from tests.conftest import TOKEN as ADMIN_TOKEN
from tests.wire import STATUS_LINE, Serve, Served, read_response, until_closed

pytestmark = pytest.mark.broker

T = TypeVar("T")
URL = WEBHOOK_PATH
#: A small body limit, so that bodies far beyond it stay cheap to generate and send.
LIMIT = 4096
#: A signing key that is not ASCII: encoded as anything but UTF-8 it is other bytes.
UNICODE_KEY = "clé-secrète-Schlüssel"
KEYS = (UNICODE_KEY, OLD_SIGNING_KEY)
#: Seconds one example may take (a request, its answer and a health check) before it fails.
EXAMPLE_TIMEOUT = 15.0

# -- running properties against one server ----------------------------------------------------


async def for_all(
    strategy: st.SearchStrategy[T],
    check: Callable[[T], Coroutine[Any, Any, None]],
    *,
    examples: int,
    always: Sequence[T] = (),
) -> None:
    """Run ``check`` on ``examples`` values drawn from ``strategy`` (shrunk on a failure),
    and on the values ``always`` (failures found before, kept as regression examples).

    Hypothesis runs in a thread; each example is run on this test's event loop, where the
    server and the broker connections live.
    """
    loop = asyncio.get_running_loop()

    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: T) -> None:
        future = asyncio.run_coroutine_threadsafe(check(value), loop)
        try:
            future.result(timeout=EXAMPLE_TIMEOUT)
        finally:
            future.cancel()

    for value in always:
        run = example(value)(run)
    await asyncio.to_thread(run)


async def settled_depth(
    amqp: AbstractRobustConnection, queue: str, expected: int, within: float = 5.0
) -> int:
    """The depth of ``queue`` once it is ``expected``, or after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (found := await depth(amqp, queue)) != expected and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return found


@dataclass
class Published:
    """What the answers promised was published: 200s and 202s."""

    events: int = 0
    quarantined: int = 0

    def count(self, status: int) -> None:
        self.events += status == 200
        self.quarantined += status == 202


# -- strategies: bodies ------------------------------------------------------------------------


def often(usual: st.SearchStrategy[T], odd: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``usual`` seven times in eight, ``odd`` otherwise."""
    return st.sampled_from([False] * 7 + [True]).flatmap(lambda rare: odd if rare else usual)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
event_types = (
    st.sampled_from(EVENT_TYPES)
    | st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){1,3}", fullmatch=True)
    | st.text(max_size=12)
)
company_ids = (
    st.sampled_from(["MDc6Q29tcGFueTU", "acme.co", "a.b.c", "#", "*", "é"])
    | st.text(max_size=30)
    | st.text(min_size=240, max_size=300)  # too long for a routing key
)
event_dicts = st.fixed_dictionaries(
    {
        "type": event_types,
        "company": st.fixed_dictionaries({"company_id": company_ids | json_scalars}) | json_values,
    },
    optional={
        "timestamp": st.integers(min_value=-(2**63), max_value=2**64 - 1) | json_scalars,
        "subscriber": json_values,
        "message": json_values,
    },
)
event_bodies = event_dicts.map(orjson.dumps)


@st.composite
def duplicate_keys(draw: st.DrawFn) -> bytes:
    """An object whose members repeat: two events' members in one object."""
    first, second = draw(event_dicts), draw(event_dicts)
    members = [
        orjson.dumps({key: value})[1:-1] for d in (first, second) for key, value in d.items()
    ]
    return b"{" + b",".join(members) + b"}"


@st.composite
def non_utf8(draw: st.DrawFn) -> bytes:
    """An event with bytes that are not UTF-8 somewhere in it."""
    body = draw(event_bodies)
    at = draw(st.integers(min_value=0, max_value=len(body)))
    bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80", b"\x00"]))
    return body[:at] + bad + body[at:]


@st.composite
def other_encodings(draw: st.DrawFn) -> bytes:
    """An event's JSON text in an encoding that is not UTF-8 (or with a BOM)."""
    text = orjson.dumps(draw(event_dicts)).decode()
    encoding = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "utf-8-sig"]))
    return text.encode(encoding, errors="replace")


def nested(depth_: int) -> bytes:
    """A routable event carrying ``depth_`` nested arrays."""
    return (
        b'{"type":"sms.sent","company":{"company_id":"deep"},"x":'
        + b"[" * depth_
        + b"]" * depth_
        + b"}"
    )


_PADDED = b'{"type":"sms.sent","company":{"company_id":"big"},"pad":""}'


def sized(size: int) -> bytes:
    """A routable event of exactly ``size`` bytes."""
    return _PADDED[:-2] + b"x" * (size - len(_PADDED)) + b'"}'


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    event_bodies,
    duplicate_keys(),
    non_utf8(),
    other_encodings(),
    st.integers(min_value=1, max_value=3000).map(nested),
    st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1, 2 * LIMIT, 40 * LIMIT]).map(sized),
    st.integers(min_value=len(_PADDED), max_value=3 * LIMIT).map(sized),
)

# -- strategies: headers and paths -------------------------------------------------------------

TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
#: Headers that frame the request or that a test sets itself: not drawn at random.
RESERVED = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "expect",
        "upgrade",
        "content-encoding",
        "content-type",
        "authorization",
        SIGNATURE_HEADER,
    }
)
header_names = st.text(TOKEN, min_size=1, max_size=24).filter(lambda n: n.lower() not in RESERVED)
#: Printable Latin-1 (what an HTTP client library lets through).
header_texts = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
)
random_headers = st.dictionaries(header_names, header_texts, max_size=6)
content_types = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-16",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/" + "x" * 300,
            "",
        ]
    )
    | st.from_regex(r"[a-z]{1,10}/[a-z0-9.+-]{1,20}", fullmatch=True)
    | header_texts
)


def routable(company: str | None) -> bool:
    """Whether a subscription URL can carry ``company``: not "." or ".." (a URL resolves them
    away)."""
    return bool(company) and company not in (".", "..")


#: Company ids as a subscription URL's last segment (percent-encoded).
path_companies = st.text(
    st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30
).filter(routable)


def webhook_path(company: str | None) -> str:
    return URL if company is None else f"{URL}/{quote(company, safe='')}"


# -- strategies: signatures --------------------------------------------------------------------


def _digest(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


#: Each configured key as bytes other than its UTF-8 (another encoding, another normal form).
MISENCODED_KEYS = (
    *(
        key.encode(encoding)
        for key in KEYS
        for encoding in ("latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be", "utf-32")
        if key.encode(encoding, errors="replace") != key.encode("utf-8")
    ),
    b"\xef\xbb\xbf" + UNICODE_KEY.encode("utf-8"),  # with a byte-order mark
    unicodedata.normalize("NFD", UNICODE_KEY).encode("utf-8"),  # decomposed accents
)
assert UNICODE_KEY.encode("latin-1") in MISENCODED_KEYS
assert OLD_SIGNING_KEY.encode("latin-1") not in MISENCODED_KEYS  # ASCII: the very same bytes

HEX = "0123456789abcdef"


@st.composite
def wrong_signatures(draw: st.DrawFn, body: bytes) -> str | None:
    """A signature header that must not verify for ``body`` (None: no header at all)."""
    right = sign(body, UNICODE_KEY)
    position = draw(st.integers(min_value=0, max_value=63))
    other_digit = draw(st.sampled_from(HEX).filter(lambda d: d != right[position]))
    signature: str | None = draw(
        st.one_of(
            st.none(),
            st.just(""),
            header_texts,
            st.text(HEX + HEX.upper(), max_size=130).filter(lambda s: len(s) != 64),
            st.integers(min_value=1, max_value=63).map(lambda n: right[:n]),
            st.text(HEX, min_size=1, max_size=4).map(lambda extra: right + extra),
            st.just(right[:position] + other_digit + right[position + 1 :]),
            st.sampled_from(MISENCODED_KEYS).map(lambda key: _digest(key, body)),
            st.text(min_size=1, max_size=30)
            .filter(lambda key: key not in KEYS)
            .map(lambda key: sign(body, key)),
            st.binary(min_size=1, max_size=8).map(lambda extra: sign(body + extra, UNICODE_KEY)),
            st.sampled_from(
                [
                    "sha256=" + right,
                    base64.b64encode(bytes.fromhex(right)).decode(),
                    right[:32] + " " + right[32:63],
                    hashlib.sha256(body).hexdigest(),  # no key at all
                    hashlib.sha256(UNICODE_KEY.encode() + body).hexdigest(),
                    hmac.new(UNICODE_KEY.encode(), body, hashlib.sha512).hexdigest()[:64],
                ]
            ),
        )
    )
    return signature


@st.composite
def valid_signatures(draw: st.DrawFn, body: bytes) -> str:
    """A signature of ``body`` under a configured key, in lower, upper or mixed case."""
    right = sign(body, draw(st.sampled_from(KEYS)))
    upper = draw(st.lists(st.booleans(), min_size=64, max_size=64))
    return "".join(c.upper() if up else c for c, up in zip(right, upper, strict=True))


# -- strategies: whole requests ----------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One webhook request."""

    path: str
    body: bytes
    headers: dict[str, str]
    #: Sent with chunked transfer encoding, in chunks of these sizes; None: with Content-Length.
    chunks: tuple[int, ...] | None = None

    async def send(self, client: Client) -> tuple[int, bytes]:
        data: bytes | AsyncIterator[bytes] = self.body if self.chunks is None else self._chunked()
        async with asyncio.timeout(10):
            response = await client.post(self.path, data=data, headers=self.headers)
            return response.status, await response.read()

    async def _chunked(self) -> AsyncIterator[bytes]:
        rest = self.body
        for size in self.chunks or ():
            if not rest:
                break
            yield rest[:size]
            rest = rest[size:]
        if rest:
            yield rest


@st.composite
def attempts(
    draw: st.DrawFn, signature: Callable[[bytes], st.SearchStrategy[str | None]]
) -> Attempt:
    body = draw(bodies)
    headers = draw(random_headers)
    if (content_type := draw(st.none() | content_types)) is not None:
        headers["Content-Type"] = content_type
    if (value := draw(signature(body))) is not None:
        headers[SIGNATURE_HEADER] = value
    event = parse(body)
    own_company = event.company_id if isinstance(event, Routable) else None
    company = draw(
        st.none() | path_companies | (st.just(own_company) if routable(own_company) else st.none())
    )
    chunks = draw(st.none() | st.lists(st.integers(min_value=1, max_value=2 * LIMIT), max_size=6))
    return Attempt(webhook_path(company), body, headers, None if chunks is None else tuple(chunks))


def company_of(path: str) -> str | None:
    prefix = URL + "/"
    if not path.startswith(prefix):
        return None
    return unquote(path.removeprefix(prefix))


def expected_status(attempt: Attempt) -> int:
    """What docs/architecture.md ("What the ingress answers") promises for a signed ``attempt``."""
    if len(attempt.body) > LIMIT:
        return 413
    match parse(attempt.body):
        case Routable(company_id=company_id):
            path_company = company_of(attempt.path)
            return 403 if path_company is not None and path_company != company_id else 200
        case _:
            return 202


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def hostile_settings(settings: Settings) -> Settings:
    """The test's settings with a non-ASCII signing key and a small body limit."""
    return replace(settings, signing_keys=KEYS, max_body_bytes=LIMIT)


@pytest.fixture
async def hostile_ingress(make_ingress: MakeIngress, hostile_settings: Settings) -> Client:
    return await make_ingress(hostile_settings)


async def still_answers(client: Client) -> None:
    """The ingress did not crash: it answers the next request."""
    async with asyncio.timeout(5):
        assert (await client.get("/healthz")).status == 200


# -- 1. webhooks: random, malformed and mis-signed requests ------------------------------------


async def test_unsigned_or_mis_signed_requests_get_401_or_413_and_publish_nothing(
    hostile_ingress: Client, amqp: AbstractRobustConnection, names: Names, tap_factory: TapFactory
) -> None:
    # Given a consumer bound to every event
    tap = await tap_factory("#")

    # When random bodies arrive with no signature, or one that is wrong in any way
    async def attempt(request: Attempt) -> None:
        status, answer = await request.send(hostile_ingress)
        # Then each is refused (too large before anything else), with no hint why
        if len(request.body) > LIMIT:
            assert status == 413, (status, answer)
        else:
            assert (status, orjson.loads(answer)) == (401, {"error": "unauthorized"})
        await still_answers(hostile_ingress)

    await for_all(attempts(wrong_signatures), attempt, examples=400)

    # And nothing at all was published
    assert await depth(amqp, tap.queue.name) == 0
    assert await depth(amqp, names.invalid_queue) == 0
    assert await depth(amqp, names.unrouted_queue) == 0


async def test_signed_random_requests_publish_exactly_what_their_answers_say(
    hostile_ingress: Client, amqp: AbstractRobustConnection, names: Names, tap_factory: TapFactory
) -> None:
    # Given a consumer bound to every event
    tap = await tap_factory("#")
    published = Published()

    # When random bodies arrive correctly signed (any key, any case of hex)
    async def attempt(request: Attempt) -> None:
        status, answer = await request.send(hostile_ingress)
        # Then each gets the documented answer: 200, 202, 403 or 413, never a 5xx
        assert status == expected_status(request), (status, answer)
        if status in (200, 202):
            assert orjson.loads(answer)["message_id"] == hashlib.sha256(request.body).hexdigest()
        published.count(status)
        await still_answers(hostile_ingress)

    long_type = {"Content-Type": "application/" + "x" * 300}  # no AMQP content_type (500 once)
    await for_all(
        attempts(valid_signatures),
        attempt,
        examples=400,
        always=[Attempt(URL, b"{", signed(b"{", UNICODE_KEY) | long_type)],
    )

    # And the queues hold exactly one message per 200 (events) and per 202 (invalid)
    assert published.events > 0 and published.quarantined > 0
    assert await settled_depth(amqp, tap.queue.name, published.events) == published.events
    assert await settled_depth(amqp, names.invalid_queue, published.quarantined) == (
        published.quarantined
    )
    assert await depth(amqp, names.unrouted_queue) == 0


async def test_a_key_in_another_encoding_does_not_verify_but_its_utf_8_does(
    hostile_ingress: Client, amqp: AbstractRobustConnection, names: Names, tap_factory: TapFactory
) -> None:
    # Given a consumer bound to every event and an event signed under the key's UTF-8
    tap = await tap_factory("#")
    body = orjson.dumps({"type": "sms.sent", "company": {"company_id": "c"}})
    response = await hostile_ingress.post(URL, data=body, headers=signed(body, UNICODE_KEY))
    assert response.status == 200

    # When the same body is signed with the key as Latin-1, CP1252, UTF-16, UTF-32, NFD, ...
    for key in MISENCODED_KEYS:
        headers = {SIGNATURE_HEADER: _digest(key, body)}
        # Then none of them verifies
        assert (await hostile_ingress.post(URL, data=body, headers=headers)).status == 401, key

    # And only the first event was published
    assert await settled_depth(amqp, tap.queue.name, 1) == 1
    assert await depth(amqp, names.invalid_queue) == 0


async def test_undecodable_content_encodings_get_400_not_500(
    hostile_ingress: Client, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given a signed body that claims a compression it does not have
    body = orjson.dumps({"type": "sms.sent", "company": {"company_id": "c"}})
    for encoding in ("gzip", "deflate"):
        headers = signed(body, UNICODE_KEY) | {"Content-Encoding": encoding}
        # When it is posted, then it is a bad request, not a server error
        response = await hostile_ingress.post(URL, data=body, headers=headers)
        assert response.status == 400, encoding
        assert await response.json() == {"error": "bad request"}
    # And nothing was published
    assert await depth(amqp, names.invalid_queue) == 0
    assert await depth(amqp, names.unrouted_queue) == 0


# -- 2. raw bytes on the wire, through the production runner ---------------------------------


@pytest.fixture
def serve(hostile_settings: Settings, serve_settings: Serve) -> Serve:
    """Serve the ingress the way ``attentive-router serve`` does, with timeouts to choose."""

    async def start(*, header_timeout: float, body_timeout: float) -> Served:
        return await serve_settings(
            hostile_settings, header_timeout=header_timeout, body_timeout=body_timeout
        )

    return start


@dataclass(frozen=True)
class RawAttempt:
    """One request as bytes: whatever the request line and headers are."""

    method: bytes
    target: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    signed: bool

    def wire(self) -> bytes:
        lines = [b" ".join((self.method, self.target, self.version)), b"Host: router"]
        lines += [name + b": " + value for name, value in self.headers]
        lines.append(b"Content-Length: %d" % len(self.body))
        if self.signed:
            lines.append(SIGNATURE_HEADER.encode() + b": " + sign(self.body, UNICODE_KEY).encode())
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


def _no_line_breaks(value: bytes) -> bool:
    return b"\r" not in value and b"\n" not in value


def _header_name_allowed(name: bytes) -> bool:
    return _no_line_breaks(name) and name.strip().lower().decode("latin-1") not in RESERVED


raw_names = often(
    st.text(TOKEN, min_size=1, max_size=20).map(str.encode), st.binary(max_size=20)
).filter(_header_name_allowed)
#: Header values: visible Latin-1 bytes usually, any bytes but CR and LF sometimes.
raw_values = often(
    st.binary(max_size=80).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F)),
    st.binary(max_size=80).filter(_no_line_breaks),
)
raw_headers = st.lists(
    st.tuples(raw_names, raw_values)
    | st.tuples(
        st.sampled_from([b"Content-Type", b"Content-Encoding"]),
        st.sampled_from([b"gzip", b"deflate", b"br", b"zstd", b"identity", b"x-nope"])
        | st.just(b"application/" + b"y" * 300)
        | raw_values,
    ),
    max_size=8,
)
raw_attempts = st.builds(
    RawAttempt,
    method=often(
        st.just(b"POST"),
        st.sampled_from([b"GET", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"PATCH"])
        | st.binary(min_size=1, max_size=8).filter(lambda m: _no_line_breaks(m) and b" " not in m),
    ),
    target=often(
        st.sampled_from([URL.encode(), URL.encode() + b"/c"]),
        st.sampled_from([b"/healthz", b"*", b"http://router" + URL.encode()])
        | st.binary(max_size=60).map(lambda b: URL.encode() + b"/" + b).filter(_no_line_breaks),
    ),
    version=often(
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
        st.binary(max_size=10).filter(_no_line_breaks),
    ),
    headers=raw_headers.map(tuple),
    body=bodies.filter(lambda b: len(b) <= 2 * LIMIT),
    signed=st.booleans(),
)
GZIP = ((b"Content-Encoding", b"gzip"),)
LONG_TYPE = ((b"Content-Type", b"application/" + b"y" * 300),)


PUBLISHED_WITH = {"accepted": 200, "quarantined": 202}


def publication(answer: bytes) -> str | None:
    """ "accepted" or "quarantined" when a raw answer says its request was published."""
    body = answer.partition(b"\r\n\r\n")[2]
    try:
        said = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    status = said.get("status") if isinstance(said, dict) else None
    return status if status in PUBLISHED_WITH else None


async def test_random_request_lines_and_header_bytes_never_get_a_5xx(
    serve: Serve, amqp: AbstractRobustConnection, names: Names, tap_factory: TapFactory
) -> None:
    # Given the ingress as `serve` runs it, and a consumer bound to every event
    served = await serve(header_timeout=5, body_timeout=5)
    tap = await tap_factory("#")
    published = Published()

    # When requests with random methods, targets, versions and header bytes arrive
    async def attempt(request: RawAttempt) -> None:
        reader, writer = await served.connect()
        try:
            writer.write(request.wire())
            answer = await until_closed(reader, within=10)
        finally:
            writer.close()
        # Then each gets an HTTP answer that is not a server error
        status_line = STATUS_LINE.match(answer)
        assert status_line is not None, answer[:200]
        status = int(status_line[1])
        assert status < 500, answer[:500]
        # And only a signed one can be accepted (200) or quarantined (202)
        said = publication(answer)
        assert said is None or (request.signed and status == PUBLISHED_WITH[said]), answer[:500]
        if said is not None:
            published.count(PUBLISHED_WITH[said])

    await for_all(
        raw_attempts,
        attempt,
        examples=400,
        always=[  # 500s found before
            RawAttempt(b"POST", URL.encode(), b"HTTP/1.1", GZIP, b"not gzip", signed=False),
            RawAttempt(b"POST", URL.encode(), b"HTTP/1.1", LONG_TYPE, b"not json", signed=True),
        ],
    )

    # And the queues hold exactly what the answers said
    assert await settled_depth(amqp, tap.queue.name, published.events) == published.events
    assert await settled_depth(amqp, names.invalid_queue, published.quarantined) == (
        published.quarantined
    )


# -- 3. slow clients ---------------------------------------------------------------------------

#: A request head announcing a body of 1000 bytes.
SLOW_BODY_HEAD = (
    b"POST /webhooks/attentive HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n"
)


async def trickle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, interval: float
) -> int:
    """Send ``data`` one byte every ``interval`` seconds while the server listens; bytes sent."""
    sent = 0
    for byte in data:
        if reader.at_eof() or writer.is_closing():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        sent += 1
        await asyncio.sleep(interval)
    return sent


def signed_request(body: bytes) -> bytes:
    """A signed webhook request that keeps its connection open."""
    return wire.signed_request(body, UNICODE_KEY)


async def test_a_silent_or_trickling_client_is_disconnected_at_the_header_timeout(
    serve: Serve,
) -> None:
    # Given the ingress with a header timeout of 1 s
    served = await serve(header_timeout=1, body_timeout=30)

    # When one client connects and sends nothing, and another sends its head a byte a second
    silent_reader, silent = await served.connect()
    slow_reader, slow = await served.connect()
    sending = asyncio.create_task(trickle(slow_reader, slow, SLOW_BODY_HEAD, interval=1.0))
    try:
        # Then the router closes both connections within a few seconds, without an answer
        assert await until_closed(silent_reader, within=5) == b""
        assert await until_closed(slow_reader, within=5) == b""
        # And the trickling client had sent only a part of its head
        async with asyncio.timeout(5):
            assert 0 < await sending < len(SLOW_BODY_HEAD)
    finally:
        sending.cancel()
        silent.close()
        slow.close()


async def test_an_idle_kept_alive_connection_is_not_cut_by_the_header_timeout(
    serve: Serve,
) -> None:
    # Given the ingress with a header timeout of 1 s, and a connection that sent one event
    served = await serve(header_timeout=1, body_timeout=30)
    reader, writer = await served.connect()
    try:
        first = orjson.dumps({"type": "sms.sent", "company": {"company_id": "c"}, "n": 1})
        writer.write(signed_request(first))
        assert (await read_response(reader))[0] == 200

        # When the connection stays idle for twice the header timeout (as a proxy's pool does)
        await asyncio.sleep(2.5)

        # Then the next request on it is still answered: only a request's head is timed
        second = orjson.dumps({"type": "sms.sent", "company": {"company_id": "c"}, "n": 2})
        writer.write(signed_request(second))
        assert (await read_response(reader))[0] == 200
    finally:
        writer.close()


async def test_a_body_that_never_finishes_gets_408_and_the_connection_is_closed(
    serve: Serve, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given the ingress with a body timeout of 1 s
    served = await serve(header_timeout=10, body_timeout=1)

    # When a client announces 1000 bytes of body and sends 20
    reader, writer = await served.connect()
    try:
        writer.write(SLOW_BODY_HEAD + b'{"type": "sms.sent",')

        # Then it is answered 408 after the body timeout
        async with asyncio.timeout(served.settings.body_timeout + 4):
            status, answer = await read_response(reader)
        assert (status, orjson.loads(answer)) == (408, {"error": "request timeout"})
        # And the connection is closed once the ingress stopped waiting for the rest of the body
        assert await until_closed(reader, within=LINGER + 3) == b""
    finally:
        writer.close()

    # And nothing was published
    assert await depth(amqp, names.invalid_queue) == 0
    assert await depth(amqp, names.unrouted_queue) == 0


async def test_a_client_hanging_up_half_way_through_its_body_is_no_server_error(
    serve: Serve,
) -> None:
    # Given the ingress
    served = await serve(header_timeout=10, body_timeout=30)

    with capture_logs() as logs:
        # When a client sends a head and a part of its body, then hangs up
        _, writer = await served.connect()
        writer.write(SLOW_BODY_HEAD + b'{"type": ')
        await served.handling(1)  # the webhook handler is reading the body
        writer.close()
        async with asyncio.timeout(5):  # until the ingress has logged what became of it
            while not any(entry["event"].startswith(("webhook", "unhandled")) for entry in logs):
                await asyncio.sleep(0.02)

    # Then it notes that the client is gone, and neither logs nor counts an error (a bug)
    # logged as a client that went away and counted as a bad request, never as an error
    assert [entry["event"] for entry in logs] == ["webhook_client_gone", "webhook"]
    assert logs[1]["outcome"] == "bad_request"
    async with (
        aiohttp.ClientSession() as session,
        session.get(served.internal_url("/metrics")) as got,
    ):
        metrics = await got.text()
    assert 'attentive_router_requests_total{outcome="error"} 0.0' in metrics


async def still_waiting(reader: asyncio.StreamReader) -> bool:
    """The server has neither answered nor closed this connection (yet)."""
    try:
        async with asyncio.timeout(0.1):
            await reader.read(1)
    except TimeoutError:
        return True
    return False


async def test_slow_clients_do_not_keep_signed_requests_waiting(
    serve: Serve, tap_factory: TapFactory
) -> None:
    # Given the ingress with its default timeouts, and a consumer bound to every event
    served = await serve(header_timeout=10, body_timeout=30)
    tap = await tap_factory("#")

    # And ten clients trickling their heads and ten whose bodies never finish, connected
    slow = [await served.connect() for _ in range(20)]
    trickling = [
        asyncio.create_task(trickle(reader, writer, SLOW_BODY_HEAD, interval=1.0))
        for reader, writer in slow[:10]
    ]
    for _, writer in slow[10:]:
        writer.write(SLOW_BODY_HEAD + b'{"type": ')
    try:
        # When twenty signed events are posted meanwhile
        bodies_ = [
            orjson.dumps({"type": "sms.sent", "company": {"company_id": "c"}, "n": n})
            for n in range(20)
        ]
        async with aiohttp.ClientSession() as session, asyncio.timeout(5):

            async def post(body: bytes) -> int:
                headers = signed(body, UNICODE_KEY)
                async with session.post(served.url(URL), data=body, headers=headers) as response:
                    return response.status

            statuses = await asyncio.gather(*(post(body) for body in bodies_))

        # Then every one was accepted within 5 s and its event delivered
        assert statuses == [200] * 20
        assert len(await tap.take(20)) == 20
        # While the slow clients were all still connected, none of them answered yet
        assert all(await asyncio.gather(*(still_waiting(reader) for reader, _ in slow)))
    finally:
        for task in trickling:
            task.cancel()
        for _, writer in slow:
            writer.close()


# -- 4. the admin API --------------------------------------------------------------------------

ADMIN_PATHS = [
    "/admin/claims",
    "/admin/claims/1",
    "/admin/dlq/sms-audit",
    "/admin/dlq/sms-audit/replay",
    "/admin/dlq/sms-audit/purge",
    "/admin/unrouted",
    "/admin/unrouted/replay",
    "/admin/invalid/purge",
    "/admin/invalid/0123",
    "/",
    "/metrics",
    "/admin/../admin/claims",
]
path_segments = st.text(
    st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=12
).map(lambda s: quote(s, safe=""))
admin_paths = st.sampled_from(ADMIN_PATHS) | st.lists(path_segments, min_size=1, max_size=5).map(
    lambda parts: "/" + "/".join(parts)
)
#: Methods aiohttp's parser knows (it refuses others itself with a 400 that names the method).
admin_methods = st.sampled_from(
    [
        *("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"),
        *("PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "SEARCH", "PURGE"),
    ]
)
wrong_authorizations = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            "Bearer",
            "Bearer ",
            f"Bearer {ADMIN_TOKEN[:-1]}",
            f"Bearer {ADMIN_TOKEN}x",
            f"Bearer {ADMIN_TOKEN.upper()}",
            f"Bearer{ADMIN_TOKEN}",
            f"Basic {base64.b64encode(ADMIN_TOKEN.encode()).decode()}",
            f"Token {ADMIN_TOKEN}",
            ADMIN_TOKEN,
            f"Bearer {ADMIN_TOKEN.replace('-', chr(0x2010))}",  # a Unicode hyphen
        ]
    ),
    header_texts.filter(lambda value: ADMIN_TOKEN not in value).map(lambda v: f"Bearer {v}"),
    header_texts.filter(lambda value: ADMIN_TOKEN not in value),
)
#: What a 401 may carry: nothing about the API.
BARE_HEADERS = frozenset({"content-type", "content-length", "date", "server", "www-authenticate"})


@dataclass(frozen=True)
class AdminAttempt:
    method: str
    path: str
    body: bytes
    authorization: str | None

    async def send(self, client: Client) -> tuple[int, Any, bytes]:
        headers = {} if self.authorization is None else {"Authorization": self.authorization}
        async with asyncio.timeout(10):
            response = await client.request(self.method, self.path, data=self.body, headers=headers)
            return response.status, response.headers, await response.read()


async def test_the_admin_api_without_the_token_answers_401_and_nothing_else(
    admin: Client,
) -> None:
    # When random methods, paths and bodies arrive without the admin token
    async def attempt(request: AdminAttempt) -> None:
        status, headers, body = await request.send(admin)
        # Then every answer is the same bare 401, for known and unknown paths alike
        assert status == 401, (status, body)
        assert body == (b"" if request.method == "HEAD" else b'{"error":"unauthorized"}')
        assert headers["WWW-Authenticate"] == "Bearer"
        assert {name.lower() for name in headers} <= BARE_HEADERS, headers

    await for_all(
        st.builds(
            AdminAttempt,
            method=admin_methods,
            path=admin_paths,
            body=st.binary(max_size=200) | json_values.map(orjson.dumps),
            authorization=wrong_authorizations,
        ),
        attempt,
        examples=300,
    )

    # And the token still works
    assert (await admin.get("/admin/claims", headers=AUTH)).status == 200


#: Applications: valid names usually (so claims are granted, held or conflict), others too.
apps = often(
    st.sampled_from(["sms-audit", "email-engagement", "forwarder"]),
    st.sampled_from(["Not An App", "", "../x", "a" * 65, "é"]) | st.text(max_size=12),
)
patterns = often(
    st.sampled_from(["sms.*", "*", "email.opened", "sms.subscribed", "custom_attribute.set"]),
    st.sampled_from(["sms", "SMS.*", "#", "sms.#", "*.*", ""]) | st.text(max_size=12),
)
filters = st.fixed_dictionaries(
    {},
    optional={
        "type": often(patterns, json_scalars),
        "company": often(st.sampled_from(["c1", "a.b"]), st.text(max_size=12) | json_scalars),
        "message_id": often(st.lists(st.text(HEX, max_size=64), max_size=3), json_values),
        "since": often(
            st.sampled_from(["2026-11-26T09:00Z", "0001-01-01T00:00:00+23:59"]),
            st.sampled_from(["yesterday", "2026-13-01", "9999-12-31T23:59:59+24:00"])
            | json_scalars,
        ),
        "until": often(st.just("9999-12-31T23:59:59.999999-23:59"), json_scalars),
        "error": often(st.text(max_size=12), json_scalars),
    },
)
claim_bodies = often(
    st.fixed_dictionaries(
        {"app": apps, "events": st.lists(patterns, min_size=1, max_size=3)},
        optional={"company": st.sampled_from(["c1", "a.b", "a_b", "#", "x y", "é", "c" * 129])},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "app": apps | json_scalars,
            "events": st.lists(patterns, max_size=3) | patterns | json_values,
            "company": st.text(max_size=12) | json_scalars,
        },
    )
    | json_values,
)
action_bodies = often(
    st.fixed_dictionaries(
        {},
        optional={
            "filter": filters,
            "limit": st.integers(min_value=1, max_value=10**6),
            "rate": st.floats(min_value=0.1, max_value=1e6),
            "dry_run": st.booleans(),
            "confirm": st.booleans(),
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "filter": json_values,
            "limit": st.integers(min_value=-2, max_value=10**30) | json_scalars,
            "rate": st.floats(min_value=1e-300, max_value=1e300) | json_scalars,
            "dry_run": json_scalars,
            "confirm": json_scalars,
            "other": json_scalars,
        },
    )
    | json_values,
)
queries = st.dictionaries(
    often(
        st.sampled_from(["type", "company", "message_id", "since", "until", "error"]),
        st.text(max_size=6),
    ),
    often(st.sampled_from(["sms.*", "c1", "2026-11-26T09:00Z"]), st.text(max_size=12)),
    max_size=3,
)


@st.composite
def admin_inputs(draw: st.DrawFn) -> AdminAttempt:
    """A claim, a dead-letter action, list or show, with a token and a random body or query."""
    place = draw(
        st.sampled_from(["/admin/unrouted", "/admin/invalid"])
        | apps.map(lambda app: f"/admin/dlq/{quote(app, safe='')}")
    )
    method, path, body = draw(
        st.one_of(
            st.tuples(st.just("POST"), st.just("/admin/claims"), claim_bodies),
            st.tuples(
                st.just("POST"),
                st.sampled_from(["/replay", "/purge"]).map(lambda action: place + action),
                action_bodies,
            ),
            st.tuples(st.just("GET"), st.just(place), st.none()),
            st.tuples(
                st.just("GET"),
                st.text(HEX, min_size=1, max_size=64).map(lambda mid: f"{place}/{mid}"),
                st.none(),
            ),
        )
    )
    if method == "GET":
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in draw(queries).items())
        return AdminAttempt(method, f"{path}?{query}", b"", AUTH["Authorization"])
    raw = draw(often(st.just(orjson.dumps(body)), st.binary(max_size=60)))
    return AdminAttempt(method, path, raw, AUTH["Authorization"])


async def test_the_admin_api_validates_its_inputs_with_4xx_never_5xx(
    admin: Client, amqp: AbstractRobustConnection, names: Names
) -> None:
    # Given the broker's topology declared, as the ingress declares it
    await topology.declare(await amqp.channel(), names)

    # When random claims, filters and dead-letter actions arrive with the token
    async def attempt(request: AdminAttempt) -> None:
        status, _, body = await request.send(admin)
        # Then each is answered as documented, with JSON: never a server error (RabbitMQ is up)
        assert status in (200, 201, 202, 400, 404, 409), (status, body)
        assert isinstance(orjson.loads(body), dict)

    await for_all(admin_inputs(), attempt, examples=300)

    # And the admin API still answers
    assert (await admin.get("/admin/claims", headers=AUTH)).status == 200
