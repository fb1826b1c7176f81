"""An :class:`~settlement.source.ItemSource` that follows the matcher's websocket ``stream`` op.

The relayer asks for ``stream(from_seq)`` with the chain's ``nextSeq``; this source connects,
sends ``{"op": "stream", "from_seq": ...}`` and yields the decoded items in order. A dropped
connection (matcher restart, network blip) is retried from the next sequence number it still
needs, so the relayer sees one gap-free stream. When the matcher answers that the requested
items are already settled (``SEQ_UNAVAILABLE`` or a ``stream_gap`` frame: someone else settled
them), the stream *ends*: the relayer then finishes what it holds and resyncs from the chain.
"""
from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import AsyncIterator

import websockets
from websockets.asyncio.client import connect

from crossbook.batch_codec import decode_batch
from crossbook.protocol_types import Item
from settlement.source import SourceGap

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">QH")  # docs/api.md: an item's data + this header is a one-item batch


def decode_item(seq: int, data_hex: str) -> Item:
    """The item of a stream ``item`` frame (its ``data`` is the batch encoding of one item)."""
    data = bytes.fromhex(data_hex[2:] if data_hex[:2] in ("0x", "0X") else data_hex)
    _, items = decode_batch(_HEADER.pack(seq, 1) + data)
    return items[0]


class WsItemSource:
    """Follows ``url``'s sequenced stream; reconnects every ``retry_s`` while the matcher is
    unreachable."""

    def __init__(self, url: str, token: str | None = None, retry_s: float = 0.5) -> None:
        self.url = url
        self.token = token
        self.retry_s = retry_s
        self._matched: dict[int, float] = {}
        self._closed = False

    def close(self) -> None:
        """Make open streams end at their next reconnect (tests, shutdown)."""
        self._closed = True

    def matched_at(self, seq: int) -> float | None:
        """When the matcher sequenced ``seq`` (from the frame's ``ts_ms``); each seq is asked
        for once by the relayer, so the entry is dropped to keep memory flat."""
        return self._matched.pop(seq, None)

    async def stream(self, from_seq: int) -> AsyncIterator[tuple[int, Item]]:
        """See :meth:`settlement.source.ItemSource.stream`."""
        seq = from_seq
        while not self._closed:
            try:
                async with connect(self.url, max_size=None, compression=None,
                                   open_timeout=5) as ws:
                    await ws.recv()  # hello
                    req: dict[str, object] = {"op": "stream", "id": 1, "from_seq": seq}
                    if self.token is not None:
                        req["token"] = self.token
                    await ws.send(json.dumps(req))
                    async for raw in ws:
                        msg = json.loads(raw)
                        t = msg.get("type")
                        if t == "item":
                            s = int(msg["seq"])
                            if s < seq:
                                continue
                            if s != seq:
                                raise SourceGap(f"stream jumped from {seq} to {s}")
                            ts = int(msg.get("ts_ms") or 0)
                            if ts:
                                self._matched[s] = ts / 1000
                            yield s, decode_item(s, str(msg["data"]))
                            seq += 1
                        elif t == "response" and msg.get("id") == 1 and not msg.get("ok"):
                            if msg.get("code") == "SEQ_UNAVAILABLE":
                                log.info("seq %d already settled: ending the stream", seq)
                                return
                            raise SourceGap(f"stream refused: {msg.get('code')} "
                                            f"{msg.get('message')}")
                        elif t == "stream_gap":
                            log.info("stream gap at %d (settled %s): ending the stream", seq,
                                     msg.get("settled_seq"))
                            return
            except (OSError, asyncio.TimeoutError, websockets.ConnectionClosed,
                    websockets.InvalidHandshake) as exc:
                log.warning("matcher stream at %s unavailable (%s); retrying from %d",
                            self.url, exc, seq)
            await asyncio.sleep(self.retry_s)


__all__ = ["WsItemSource", "decode_item"]
