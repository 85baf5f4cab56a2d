"""What one connection of the webhook port may hold and when it is blamed (router.ingress.http1),
spoken to byte by byte: trailers, pipelining, clients that do not read, deadlines while the
server is busy, errors of our own, ``100 Continue`` in its turn, and what RFC 9112 says a
server must refuse.

With RabbitMQ up, through the ingress as ``serve`` runs it; without a broker, against
:class:`HttpServer` itself with a handler that waits when told.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from router.contract.examples import example_body
from router.contract.names import SIGNATURE_HEADER, Names
from router.contract.signing import sign
from router.ingress.http1 import MAX_HEADER_FIELDS, MAX_PIPELINED
from tests.conftest import SIGNING_KEY, Tap, depth
from tests.gated_http import LIMITS, Gated, gated_server
from tests.wire import (
    Served,
    published_as_sent,
    read_response,
    read_response_head,
    until_closed,
)


def signed_head(body: bytes, *, target: bytes = b"/webhooks/attentive", more: bytes = b"") -> bytes:
    """A webhook's request line and headers, signed for ``body``, without the body."""
    return (
        b"POST %s HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n" % target
        + SIGNATURE_HEADER.encode()
        + b": "
        + sign(body, SIGNING_KEY).encode()
        + b"\r\n"
        + more
        + b"\r\n"
    )


def chunked(body: bytes, trailers: bytes = b"") -> bytes:
    """``body`` as one chunk, the last chunk, then ``trailers`` (each line ending in CRLF)."""
    return b"%x\r\n%s\r\n0\r\n%s\r\n" % (len(body), body, trailers)


# -- trailers ---------------------------------------------------------------------------


@pytest.mark.broker
async def test_trailer_fields_never_stand_in_for_headers(served: Served, tap: Tap) -> None:
    # Given a service bound to every event, and a chunked webhook signed as Attentive signs it
    body = example_body("sms.subscribed")
    trailers = SIGNATURE_HEADER.encode() + b": " + b"0" * 64 + b"\r\nContent-Encoding: gzip\r\n"

    # When its trailer section carries a wrong signature and a content encoding
    reader, writer = await served.connect()
    head = signed_head(body, more=b"Transfer-Encoding: chunked\r\n")
    writer.write(head + chunked(body, trailers))

    # Then the headers alone count: verified, not decompressed, published as sent
    await published_as_sent(reader, writer, tap, body)


@pytest.mark.broker
async def test_a_trailer_section_over_the_head_limit_gets_431_and_the_connection_closes(
    served: Served, amqp: AbstractRobustConnection, names: Names
) -> None:
    # When a chunked webhook is followed by a megabyte of distinct trailer fields
    body = example_body("sms.sent")
    reader, writer = await served.connect()
    writer.write(signed_head(body, more=b"Transfer-Encoding: chunked\r\n") + chunked(body)[:-2])
    flood = b"".join(b"X-T%d: %s\r\n" % (n, b"v" * 100) for n in range(10_000))
    writer.write(flood)

    # Then it is answered 431 and the connection closes, nothing published
    status, head, _ = await read_response_head(reader)
    assert status == 431
    assert b"\r\nConnection: close\r\n" in head
    writer.close()
    assert await depth(amqp, names.unrouted_queue) == 0


# -- the server itself, without a broker --------------------------------------------------


@pytest.fixture
async def gated() -> AsyncIterator[Gated]:
    async with gated_server() as server:
        yield server


def get(path: str, *, version: bytes = b"HTTP/1.1", more: bytes = b"") -> bytes:
    return b"GET %s %s\r\nHost: r\r\n%s\r\n" % (path.encode(), version, more)


async def test_a_flood_of_pipelined_requests_is_parsed_only_as_answers_make_room(
    gated: Gated,
) -> None:
    # Given a connection whose first request is answered slowly
    reader, writer = await gated.asking_slow()

    # When 3,000 more requests arrive behind it in one write
    writer.write(b"".join(get(f"/n{n}") for n in range(3000)))
    await writer.drain()
    await asyncio.sleep(0.5)

    # Then no more than MAX_PIPELINED of them were read ahead of their answers
    assert gated.server.requests_count <= 1 + MAX_PIPELINED
    # And once the first is answered, all are, in the order they came
    gated.gate.set()
    assert await read_response(reader) == (200, b'{"path":"/slow"}')
    for n in range(3000):
        assert await read_response(reader) == (200, b'{"path":"/n%d"}' % n)
    writer.close()


