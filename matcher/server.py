"""The matcher's websocket server: the I/O shell around :class:`JournaledEngine` + :class:`Intake`.

Threading model: everything runs on one event loop thread (uvloop when available). A complete
text frame is handled inside the transport's ``data_received`` callback (:class:`_FastConnection`):
decode, rate-limit, authenticate, verify the signature (intake), then the engine command goes on
one bounded FIFO of jobs. When that FIFO is empty the command runs at once: one
:meth:`JournaledEngine.submit` (apply + journal write before the ack is released), the response
written to the requesting connection, the outputs fanned out (:mod:`matcher.channels`) - no
task switch, future or await between the frame arriving and its ack leaving. Jobs queued behind
others (timers, dead-man and disconnect cancels, admin commands) run in order from a
``call_soon`` drain, so the engine sees one deterministic command stream - the same stream the
journal replays.

``now`` (unix seconds) is read from the server's clock when the command is built, with no await
between reading the clock and enqueueing, so commands enter the FIFO in clock order.

See docs/api.md for the protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import msgspec
import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.frames import apply_mask as _apply_mask
from websockets.protocol import State
from websockets.streams import StreamReader

from crossbook import gc_policy
from crossbook.batch_codec import encode_item
from crossbook.eip712 import Domain
from matcher.chain_commands import command_for
from matcher.channels import Conn, Hub
from matcher.commands import (
    Ack,
    CancelAll,
    CancelOrder,
    ChainBatchSettled,
    Code,
    Command,
    ExpireTick,
    ModifyOrder,
    OrderStatus,
    OrderUpdate,
    PlaceOrder,
    PostFunding,
    SetHalt,
    Result,
    Sequenced,
)
from matcher.engine import Engine
from matcher.fill_log import FillLog
from matcher.intake import Intake, reject
from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalWriteFailed
from matcher.limits import Limits, TokenBucket
from matcher.orders import CancelReason, Stp, Tif
from matcher.sessions import Authenticator, LoginError, Session
from matcher.ws_messages import (
    BatchCancel,
    BatchModify,
    BatchPlace,
    Cancel,
    CancelAllReq,
    CancelItem,
    ChainCursorReq,
    ChainReq,
    DeadMan,
    DeadManFired,
    FundingReq,
    HaltReq,
    MAX_BATCH,
    GetChallenge,
    Heartbeat,
    Hello,
    ItemMsg,
    Login,
    Modify,
    ModifyItem,
    Ping,
    Place,
    PlaceItem,
    RangeError,
    Response,
    StatusReq,
    Stream,
    StreamGap,
    Subscribe,
    TransferReq,
    Unsubscribe,
    WithdrawReq,
    check_ranges,
    encoder,
    request_decoder,
)
from settlement.lag import LagTracker

log = logging.getLogger(__name__)

_TIF = {"GTC": int(Tif.GTC), "IOC": int(Tif.IOC), "FOK": int(Tif.FOK),
        "POST_ONLY": int(Tif.POST_ONLY)}
_STP = {s.name: int(s) for s in Stp}
_TERMINAL = (OrderStatus.FILLED, OrderStatus.CANCELLED)
_lenient = msgspec.json.Decoder()


@dataclass
class ServerConfig:
    """Everything the server needs besides the engine (docs/api.md lists the defaults)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port (read it back from MatcherServer.port)
    chain_id: int = 31337
    verifying_contract: str = "0x" + "00" * 20
    limits: Limits = field(default_factory=Limits)
    heartbeat_s: float = 5.0  # app-level heartbeat frame period
    ping_interval_s: float | None = 20.0  # websocket ping/pong keepalive
    ping_timeout_s: float | None = 20.0
    challenge_ttl_s: float = 60.0
    max_login_expiry_s: int = 300
    stream_token: str | None = None  # required by the `stream` op when set
    operator_token: str | None = None  # required by the `chain` op; None disables the op
    book_depth: int = 50
    # fills-channel frames kept for subscribe's `fills_after` replay (~450 bytes each in
    # memory): an owner's last `fill_history`, among the last `fill_history_total` of everyone's
    fill_history: int = 5_000
    fill_history_total: int = 1_000_000
    expire_tick_s: float = 1.0  # ExpireTick period (0: never)
    fsync_interval_s: float = 0.05  # group-commit timer under the FSYNC_BY_SHELL policy
    # > 0: the process's cyclic GC is taken over (crossbook/gc_policy.py) and swept this often;
    # 0 leaves CPython's automatic collector alone (a server inside another process, tests)
    gc_sweep_s: float = 0.0
    # > 0: after each request the event loop polls without sleeping for this long (adaptive
    # busy-polling, for a matcher on a core of its own): a request arriving meanwhile is read
    # at once instead of after the sleeping loop's wake-up. Costs that core's idle time.
    busy_poll_us: int = 0


def _extract_id(raw: str | bytes) -> int | None:
    """Best-effort request id of a message strict decoding refused (to echo it)."""
    try:
        obj = _lenient.decode(raw)
    except Exception:
        return None
    if isinstance(obj, dict):
        v = obj.get("id")
        if type(v) is int and 0 <= v < 2**64:
            return v
    return None


def _json_error(raw: str | bytes) -> str | None:
    """Why ``raw`` is not JSON, or None when it is. The strict decoder refuses a frame at
    its first schema violation, which may come before the end of a truncated frame."""
    try:
        _lenient.decode(raw)
    except msgspec.ValidationError:
        return None  # JSON with a value no decoder holds (1e400)
    except msgspec.DecodeError as exc:
        return str(exc)
    except RecursionError:
        return None  # JSON nested too deeply to read, which is not the same as not JSON
    return None


