"""The webhook listener's connections (router.ingress.http1), spoken to byte by byte.

With RabbitMQ up, through the ingress as ``serve`` runs it: pipelined requests answered in
order, ``Expect: 100-continue``, compressed bodies, HEAD, HTTP/1.0, the limits on heads and
bodies, and the idle timeout. Without a broker, against :class:`HttpServer` itself with a
handler that waits when told: a shutdown lets the answers under way finish.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from router.contract.examples import example_body
from router.contract.names import Names
from router.settings import Settings
from tests.conftest import SIGNING_KEY, Tap, depth
from tests.gated_http import LIMITS, Gated, gated_server
from tests.wire import (
    SMALL_BODY_LIMIT,
    Serve,
    Served,
    published_as_sent,
    read_response,
    read_response_head,
    signed_request,
    until_closed,
)


def webhook(body: bytes, *, headers: bytes = b"") -> bytes:
    return signed_request(body, SIGNING_KEY, headers=headers)


@pytest.mark.broker
async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    served: Served, tap: Tap
) -> None:
    # Given a service bound to every event
    bodies = [example_body("sms.sent", "acme", external_id=n) for n in range(3)]

    # When a client writes three events, a health check and an unsigned webhook at once
    reader, writer = await served.connect()
    unsigned = b"POST /webhooks/attentive HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\n\r\n{}"
    writer.write(
        b"".join(webhook(b) for b in bodies)
        + b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n"
        + unsigned
    )

    # Then it hears five answers, in the order it asked
    answers = [await read_response(reader) for _ in range(5)]
    writer.close()
    assert [status for status, _ in answers] == [200, 200, 200, 200, 401]
    assert orjson.loads(answers[3][1]) == {"status": "alive"}
    # And the three events were published in that order
    assert [m.body for m in await tap.take(3)] == bodies


@pytest.mark.broker
async def test_a_client_expecting_100_continue_hears_it_before_it_sends_the_body(
    served: Served, tap: Tap
) -> None:
    body = example_body("email.opened")
    head, _, rest = webhook(body, headers=b"Expect: 100-continue\r\n").partition(b"\r\n\r\n")

    # When a client sends only its head, expecting 100 Continue
    reader, writer = await served.connect()
    writer.write(head + b"\r\n\r\n")

    # Then it hears 100 Continue; and once it sent its body, 200, the event published
    async with asyncio.timeout(5):
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(rest)
    await published_as_sent(reader, writer, tap, body)


@pytest.mark.broker
async def test_a_body_announced_over_the_limit_is_refused_before_it_is_sent(
    served: Served, amqp: AbstractRobustConnection, names: Names
) -> None:
    # When a client announces a body over the limit, expecting 100 Continue
    reader, writer = await served.connect()
    writer.write(
        b"POST /webhooks/attentive HTTP/1.1\r\nHost: r\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % (SMALL_BODY_LIMIT + 1)
    )

    # Then it is answered 413 at once, not 100 Continue, and the connection is closed
    status, head, body = await read_response_head(reader)
    assert (status, orjson.loads(body)) == (413, {"error": "request entity too large"})
    assert b"\r\nConnection: close\r\n" in head
    writer.write_eof()  # (the ingress waits for the client to stop sending before it closes)
    assert await until_closed(reader, within=5) == b""
    assert await depth(amqp, names.unrouted_queue) == 0


@pytest.mark.broker
async def test_gzip_and_deflate_bodies_are_verified_and_published_decompressed(
    served: Served, tap: Tap
) -> None:
    # Given a service bound to every event, and an event signed as Attentive signs it
    body = example_body("sms.subscribed")
    plain = webhook(body)
    head, _, _ = plain.partition(b"\r\n\r\n")
    head = head.replace(b"Content-Length: %d" % len(body), b"Content-Length: %d")

    # When it arrives compressed, once with gzip and once with deflate
    reader, writer = await served.connect()
    for name, packed in ((b"gzip", gzip.compress(body)), (b"deflate", zlib.compress(body))):
        writer.write(head % len(packed) + b"\r\nContent-Encoding: " + name + b"\r\n\r\n" + packed)
        # Then the signature is checked on the body it decompresses to, and it is accepted
        assert (await read_response(reader))[0] == 200, name
    writer.close()
    # And the decompressed body is what is published
    assert [m.body for m in await tap.take(2)] == [body, body]


@pytest.mark.broker
async def test_an_encoding_it_cannot_decode_gets_415_and_publishes_nothing(
    served: Served, amqp: AbstractRobustConnection, names: Names
) -> None:
    body = example_body("sms.sent")
    reader, writer = await served.connect()
    writer.write(webhook(body, headers=b"Content-Encoding: br\r\n"))
    status, answer = await read_response(reader)
    writer.close()
    assert (status, orjson.loads(answer)) == (415, {"error": "unsupported content encoding"})
    assert await depth(amqp, names.unrouted_queue) == 0
    assert await depth(amqp, names.invalid_queue) == 0


@pytest.mark.broker
async def test_a_head_over_16_kib_gets_431_and_the_connection_is_closed(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(
        b"GET /healthz HTTP/1.1\r\nHost: r\r\nX-Padding: " + b"p" * (16 * 1024) + b"\r\n\r\n"
    )
    status, head, _ = await read_response_head(reader)
    assert status == 431
    assert b"\r\nConnection: close\r\n" in head
    writer.write_eof()
    assert await until_closed(reader, within=5) == b""


@pytest.mark.broker
async def test_head_requests_get_no_body_and_http_1_0_gets_its_connection_closed(
    served: Served,
) -> None:
    # A HEAD request: the headers a GET would get, no body
    reader, writer = await served.connect()
    writer.write(b"HEAD /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 18\r\n" in head  # {"status":"alive"}
    # (the next answer on the connection follows at once: no body came in between)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
    assert await read_response(reader) == (200, b'{"status":"alive"}')
    writer.close()

    # An HTTP/1.0 client that does not ask to keep the connection: answered, then closed
    reader, writer = await served.connect()
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    answer = await until_closed(reader, within=5)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in answer


@pytest.mark.broker
async def test_a_request_to_switch_protocols_is_answered_then_its_connection_closed(
    served: Served,
) -> None:
    # A WebSocket upgrade: the request is answered as any other, then the connection closes
    reader, writer = await served.connect()
    writer.write(
        b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    answer = await until_closed(reader, within=5)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    writer.close()

    # A CONNECT (a tunnel): no such thing here, and the connection does not stay open
    reader, writer = await served.connect()
    writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    answer = await until_closed(reader, within=5)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 404 Not Found\r\n"), answer
    writer.close()


@pytest.mark.broker
async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(
    serve_settings: Serve, settings: Settings
) -> None:
    # Given the ingress with an idle timeout of 1 s, and a connection that was answered once
    served = await serve_settings(settings, keepalive_timeout=1)
    reader, writer = await served.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
    assert (await read_response(reader))[0] == 200

    # When it stays idle, then the ingress closes it, without another answer
    assert await until_closed(reader, within=4) == b""
    writer.close()


# -- the server itself, without a broker ----------------------------------------------------


@pytest.fixture
async def gated() -> AsyncIterator[Gated]:
    # (an idle connection stays open until the shutdown a test is about closes it)
    async with gated_server(replace(LIMITS, keepalive_timeout=75)) as server:
        yield server


async def test_a_shutdown_closes_idle_connections_and_lets_answers_under_way_finish(
    gated: Gated,
) -> None:
    # Given an idle kept-alive connection and one whose request is being answered
    idle_reader, idle = await gated.connect()
    idle.write(b"GET /fast HTTP/1.1\r\nHost: r\r\n\r\n")
    assert (await read_response(idle_reader))[0] == 200
    busy_reader, busy = await gated.asking_slow()

    # When the server shuts down
    shutting_down = asyncio.create_task(gated.server.shutdown(timeout=10))

    # Then the idle connection is closed at once, the busy one is not
    assert await until_closed(idle_reader, within=2) == b""
    await asyncio.sleep(0.2)
    assert not shutting_down.done()
    # And once its answer is ready it is sent, marked as the last, and the shutdown ends
    gated.gate.set()
    status, head, body = await read_response_head(busy_reader)
    assert (status, body) == (200, b'{"path":"/slow"}')
    assert b"\r\nConnection: close\r\n" in head
    async with asyncio.timeout(5):
        await shutting_down
    assert await until_closed(busy_reader, within=2) == b""
    idle.close()
    busy.close()


async def test_a_shutdown_drops_an_answer_that_takes_longer_than_its_grace(gated: Gated) -> None:
    reader, writer = await gated.asking_slow()
    async with asyncio.timeout(5):
        await gated.server.shutdown(timeout=0.2)
    # (no answer: the client, Attentive, retries what it was not answered)
    assert await until_closed(reader, within=2) == b""
    writer.close()


async def test_a_request_waiting_behind_a_slow_answer_is_not_cut_by_the_head_timeout(
    gated: Gated,
) -> None:
    # Given a connection whose first request is answered slowly, a second pipelined behind it
    reader, writer = await gated.asking_slow()
    writer.write(b"GET /fast HTTP/1.1\r\nHost: r\r\n\r\n")

    # When the first answer takes longer than the head timeout (1 s here)
    await asyncio.sleep(2 * LIMITS.head_timeout + 0.5)
    gated.gate.set()

    # Then both are answered, in order: a complete request owes no head
    assert await read_response(reader) == (200, b'{"path":"/slow"}')
    assert await read_response(reader) == (200, b'{"path":"/fast"}')
    writer.close()


@pytest.mark.broker
@pytest.mark.parametrize("piece", [1, 2, 7, 64, 333, 1000])
async def test_requests_written_in_pieces_are_answered_as_if_whole(
    served: Served, piece: int
) -> None:
    # Given two pipelined webhooks
    wire = webhook(example_body("sms.sent")) + webhook(example_body("email.sent"))

    # When they arrive in pieces of a few bytes, each piece on its own
    reader, writer = await served.connect()
    for start in range(0, len(wire), piece):
        writer.write(wire[start : start + piece])
        await writer.drain()
        await asyncio.sleep(0)
    # Then both are answered, in order, as they would be whole
    answers = [await read_response(reader) for _ in range(2)]
    writer.close()
    assert [status for status, _ in answers] == [200, 200]
    assert [orjson.loads(body)["type"] for _, body in answers] == ["sms.sent", "email.sent"]