async def test_answers_wait_while_the_client_does_not_read_them(gated: Gated) -> None:
    # Given a client that asks for 1,000 answers of 64 KiB in one write and reads none
    reader, writer = await gated.connect()
    writer.write(get("/big") * 1000)
    await writer.drain()
    await asyncio.sleep(1)

    # Then the server stops answering once the connection's buffers are full
    paused_at = len(gated.handled)
    assert paused_at < 1000
    await asyncio.sleep(0.5)
    assert len(gated.handled) == paused_at

    # And when the client reads, every answer comes, whole and in order
    for _ in range(1000):
        status, _, body = await read_response_head(reader)
        assert (status, len(body)) == (200, 65536)
    writer.close()


async def test_a_client_that_reads_nothing_is_dropped_after_the_keepalive_timeout(
    gated: Gated,
) -> None:
    _, writer = await gated.connect()
    writer.write(get("/big") * 1000)
    await writer.drain()
    # (keepalive_timeout is 3 s here; no answer is read meanwhile)
    await asyncio.sleep(LIMITS.keepalive_timeout + 2)
    assert not gated.server.open
    writer.close()


async def test_requests_held_while_the_server_is_busy_do_not_trip_the_head_timeout(
    gated: Gated,
) -> None:
    # Given a slow first answer, forty requests pipelined behind it (more than are read
    # ahead) and the start of one more
    reader, writer = await gated.connect()
    writer.write(get("/slow") + b"".join(get(f"/n{n}") for n in range(40)))
    writer.write(b"GET /last HTTP/1.1\r\nHost: r\r\n")
    await gated.until_handled(1)

    # When the first answer takes longer than twice the head timeout (1 s here)
    await asyncio.sleep(2 * LIMITS.head_timeout + 0.5)
    gated.gate.set()

    # Then every request is answered, in order, and the connection stays open
    assert (await read_response(reader))[0] == 200
    for n in range(40):
        assert await read_response(reader) == (200, b'{"path":"/n%d"}' % n)
    writer.write(b"\r\n")
    assert await read_response(reader) == (200, b'{"path":"/last"}')
    writer.close()


async def test_a_head_timeout_lets_the_answers_under_way_go_out_first(gated: Gated) -> None:
    # Given a slow answer under way and, behind it, a head the client never finishes
    reader, writer = await gated.asking_slow()
    writer.write(b"GET /never HTTP/1.1\r\nHo")

    # When the head timeout passes, then the answer under way is released
    await asyncio.sleep(LIMITS.head_timeout + 0.5)
    gated.gate.set()

    # Then it is still sent, whole, and then the connection closes
    status, head, body = await read_response_head(reader)
    assert (status, body) == (200, b'{"path":"/slow"}')
    assert b"\r\nConnection: close\r\n" in head
    writer.write_eof()
    assert await until_closed(reader, within=5) == b""


async def test_an_error_of_ours_outside_the_handler_closes_only_that_connection(
    gated: Gated,
) -> None:
    # Given a connection whose answer cannot be written (an error of ours in the writer)
    reader, writer = await gated.connect()
    writer.write(get("/broken") + get("/after"))

    # Then that connection closes, without an answer, and leaves the open set
    assert await until_closed(reader, within=5) == b""
    async with asyncio.timeout(5):
        while gated.server.open:
            await asyncio.sleep(0.01)
    writer.close()
    # And another connection is answered as usual
    reader, writer = await gated.connect()
    writer.write(get("/fine"))
    assert await read_response(reader) == (200, b'{"path":"/fine"}')
    writer.close()