def _err(rid: int | None, code: str, message: str) -> bytes:
    return encoder.encode(Response(rid, False, None, code, message))


def _ok(rid: int | None, result: Any) -> bytes:
    return encoder.encode(Response(rid, True, result))


def _hex_bytes(s: str) -> bytes | None:
    try:
        return bytes.fromhex(s[2:])
    except ValueError:
        return None


class _Batch(list[Command | Ack]):
    """The items of one ``batch_place`` / ``batch_cancel`` / ``batch_modify``, in order: an
    engine command, or the rejection its checks already gave it. Queued as one job, so they
    run back to back."""


# one queued engine job: command (or batch), requesting connection, client request id, admin future
_Job = tuple["Command | _Batch", Conn | None, int | None, "asyncio.Future[Result] | None"]
_TEXT = Opcode.TEXT
_OPEN = State.OPEN
# the generator websockets' frame parser waits in between frames, when nothing is buffered
_AT_EOF = StreamReader.at_eof.__code__


class _FastConnection(ServerConnection):
    """A server connection that hands each complete text frame straight to ``on_text`` from
    the transport callback, skipping websockets' message assembler and the wake-up of the
    connection's reader task (two event-loop round trips per request). Anything else -
    fragmented or non-UTF-8 messages, control frames, frames arriving while the assembler
    still holds earlier ones (which must be answered first) - takes websockets' own path.

    :meth:`data_received` also parses the common arrival itself - whole, final, masked text
    frames with a 7- or 16-bit length, nothing buffered - instead of websockets' generator-based
    parser (~29k fewer instructions per order, bench/ws_path_bench.py --callgrind). Every byte
    it does not take is handed to websockets unchanged, and only whole frames are taken while
    websockets' parser waits at a frame boundary (its buffer empty, suspended before a frame's
    first byte), so websockets sees the rest of the stream exactly as it would have: any frame
    that fails one of the checks below - a reserved bit, another opcode, no mask, a fragment,
    a size above the limit, a fragmented message in progress, invalid UTF-8, a connection not
    OPEN - is parsed, answered and closed on by websockets as before."""

    on_text: Callable[[str], None] | None = None

    def data_received(self, data: bytes) -> None:
        """Take the whole simple text frames at the front of ``data`` (see the class
        docstring); pass whatever remains to websockets."""
        cb = self.on_text
        if cb is not None:
            p = self.protocol
            n = len(data)
            i = 0
            limit = p.max_message_size
            while (n - i >= 6 and data[i] == 0x81 and p.state is _OPEN
                   and p.current_size is None and p.max_fragment_size is None
                   and not p.reader.buffer and not self.recv_messages.frames.queue):
                # ServerProtocol.parse -> Protocol.parse -> StreamReader.at_eof
                g: Any = p.parser
                while (yf := g.gi_yieldfrom) is not None:
                    g = yf
                if g.gi_code is not _AT_EOF:
                    break  # websockets' parser is inside a frame (or not parsing frames yet)
                b2 = data[i + 1]
                ln = b2 & 0x7F
                if b2 < 0x80 or ln == 127:
                    break  # unmasked (a protocol error) or a 64-bit length: websockets
                if ln == 126:
                    ln = (data[i + 2] << 8) | data[i + 3] if n - i >= 4 else -1
                    start = i + 8
                else:
                    start = i + 6
                end = start + ln
                if ln < 0 or end > n or (limit is not None and ln > limit):
                    break  # incomplete (websockets buffers it) or too big (it closes 1009)
                try:
                    text = str(_apply_mask(data[start:end], data[start - 4:start]), "utf-8")
                except UnicodeDecodeError:
                    break  # websockets closes the connection with 1007
                i = end
                try:
                    cb(text)
                except Exception:  # pragma: no cover - _on_message answers its own errors
                    log.exception("request handling failed")
                if i == n:
                    return
            if i:
                data = data[i:]
        super().data_received(data)

    def process_event(self, event: Any) -> None:
        """Route one protocol event (see the class docstring)."""
        cb = self.on_text
        if (cb is not None and type(event) is Frame and event.opcode is _TEXT and event.fin
                and not self.recv_messages.frames.queue):
            try:
                text = str(event.data, "utf-8")
            except UnicodeDecodeError:
                pass  # websockets closes the connection with 1007, as before
            else:
                try:
                    cb(text)
                except Exception:  # pragma: no cover - _on_message answers its own errors
                    log.exception("request handling failed")
                return
        super().process_event(event)


