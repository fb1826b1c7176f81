"""The server's own parse of simple text frames (matcher.server._FastConnection.data_received)
against websockets' rules: frames split anywhere across TCP reads, several frames per read,
control frames between them, and every kind of bad frame still answered the way websockets
answers it (the close codes of RFC 6455)."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.frames import Frame, Opcode

from matcher.server import MatcherServer


async def _open(srv: MatcherServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP client past the websocket handshake and the server's hello frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    op, payload = await _read(reader)
    assert op == Opcode.TEXT and json.loads(payload)["type"] == "hello"
    return reader, writer


async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (unmasked) server frame: opcode and payload."""
    head = await asyncio.wait_for(reader.readexactly(2), 5)
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(n)


def _text(obj: object, *, fin: bool = True) -> bytes:
    """A masked client text frame of ``obj`` as JSON."""
    return Frame(Opcode.TEXT, json.dumps(obj).encode(), fin).serialize(mask=True)


def _ping(rid: int, pad: int = 0) -> bytes:
    return _text({"op": "ping", "id": rid, **({"pad": "x" * pad} if pad else {})})


async def _response_id(reader: asyncio.StreamReader) -> int:
    op, payload = await _read(reader)
    assert op == Opcode.TEXT
    m = json.loads(payload)
    assert m["type"] == "response", m
    return int(m["id"])


async def _close_code(reader: asyncio.StreamReader) -> int:
    """The code of the close frame the server sends next (skipping other frames)."""
    while True:
        op, payload = await _read(reader)
        if op == Opcode.CLOSE:
            return int.from_bytes(payload[:2], "big")


async def test_frames_split_anywhere_and_batched(server: MatcherServer) -> None:
    reader, writer = await _open(server)
    # a 16-bit-length frame cut after 1, 2, 4, 8 bytes and mid-payload: each piece is its own
    # TCP read (TCP_NODELAY, a pause between writes)
    big = _ping(1, pad=300)
    cuts = [0, 1, 2, 4, 8, 100, len(big)]
    for a, b in zip(cuts, cuts[1:]):
        writer.write(big[a:b])
        await writer.drain()
        await asyncio.sleep(0.02)
    assert await _response_id(reader) == 1
    # a 7-bit-length frame cut after its header, then completed together with two more frames
    # and the first half of a fourth in one read
    small = _ping(2)
    writer.write(small[:6])
    await writer.drain()
    await asyncio.sleep(0.02)
    last = _ping(5)
    writer.write(small[6:] + _ping(3) + _ping(4, pad=200) + last[:3])
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.write(last[3:])
    assert [await _response_id(reader) for _ in range(4)] == [2, 3, 4, 5]
    writer.close()


async def test_control_frames_between_text_frames(server: MatcherServer) -> None:
    reader, writer = await _open(server)
    ping = Frame(Opcode.PING, b"abc").serialize(mask=True)
    writer.write(_ping(1) + ping + _ping(2))
    await writer.drain()
    got = [await _read(reader) for _ in range(3)]
    # the pong may leave before or after the first response (websockets answers a ping as
    # soon as it parses it, RFC 6455 5.5.2); the responses keep their order
    assert [p for op, p in got if op == Opcode.PONG] == [b"abc"]
    assert [json.loads(p)["id"] for op, p in got if op == Opcode.TEXT] == [1, 2]
    writer.close()


def _with_bits(frame: bytes, set0: int = 0, clear1: int = 0) -> bytes:
    return bytes([frame[0] | set0, frame[1] & ~clear1]) + frame[2:]


@pytest.mark.parametrize("name,frames,code", [
    # RFC 6455 5.1: a server must close on an unmasked client frame (1002)
    ("unmasked", lambda: Frame(Opcode.TEXT, b'{"op":"ping","id":1}').serialize(mask=False), 1002),
    # 5.2: a reserved bit without an extension that defines it (1002)
    ("rsv1 set", lambda: _with_bits(_ping(1), set0=0x40), 1002),
    # 5.4: a text frame while a fragmented message is in progress (1002)
    ("text inside a fragmented message",
     lambda: _text({"op": "ping", "id": 1}, fin=False) + _ping(2), 1002),
    # 8.1: a text message that is not UTF-8 (1007)
    ("invalid utf-8", lambda: Frame(Opcode.TEXT, b"\xff\xfe").serialize(mask=True), 1007),
    # above the hard size limit, refused from the header alone (1009)
    ("too big", lambda: Frame(Opcode.TEXT, b"x" * 70_000).serialize(mask=True)[:20], 1009),
], ids=lambda v: v if isinstance(v, str) else "")
async def test_bad_frames_close_as_websockets_does(server: MatcherServer, name: str,
                                                   frames: object, code: int) -> None:
    reader, writer = await _open(server)
    writer.write(_ping(9))  # a good frame first: the bad one follows a fast-path frame
    await writer.drain()
    assert await _response_id(reader) == 9
    assert callable(frames)
    writer.write(frames())
    await writer.drain()
    assert await _close_code(reader) == code
    writer.close()


async def test_garbage_after_a_good_frame_in_one_read(server: MatcherServer) -> None:
    """The good request is answered before the connection closes (when websockets parsed the
    whole read, the protocol error closed the connection before the response could leave)."""
    reader, writer = await _open(server)
    # opcode 0xF is reserved (RFC 6455 5.2): websockets refuses it with 1002
    writer.write(_ping(1) + b"\x8f\x80" + b"\x00" * 16)
    await writer.drain()
    assert await _response_id(reader) == 1
    assert await _close_code(reader) == 1002
    writer.close()


async def test_sent_frames_every_length_encoding(server: MatcherServer) -> None:
    """Frames the server writes itself (matcher.channels.Conn.send) carry the 7-, 16- and
    64-bit length forms at their boundaries."""
    reader, writer = await _open(server)
    await asyncio.sleep(0.05)  # the writer task idles: sends take the direct write
    (conn,) = server.conns
    sizes = [2, 125, 126, 65_535, 65_536, 70_000]
    for n in sizes:
        assert conn.send(b'"' + b"x" * (n - 2) + b'"')
    for n in sizes:
        op, payload = await _read(reader)
        assert op == Opcode.TEXT and len(payload) == n and payload.strip(b'"x') == b""
    writer.write(_ping(1))
    assert await _response_id(reader) == 1  # the stream stays in step
    writer.close()