async def test_100_continue_waits_for_the_answers_before_it_and_is_for_http_1_1_only(
    gated: Gated,
) -> None:
    # Given a slow first answer, and behind it a POST that expects 100 Continue
    reader, writer = await gated.asking_slow()
    expecting = (
        b"POST /posted HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    writer.write(expecting)

    # Then no 100 Continue overtakes the first answer
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await reader.readuntil(b"\r\n\r\n")
    gated.gate.set()
    assert await read_response(reader) == (200, b'{"path":"/slow"}')
    # And once it is out, the 100 Continue comes, then the answer to the body
    async with asyncio.timeout(5):
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"{}")
    assert await read_response(reader) == (200, b'{"path":"/posted"}')
    writer.close()

    # An HTTP/1.0 client asking the same hears no 100 Continue, only its answer
    reader, writer = await gated.connect()
    writer.write(expecting.replace(b"HTTP/1.1", b"HTTP/1.0"))
    await asyncio.sleep(0.3)
    writer.write(b"{}")
    answer = await until_closed(reader, within=5)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert b"100 Continue" not in answer


# -- what RFC 9112 says a server must refuse ----------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # no Host (§3.2)
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  # two Host (§3.2)
        (b"GET /healthz HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET /healthz\r\n\r\n", 505),  # HTTP/0.9's form
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
    ],
    ids=["no-host", "two-hosts", "http-2", "http-0.9", "te-gzip", "te-gzip-chunked", "te-two"],
)
async def test_requests_rfc_9112_says_to_refuse_are_refused_and_the_connection_closed(
    gated: Gated, request_bytes: bytes, status: int
) -> None:
    reader, writer = await gated.connect()
    writer.write(request_bytes)
    answer = await until_closed(reader, within=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer
    assert b"\r\nConnection: close\r\n" in answer
    assert gated.handled == []


async def test_more_header_fields_than_allowed_get_431(gated: Gated) -> None:
    # Given a head well under 16 KiB, of one field more than allowed (Host is one)
    fields = b"".join(b"f%d: x\r\n" % n for n in range(MAX_HEADER_FIELDS))
    reader, writer = await gated.connect()
    writer.write(b"GET /many HTTP/1.1\r\nHost: r\r\n" + fields + b"\r\n")

    # Then it is refused with 431, never handled, and the connection closes
    answer = await until_closed(reader, within=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert gated.handled == []

    # While as many fields as allowed are fine
    reader, writer = await gated.connect()
    writer.write(
        b"GET /many HTTP/1.1\r\nHost: r\r\n" + fields[fields.index(b"\r\n") + 2 :] + b"\r\n"
    )
    assert await read_response(reader) == (200, b'{"path":"/many"}')
    writer.close()


async def test_an_http_1_0_request_needs_no_host(gated: Gated) -> None:
    reader, writer = await gated.connect()
    writer.write(b"GET /old HTTP/1.0\r\n\r\n")
    answer = await until_closed(reader, within=5)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b'{"path":"/old"}')


async def test_an_absolute_form_target_is_routed_by_its_path(gated: Gated) -> None:
    reader, writer = await gated.connect()
    writer.write(get("http://router.example:8080/a/b?q=1") + get("HTTPS://router.example?q"))
    assert await read_response(reader) == (200, b'{"path":"/a/b"}')
    assert await read_response(reader) == (200, b'{"path":"/"}')
    writer.close()


@pytest.mark.broker
async def test_a_webhook_to_an_absolute_form_target_is_published(served: Served, tap: Tap) -> None:
    body = example_body("email.opened")
    reader, writer = await served.connect()
    head = signed_head(
        body,
        target=b"http://router:8080/webhooks/attentive",
        more=b"Content-Length: %d\r\n" % len(body),
    )
    writer.write(head + body)
    await published_as_sent(reader, writer, tap, body)


@pytest.mark.broker
async def test_a_gzip_body_of_several_members_is_decoded_whole(served: Served, tap: Tap) -> None:
    # Given an event compressed as two gzip members, one after the other (as `cat a.gz b.gz`)
    body = example_body("sms.subscribed")
    half = len(body) // 2
    compressed = gzip.compress(body[:half]) + gzip.compress(body[half:])
    more = b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(compressed)

    # When it is sent signed for its decompressed bytes, then it is verified and published
    reader, writer = await served.connect()
    writer.write(signed_head(body, more=more) + compressed)
    status, answer = await read_response(reader)
    writer.close()
    assert status == 200, orjson.loads(answer)
    assert [m.body for m in await tap.take(1)] == [body]