class MatcherServer:
    """Websocket API server around one journaled engine. Use :meth:`start` / :meth:`close`
    inside a running loop; :meth:`submit` is the in-process door for chain events and admin
    commands (watcher deposits, agent approvals, oracle prices, settlements)."""

    def __init__(self, jengine: JournaledEngine, config: ServerConfig | None = None,
                 clock: Callable[[], float] = time.time, fill_log: FillLog | None = None,
                 unpublished: Iterable[tuple[Command, Result]] = ()) -> None:
        """``fill_log``: the fills record on disk (resumed after recovery), so fills are
        replayed across restarts; ``unpublished``: the commands recovery applied after the
        log's end, with their results (:attr:`matcher.journal.Recovery.unpublished`)."""
        self.jengine = jengine
        self.engine: Engine = jengine.engine
        self.config = cfg = config or ServerConfig()
        self.limits = cfg.limits
        self.clock = clock
        self.domain = Domain(cfg.chain_id, cfg.verifying_contract)
        self.intake = Intake(self.engine, self.domain)
        self.auth = Authenticator(self.domain, cfg.challenge_ttl_s, cfg.max_login_expiry_s)
        symbols = {i: m.symbol for i, m in enumerate(self.engine.config.spec.markets)}
        self.hub = Hub(self.engine, symbols, cfg.book_depth, cfg.fill_history,
                       cfg.fill_history_total)
        if fill_log is not None:
            self.hub.restore_fills(fill_log, unpublished)
        self.conns: set[Conn] = set()
        self.port = 0
        # engine jobs not yet run (FIFO); bounded by limits.engine_queue
        self._jobs: deque[_Job] = deque()
        self._drain_scheduled = False
        self._req_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._oid_session: dict[int, Session] = {}
        self._seq_ts: dict[int, int] = {}
        self._seq_event = asyncio.Event()  # replaced and set after each sequencing command
        self._streams = 0  # relayer stream tasks running (the only waiters on _seq_event)
        # matched vs settled sequence in items and seconds (invariant 6); observability only:
        # the engine's gate counts unsettled items, which replay deterministically
        self.lag = LagTracker(self.engine.ledger.settled_seq)
        self.lag.matched_seq = self.engine.ledger.next_seq - 1
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._busy_ns = cfg.busy_poll_us * 1000
        self._last_request_ns = 0
        self._polling = False
        self._hello_limits = {
            "max_message_bytes": self.limits.max_message_bytes,
            "hard_max_message_bytes": self.limits.hard_max_message_bytes,
            "msgs_per_s": int(self.limits.msgs_per_s),
            "burst": self.limits.burst,
            "send_queue_frames": self.limits.send_queue_frames,
            "max_subscriptions": self.limits.max_subscriptions,
            "open_orders_per_subaccount": self.limits.open_orders(self.engine.config),
            "max_batch": MAX_BATCH,
        }

    # ================================================================ lifecycle

    async def start(self) -> None:
        """Bind the listening socket and start the engine, heartbeat and timer tasks."""
        cfg = self.config
        self._server = await serve(
            self._handler, cfg.host, cfg.port,
            max_size=self.limits.hard_max_message_bytes,
            ping_interval=cfg.ping_interval_s, ping_timeout=cfg.ping_timeout_s,
            compression=None,  # deflate costs latency and CPU; frames are small JSON
            max_queue=64,  # inbound frames buffered per connection before TCP back-pressure
            create_connection=_FastConnection,
        )
        self.port = list(self._server.sockets)[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat_loop(), name="heartbeat")]
        if cfg.expire_tick_s > 0:
            self._tasks.append(loop.create_task(self._expire_loop(), name="expire"))
        if self.jengine.writer.fsync_policy == FSYNC_BY_SHELL and cfg.fsync_interval_s > 0:
            self._tasks.append(loop.create_task(self._fsync_loop(), name="fsync"))
        if cfg.gc_sweep_s > 0:
            gc_policy.take_over()
            self._tasks.append(loop.create_task(gc_policy.sweep_every(cfg.gc_sweep_s),
                                                name="gc"))

    async def close(self) -> None:
        """Stop accepting, close every connection, drain the engine queue, sync the journal."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._drain()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.jengine.writer.sync(force=True)  # the fsync task may have been cut off mid-fsync
        if self.config.gc_sweep_s > 0:
            gc_policy.hand_back()

    @property
    def url(self) -> str:
        """``ws://host:port`` of the listening socket."""
        return f"ws://{self.config.host}:{self.port}"

    def now(self) -> int:
        """Unix seconds from the server clock (what goes into commands)."""
        return int(self.clock())

    async def submit(self, cmd: Command) -> Result:
        """Run an admin / chain-event command through the engine queue; returns its result."""
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._defer((cmd, None, None, fut))
        return await fut

    def next_req_id(self) -> int:
        """A fresh engine correlation id (journaled with the command)."""
        return next(self._req_ids)

    # ================================================================ engine task

    def _defer(self, job: _Job) -> bool:
        """Queue a job behind the others; runs from the next loop iteration. False (nothing
        queued) when the FIFO is full."""
        if len(self._jobs) >= self.limits.engine_queue:
            return False
        self._jobs.append(job)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)
        return True

    def _drain(self) -> None:
        self._drain_scheduled = False
        jobs = self._jobs
        run = self._run
        while jobs:
            run(jobs.popleft())

    def _run(self, job: _Job) -> None:
        cmd, conn, rid, fut = job
        if type(cmd) is _Batch:
            assert conn is not None
            self._run_batch(cmd, conn, rid)
            return
        assert not isinstance(cmd, _Batch)
        settled_before = self.engine.ledger.settled_seq
        try:
            res = self._apply(cmd)
        except Exception as exc:
            if conn is not None:
                conn.send(_err(rid, "INTERNAL", f"internal error: {type(exc).__name__}"))
            if fut is not None and not fut.done():
                fut.set_exception(exc)
            return
        ack = res.ack
        if conn is not None:
            if ack.ok:
                conn.send(_ok(rid, {"order_id": ack.order_id, "seq": ack.seq}))
                self._track(conn, cmd, ack)
            else:
                conn.send(_err(rid, ack.code.name, ack.message))
        if fut is not None and not fut.done():
            fut.set_result(res)
        self._after(cmd, res, settled_before)

    def _apply(self, cmd: Command) -> Result:
        """Journal and apply one command (an engine failure is logged and re-raised)."""
        try:
            return self.jengine.submit(cmd)
        except JournalWriteFailed:
            # fail-stop: the engine applied a command the journal does not hold; acking anything
            # more would break "journaled before acknowledged". The supervisor restarts us and
            # recovery rebuilds the state from the journal.
            log.critical("journal write failed; stopping the matcher", exc_info=True)
            os._exit(75)
        except Exception:  # an engine bug must not take the server down
            log.exception("engine failed on %r", cmd)
            raise

    def _track(self, conn: Conn, cmd: Command, ack: Ack) -> None:
        """Remember which session placed a live order (dead-man's switch, cancel on disconnect)."""
        if ack.order_id and ack.order_id in self.engine.orders and (
                type(cmd) is PlaceOrder or type(cmd) is ModifyOrder):
            conn.session.orders.add(ack.order_id)
            self._oid_session[ack.order_id] = conn.session

    def _run_batch(self, batch: _Batch, conn: Conn, rid: int | None) -> None:
        """Apply a batch's items back to back; one response lists each item's outcome. Each
        item's updates are published as it is applied (the books' deltas follow the engine
        step by step), so they reach the client before the response."""
        results: list[dict[str, Any]] = []
        for item in batch:
            if type(item) is Ack:
                assert isinstance(item, Ack)
                results.append({"ok": False, "code": item.code.name, "message": item.message})
                continue
            assert not isinstance(item, Ack)
            settled_before = self.engine.ledger.settled_seq
            try:
                res = self._apply(item)
            except Exception as exc:
                results.append({"ok": False, "code": "INTERNAL",
                                "message": f"internal error: {type(exc).__name__}"})
                continue
            ack = res.ack
            if ack.ok:
                results.append({"ok": True, "order_id": ack.order_id, "seq": ack.seq})
                self._track(conn, item, ack)
            else:
                results.append({"ok": False, "code": ack.code.name, "message": ack.message})
            self._after(item, res, settled_before)
        conn.send(_ok(rid, {"results": results}))

    def _after(self, cmd: Command, res: Result, settled_before: int) -> None:
        """Everything after an applied command's answer: session and lag bookkeeping, the
        fan-out, waking the relayer streams."""
        sequenced = False
        ts = 0
        for o in res.outputs:
            t = type(o)
            if t is OrderUpdate:
                assert isinstance(o, OrderUpdate)
                if o.status in _TERMINAL:
                    s = self._oid_session.pop(o.order_id, None)
                    if s is not None:
                        s.orders.discard(o.order_id)
            elif t is Sequenced:
                assert isinstance(o, Sequenced)
                if not sequenced:
                    sequenced = True
                    ts = int(time.time() * 1000)
                self._seq_ts[o.seq] = ts
                self.lag.matched(o.seq, ts / 1000)
        try:
            self.hub.publish(cmd, res)
        except Exception:  # a fan-out bug must not stop the engine
            log.exception("fan-out failed")
        if type(cmd) is ChainBatchSettled:
            settled = self.engine.ledger.settled_seq
            if settled > settled_before:
                self.lag.settled(settled_before + 1, settled - settled_before, time.time())
            for q in [q for q in self._seq_ts if q <= settled]:
                del self._seq_ts[q]
        if sequenced and self._streams:
            ev = self._seq_event
            self._seq_event = asyncio.Event()
            ev.set()

    def _enqueue(self, conn: Conn, rid: int, cmd: Command | _Batch) -> None:
        """Run a client's command now when nothing is queued before it (the common case: its
        ack leaves within this callback), else queue it behind the others."""
        if not self._jobs:
            self._run((cmd, conn, rid, None))
        elif not self._defer((cmd, conn, rid, None)):
            conn.send(_err(rid, "OVERLOADED", "engine queue full; retry later"))

    # ================================================================ timers

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            frame = encoder.encode(Heartbeat(int(time.time() * 1000),
                                             self.engine.ledger.next_seq - 1))
            for c in tuple(self.conns):
                c.send(frame)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.expire_tick_s)
            # a full FIFO drops the tick: the next one sweeps the same orders
            self._defer((ExpireTick(self.next_req_id(), self.now()), None, None, None))

    async def _fsync_loop(self) -> None:
        # fsync takes ~1 ms here and far longer on a busy disk: in a worker thread it no longer
        # stalls every ack that arrives meanwhile (the group commit's p99)
        loop = asyncio.get_running_loop()
        writer = self.jengine.writer
        while True:
            await asyncio.sleep(self.config.fsync_interval_s)
            fd = writer.begin_sync()
            if fd is None:
                continue
            try:
                await loop.run_in_executor(None, os.fsync, fd)
            except OSError:
                # fail-stop, as for a failed write: what was acknowledged may not be durable
                log.critical("journal fsync failed; stopping the matcher", exc_info=True)
                os._exit(75)

    # ================================================================ connections

    async def _handler(self, ws: ServerConnection) -> None:
        cid = next(self._conn_ids)
        conn = Conn(ws, cid, self.limits.send_queue_frames, Session(cid))
        conn.bucket = TokenBucket(self.limits.msgs_per_s, self.limits.burst)
        self.conns.add(conn)
        ch = conn.session.new_challenge()
        conn.send(encoder.encode(Hello(
            "0x" + ch.hex(), int(self.clock() + self.config.challenge_ttl_s),
            self.config.chain_id, self.config.verifying_contract, self._hello_limits)))
        conn.writer_task = asyncio.get_running_loop().create_task(conn.writer())

        def on_text(raw: str) -> None:
            if not conn.closed:
                self._on_message(conn, raw)

        fast = ws if isinstance(ws, _FastConnection) else None
        if fast is not None:
            fast.on_text = on_text
        try:
            # only what the fast path leaves to websockets arrives here
            async for raw in ws:
                if conn.closed:
                    break
                self._on_message(conn, raw)
        except websockets.ConnectionClosed:
            pass
        finally:
            if fast is not None:
                fast.on_text = None
            self._disconnected(conn)
            if conn.closing is not None:
                await conn.closing

    def _disconnected(self, conn: Conn) -> None:
        self.conns.discard(conn)
        self.hub.drop(conn)
        s = conn.session
        # an armed dead-man's switch keeps counting: a crashed bot's socket closes, and that is
        # the case it is for (nothing can refresh a closed session's countdown)
        if s.cancel_on_disconnect and s.orders:
            self._cancel_session_orders(s, CancelReason.USER, None)
        if not conn.closed:
            conn.closed = True
        conn.queue.clear()
        if conn.writer_task is not None:
            conn.writer_task.cancel()

    def _poll(self) -> None:
        """One turn of the busy-poll: while a request came within ``busy_poll_us``, keep a
        callback ready so the loop polls its sockets with a zero timeout instead of sleeping."""
        if time.monotonic_ns() - self._last_request_ns < self._busy_ns:
            asyncio.get_running_loop().call_soon(self._poll)
        else:
            self._polling = False

    def _on_message(self, conn: Conn, raw: str | bytes) -> None:
        if self._busy_ns:
            self._last_request_ns = time.monotonic_ns()
            if not self._polling:
                self._polling = True
                asyncio.get_running_loop().call_soon(self._poll)
        lim = self.limits
        if not conn.bucket.take():
            # refused messages are counted per 1 s window: a client that backs off recovers,
            # one that keeps hammering is cut off (its errors would be a flood of their own)
            now = time.monotonic()
            if now - conn.strike_window > 1.0:
                conn.strike_window = now
                conn.strikes = 0
            conn.strikes += 1
            if conn.strikes >= lim.flood_disconnect_after:
                conn.kill(1008, "flood")
            else:
                conn.send(_err(_extract_id(raw) if len(raw) <= lim.max_message_bytes else None,
                               "RATE_LIMITED", f"more than {lim.msgs_per_s:g} msgs/s"))
            return
        if len(raw) > lim.max_message_bytes:
            conn.send(_err(None, "MESSAGE_TOO_LARGE",
                           f"message of {len(raw)} bytes above {lim.max_message_bytes}"))
            return
        try:
            req = request_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            rid = _extract_id(raw)
            why = _json_error(raw) if rid is None else None
            if why is not None:
                conn.send(_err(None, "MALFORMED_JSON", why))
            else:
                conn.send(_err(rid, "BAD_REQUEST", str(exc)))
            return
        except msgspec.DecodeError as exc:
            conn.send(_err(None, "MALFORMED_JSON", str(exc)))
            return
        except RecursionError:
            # the decoder's depth bound depends on the stack it runs on; no request nests
            # this deep, and it must still get its one answer
            conn.send(_err(_extract_id(raw), "BAD_REQUEST", "JSON nested too deeply"))
            return
        try:
            check_ranges(req)
        except RangeError as exc:
            conn.send(_err(req.id, "BAD_REQUEST", str(exc)))
            return
        try:
            self._dispatch(conn, req)
        except Exception as exc:  # a handler bug answers the request and keeps the server up
            log.exception("request failed")
            conn.send(_err(req.id, "INTERNAL", f"internal error: {type(exc).__name__}"))

    # ================================================================ requests

    def _owner(self, conn: Conn, rid: int) -> str | None:
        """The session owner, or None after sending the error (not logged in / agent revoked)."""
        s = conn.session
        owner = s.owner
        if owner is None:
            conn.send(_err(rid, "NOT_LOGGED_IN", "log in first"))
            return None
        signer = s.signer
        if signer != owner and not self.engine.is_agent(owner, signer or ""):
            conn.send(_err(rid, "NOT_AUTHORISED", "the session's agent approval was revoked"))
            return None
        return owner

    def _dispatch(self, conn: Conn, req: Any) -> None:
        t = type(req)
        rid: int = req.id
        if t is Place:
            self._place(conn, req)
        elif t is Cancel:
            owner = self._owner(conn, rid)
            if owner is not None:
                self._submit_or_reject(conn, rid, self._cancel_cmd(owner, req))
        elif t is BatchPlace or t is BatchCancel or t is BatchModify:
            self._batch(conn, req)
        elif t is CancelAllReq:
            owner = self._owner(conn, rid)
            if owner is not None:
                self._enqueue(conn, rid, CancelAll(self.next_req_id(), owner,
                                                   None if req.all_subs else req.sub,
                                                   req.market, self.now()))
        elif t is Modify:
            owner = self._owner(conn, rid)
            if owner is not None:
                self._submit_or_reject(conn, rid, self._modify_cmd(owner, req))
        elif t is Login:
            self._login(conn, req)
        elif t is GetChallenge:
            ch = conn.session.new_challenge()
            conn.send(_ok(rid, {"challenge": "0x" + ch.hex(),
                                "expires_at": int(self.clock() + self.config.challenge_ttl_s)}))
        elif t is Subscribe:
            self._subscribe(conn, req)
        elif t is Unsubscribe:
            for name in req.channels:
                if name != "stream":  # a stream ends with its connection, not on request
                    self.hub.unsubscribe(conn, name)
            conn.send(_ok(rid, {"channels": sorted(conn.subs)}))
        elif t is Ping:
            conn.send(_ok(rid, {"ts_ms": int(time.time() * 1000)}))
        elif t is DeadMan:
            self._dead_man(conn, req)
        elif t is WithdrawReq or t is TransferReq:
            owner = self._owner(conn, rid)
            if owner is not None:
                self._submit_or_reject(conn, rid, self._funds_cmd(owner, req))
        elif t is Stream:
            self._stream(conn, req)
        elif t is ChainReq:
            self._chain(conn, req)
        elif t is FundingReq:
            self._post_funding(conn, req)
        elif t is HaltReq:
            self._halt(conn, req)
        elif t is ChainCursorReq:
            led = self.engine.ledger
            block, log_index = self.engine.chain_cursor
            conn.send(_ok(rid, {"block": block, "log_index": log_index,
                                "settled_seq": led.settled_seq, "next_seq": led.next_seq}))
        elif t is StatusReq:
            conn.send(_ok(rid, self.status()))
        else:  # pragma: no cover - the decoder only yields the types above
            conn.send(_err(rid, "BAD_REQUEST", "unknown op"))

    def _submit_or_reject(self, conn: Conn, rid: int, got: Any) -> None:
        if isinstance(got, Ack):
            conn.send(_err(rid, got.code.name, got.message))
        else:
            self._enqueue(conn, rid, got)

    def _place(self, conn: Conn, req: Place) -> None:
        owner = self._owner(conn, req.id)
        if owner is not None:
            self._submit_or_reject(conn, req.id, self._place_cmd(owner, req))

    def _place_cmd(self, owner: str, req: PlaceItem) -> Command | Ack:
        """The engine command for one signed order, or its rejection (intake's checks and the
        signature recovery run here, off the engine's queue)."""
        rid = self.next_req_id()
        if req.order.owner.lower() != owner:
            return reject(rid, Code.NOT_AUTHORISED, "order owner must be the session owner")
        sig = _hex_bytes(req.signature)
        if sig is None:
            return reject(rid, Code.BAD_REQUEST, "signature is not hex")
        return self.intake.place(rid, req.order.to_order(), sig, tif=_TIF[req.tif],
                                 client_id=req.client_id, stp=_STP[req.stp], now=self.now())

    def _cancel_cmd(self, owner: str, req: CancelItem) -> Command | Ack:
        """The engine command for one cancel, or its rejection."""
        rid = self.next_req_id()
        if req.order_id is None and req.client_id is None:
            return reject(rid, Code.BAD_REQUEST, "give order_id or client_id")
        return CancelOrder(rid, owner, req.order_id, req.sub, req.market, req.client_id, self.now())

    def _funds_cmd(self, owner: str, req: WithdrawReq | TransferReq) -> Command | Ack:
        """The engine command for an owner-signed withdrawal or transfer, or its rejection."""
        rid = self.next_req_id()
        what = req.withdrawal if isinstance(req, WithdrawReq) else req.transfer
        sig = _hex_bytes(req.signature)
        if sig is None:
            return reject(rid, Code.BAD_REQUEST, "signature is not hex")
        if what.owner.lower() != owner:
            kind = "withdrawal" if isinstance(req, WithdrawReq) else "transfer"
            return reject(rid, Code.NOT_AUTHORISED, f"{kind} owner must be the session owner")
        if isinstance(req, WithdrawReq):
            return self.intake.withdrawal(rid, req.withdrawal.to_withdrawal(), sig, now=self.now())
        return self.intake.transfer(rid, req.transfer.to_transfer(), sig, now=self.now())

    def _batch(self, conn: Conn, req: BatchPlace | BatchCancel | BatchModify) -> None:
        """``batch_place`` / ``batch_cancel`` / ``batch_modify``: each item costs one message of
        the rate limit (the frame paid for the first); the items run back to back as one engine
        job."""
        rid = req.id
        owner = self._owner(conn, rid)
        if owner is None:
            return
        if isinstance(req, BatchPlace):
            n = len(req.orders)
        elif isinstance(req, BatchCancel):
            n = len(req.cancels)
        else:
            n = len(req.modifies)
        if n > 1 and not conn.bucket.take(n - 1):
            conn.send(_err(rid, "RATE_LIMITED",
                           f"a batch of {n} counts as {n} messages: more than "
                           f"{self.limits.msgs_per_s:g} msgs/s"))
            return
        # the items' checks (and signature recoveries) only once the rate limit let them in
        if isinstance(req, BatchPlace):
            batch = _Batch(self._place_cmd(owner, it) for it in req.orders)
        elif isinstance(req, BatchCancel):
            batch = _Batch(self._cancel_cmd(owner, it) for it in req.cancels)
        else:
            batch = _Batch(self._modify_cmd(owner, it) for it in req.modifies)
        self._enqueue(conn, rid, batch)

    def _modify_cmd(self, owner: str, req: ModifyItem) -> Command | Ack:
        """The engine command for one modify (a size decrease, or a cancel-replace whose new
        order intake verifies here), or its rejection."""
        rid = self.next_req_id()
        if req.order is not None:
            if req.size is not None or req.signature is None:
                return reject(rid, Code.BAD_REQUEST,
                              "a replacement takes `order` + `signature` and no `size`")
            sig = _hex_bytes(req.signature)
            if sig is None:
                return reject(rid, Code.BAD_REQUEST, "signature is not hex")
            if req.order.owner.lower() != owner:
                return reject(rid, Code.NOT_AUTHORISED, "order owner must be the session owner")
            return self.intake.replace(rid, owner, req.order_id, req.order.to_order(), sig,
                                       now=self.now())
        if req.size is not None and req.signature is None:
            return ModifyOrder(rid, owner, req.order_id, req.size, None, None, None, self.now())
        return reject(rid, Code.BAD_REQUEST, "give `size` or `order` + `signature`")

    def _login(self, conn: Conn, req: Login) -> None:
        s = conn.session
        try:
            self.auth.verify(s, req.owner, req.signer, req.challenge, req.expiry,
                             req.signature, self.now(), self.engine.is_agent)
        except LoginError as exc:
            conn.send(_err(req.id, exc.code, exc.message))
            return
        s.cancel_on_disconnect = req.cancel_on_disconnect
        conn.send(_ok(req.id, {"owner": s.owner, "signer": s.signer,
                               "cancel_on_disconnect": s.cancel_on_disconnect}))

    def _subscribe(self, conn: Conn, req: Subscribe) -> None:
        rid = req.id
        for name in req.channels:
            code = self.hub.check_channel(name, conn.session)
            if code is not None:
                msg = ("log in to use private channels" if code == "NOT_LOGGED_IN"
                       else f"no channel {name!r}")
                conn.send(_err(rid, code, msg))
                return
        if any(name in self.hub.private for name in req.channels) and \
                self._owner(conn, rid) is None:
            return  # the agent's approval was revoked: its owner's data is not its to read
        if len(conn.subs | set(req.channels)) > self.limits.max_subscriptions:
            conn.send(_err(rid, "TOO_MANY_SUBSCRIPTIONS",
                           f"at most {self.limits.max_subscriptions} channels"))
            return
        result: dict[str, Any] = {"channels": sorted(conn.subs | set(req.channels))}
        if "fills" in req.channels:
            # where this subscription starts: every later fill is sent on it, so a client that
            # loses the link before its first fill still knows what to replay after
            result["fills_last"] = self.hub.last_fill.get(conn.session.owner or "", 0)
        replay: list[bytes] = []
        if req.fills_after is not None:
            if "fills" not in req.channels:
                conn.send(_err(rid, "BAD_REQUEST", "`fills_after` needs `fills` among the channels"))
                return
            owner = conn.session.owner
            assert owner is not None  # check_channel: fills needs a login
            replay, complete = self.hub.fill_history.after(owner, req.fills_after)
            result["fills"] = {"after": req.fills_after, "replayed": len(replay),
                               "complete": complete}
        conn.send(_ok(rid, result))
        for name in req.channels:  # snapshots follow the response
            self.hub.subscribe(conn, name)
        for frame in replay:  # then the fills missed, oldest first, before any live frame
            conn.send(frame)

    # ================================================================ dead-man's switch

    def _dead_man(self, conn: Conn, req: DeadMan) -> None:
        if self._owner(conn, req.id) is None:
            return
        s = conn.session
        if s.dead_man_timer is not None:
            s.dead_man_timer.cancel()
            s.dead_man_timer = None
        s.dead_man_ms = req.timeout_ms
        if req.timeout_ms:
            s.dead_man_timer = asyncio.get_running_loop().call_later(
                req.timeout_ms / 1000, self._dead_man_fire, conn)
        deadline = int(time.time() * 1000) + req.timeout_ms if req.timeout_ms else None
        conn.send(_ok(req.id, {"timeout_ms": req.timeout_ms, "deadline_ms": deadline}))

    def _dead_man_fire(self, conn: Conn) -> None:
        s = conn.session
        s.dead_man_timer = None
        s.dead_man_ms = 0
        oids = self._cancel_session_orders(s, CancelReason.DEAD_MAN, conn)
        conn.send(encoder.encode(DeadManFired(oids)))

    def _cancel_session_orders(self, s: Session, reason: CancelReason,
                               conn: Conn | None) -> list[int]:
        """Queue a cancel of every live order this session placed; returns their ids."""
        owner = s.owner
        if owner is None:
            return []
        oids = sorted(o for o in s.orders if o in self.engine.orders)
        now = self.now()
        for oid in oids:
            cmd = CancelOrder(self.next_req_id(), owner, oid, 0, 0, None, now, int(reason))
            if not self._defer((cmd, None, None, None)):  # pragma: no cover - 100k jobs
                log.error("engine queue full: dead-man cancel of %d dropped", oid)
        return oids

    # ================================================================ operator: chain events

    def _operator(self, conn: Conn, rid: int, token: str) -> bool:
        """The operator token check of the operator ops; answers NOT_AUTHORISED when it fails
        (always, when the server has no token)."""
        tok = self.config.operator_token
        if tok is None or token != tok:
            conn.send(_err(rid, "NOT_AUTHORISED", "bad operator token"))
            return False
        return True

    def _chain(self, conn: Conn, req: ChainReq) -> None:
        """A confirmed chain event from the watcher -> the engine command it implies
        (:func:`matcher.chain_commands.command_for`); an event it maps to nothing is
        acknowledged as ignored."""
        if not self._operator(conn, req.id, req.token):
            return
        cmd = command_for(req.event, self.next_req_id())
        if cmd is None:
            conn.send(_ok(req.id, {"ignored": True}))
            return
        self._enqueue(conn, req.id, cmd)

    def _post_funding(self, conn: Conn, req: FundingReq) -> None:
        """Operator (``crossbook funding``): sequence a funding update of one market. Guarded
        by the operator token like ``chain``: a funding item moves money between accounts."""
        if not self._operator(conn, req.id, req.token):
            return
        # the engine checks the market, the int32 range and that it has an oracle price
        self._enqueue(conn, req.id, PostFunding(self.next_req_id(), req.market, req.rate_ppm,
                                                self.now()))

    def _halt(self, conn: Conn, req: HaltReq) -> None:
        """Operator (``crossbook halt``, or the watcher on a reorg deeper than its confirmation
        depth): halt or resume trading. Guarded by the operator token; the engine journals it."""
        if not self._operator(conn, req.id, req.token):
            return
        if req.reason:
            log.warning("operator asks to halt trading: %.200s", req.reason)
        else:
            log.warning("operator asks to resume trading")
        self._enqueue(conn, req.id, SetHalt(self.next_req_id(), req.reason, req.cancel_orders))

    def status(self) -> dict[str, Any]:
        """Sequencing and settlement-lag figures (the ``status`` op)."""
        led = self.engine.ledger
        now = time.time()
        snap = self.lag.snapshot(now)
        oldest = self._seq_ts.get(led.settled_seq + 1)
        cfg = self.engine.config
        block, log_index = self.engine.chain_cursor
        return {
            "cmd_seq": self.engine.cmd_seq,
            "matched_seq": led.next_seq - 1,
            "settled_seq": led.settled_seq,
            "lag_items": led.next_seq - 1 - led.settled_seq,
            # age of the oldest unsettled item (0 when none, or unknown after a restart)
            "lag_ms": int(now * 1000) - oldest if oldest and led.unsettled else 0,
            "settle_p50_ms": int(snap.p50_s * 1000),
            "settle_p99_ms": int(snap.p99_s * 1000),
            "max_unsettled_per_account": cfg.max_unsettled_per_account,
            "max_unsettled_global": cfg.max_unsettled_global,
            "chain_cursor": [block, log_index],
            "halted": self.engine.halt_reason,  # why trading is halted, or null
            # markets without an oracle price: in reduce-only mode (docs/protocol.md §9.8)
            "reduce_only_markets": sorted(m for m in self.engine.books
                                          if m not in self.engine.risk.market_prices),
            # the fills record on disk: "ok", "failed" (a write failed: fills from then on
            # are not replayed after the next restart), or null when the server runs without
            "fill_log": None if (fl := self.hub.fill_log) is None
            else "failed" if fl.broken else "ok",
        }

    # ================================================================ relayer stream

    def _stream(self, conn: Conn, req: Stream) -> None:
        tok = self.config.stream_token
        if tok is not None and req.token != tok:
            conn.send(_err(req.id, "NOT_AUTHORISED", "bad stream token"))
            return
        if "stream" in conn.subs:
            conn.send(_err(req.id, "BAD_REQUEST", "already streaming on this connection"))
            return
        led = self.engine.ledger
        if req.from_seq <= led.settled_seq:
            conn.send(_err(req.id, "SEQ_UNAVAILABLE",
                           f"seq {req.from_seq} is settled and pruned (settled up to "
                           f"{led.settled_seq}); stream from {led.settled_seq + 1}"))
            return
        conn.subs.add("stream")
        resp = _ok(req.id, {"from_seq": req.from_seq, "next_seq": led.next_seq,
                            "settled_seq": led.settled_seq})
        asyncio.get_running_loop().create_task(self._stream_task(conn, req.from_seq, resp))

    async def _stream_task(self, conn: Conn, cursor: int, resp: bytes) -> None:
        """Pull items from the engine outbox and send them in order. Sends straight to the
        socket (awaiting it) instead of the bounded queue: a lagging relayer only lags, it is
        not a slow consumer to drop, and the outbox already holds everything unsettled."""
        ws = conn.ws
        led = self.engine.ledger
        chunk = self.limits.stream_chunk
        self._streams += 1
        try:
            await ws.send(resp, text=True)
            while not conn.closed:
                if cursor <= led.settled_seq:
                    await ws.send(encoder.encode(StreamGap(cursor, led.settled_seq)), text=True)
                    conn.kill(1011, "stream gap")
                    return
                end = min(led.next_seq, cursor + chunk)
                if cursor < end:
                    # build the whole chunk before awaiting: settlement may prune the outbox
                    frames = []
                    for s in range(cursor, end):
                        data = encode_item(led.unsettled[s].item)
                        frames.append(encoder.encode(ItemMsg(s, data[0], "0x" + data.hex(),
                                                             self._seq_ts.get(s, 0))))
                    cursor = end
                    for f in frames:
                        await ws.send(f, text=True)
                    continue
                await self._seq_event.wait()
        except websockets.ConnectionClosed:
            pass
        finally:
            self._streams -= 1


async def serve_engine(jengine: JournaledEngine, config: ServerConfig | None = None) -> None:
    """Run a server until cancelled."""
    server = MatcherServer(jengine, config)
    await server.start()
    log.info("matcher websocket API on %s", server.url)
    try:
        await asyncio.Future()
    finally:
        await server.close()


def run(jengine: JournaledEngine, config: ServerConfig | None = None) -> None:
    """Blocking entry point: uvloop when installed, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable
        asyncio.run(serve_engine(jengine, config))
    else:
        uvloop.run(serve_engine(jengine, config))


__all__ = ["MatcherServer", "ServerConfig", "run", "serve_engine"]
