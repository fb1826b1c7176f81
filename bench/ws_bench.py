"""Websocket API benchmark: order-to-ack round trip over loopback.

The matcher server (uvloop, journal with the FSYNC_BY_SHELL group-commit policy, default
limits) runs in its own process; 20 client connections run in this process, each logged in as
its own owner, and send pre-signed orders (signed, JSON-encoded and framed before timing) on a
fixed schedule totalling ``RATE`` orders/s, round robin over the connections. The latency of
one order is from just before its bytes are handed to the kernel to the moment the client's
receiver wakes up with its response (the ack with order id and sequence), both in this process.

The client is deliberately thin, because it shares the machine's cores with the server: a
sender thread paces the schedule with ``time.sleep`` (microsecond timers; an event loop's
millisecond timers would bunch the orders into bursts) and writes each pre-built masked frame
with one ``send``; a receiver thread blocks in ``epoll`` and timestamps each wake-up before
parsing what arrived. ``client_cpu_us_per_order`` and ``server_cpu_us_per_order`` (process
CPU time over the run, per order) show where the machine's time went.

Order flow: around the oracle price, 70 % GTC orders 1-20 ticks away from mid (they rest),
30 % IOC orders that cross (they trade), so acks include matching, sequencing and journaling.

Two runs, one per server configuration. The headline keys are the latency configuration, a
matcher with a core of its own: ``busy_poll_us`` (``crossbook matcher --busy-poll-us``) keeps
its event loop polling the sockets for 1 ms after each request instead of sleeping, so a request
is read without the wake-up of a sleeping loop (on this VM most of the gap between the server's
~90 µs of work per order and the ~200 µs round trip); the server then uses all of its core while
orders flow. ``sleeping_loop`` holds the same figures for the default configuration (the loop
sleeps in ``epoll`` between requests), as ``crossbook up`` runs it on a shared machine.

    python -c "from bench.ws_bench import run; print(run())"
"""

from __future__ import annotations

import base64
import json
import multiprocessing as mp
import random
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

CONNS = 20
BUSY_POLL_US = 1_000  # the latency configuration's busy-poll window (see the module doc)
RATE = 5_000  # orders per second, all connections together
DURATION_S = 4.0
WARMUP_S = 0.5  # orders in the first half second are not counted (connection warm-up)
CHAIN_ID = 31337
CONTRACT = "0x" + "cb" * 20


def _keys() -> list[bytes]:
    return [bytes([i + 1]) * 32 for i in range(CONNS)]


def make_server(journal_dir: str, busy_poll_us: int = 0) -> Any:
    """The benchmark's :class:`matcher.server.MatcherServer` (not started): an engine with
    oracle prices and every connection's owner funded, a group-commit journal and a fill log
    in ``journal_dir`` (as ``crossbook matcher`` runs), the production GC policy and rate
    limits above the benchmark's rate."""
    from crossbook import gc_policy
    from crossbook.config import PRICE, USD
    from crossbook.eip712 import Signer
    from matcher.commands import ChainDeposit, SetOraclePrices
    from matcher.engine import Engine
    from matcher.fill_log import FillLog
    from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalWriter
    from matcher.limits import Limits
    from matcher.server import MatcherServer, ServerConfig

    eng = Engine()
    eng.apply(SetOraclePrices(1, {1: 3000 * PRICE, 2: 60_000 * PRICE},
                              {0: 3000 * PRICE, 1: 60_000 * PRICE, 2: 150 * PRICE}, 0))
    for i, k in enumerate(_keys()):
        eng.apply(ChainDeposit(2 + i, Signer(k).address.lower(), 0, 0, 10_000_000 * USD))
    writer = JournalWriter(Path(journal_dir) / "journal.bin", fsync=FSYNC_BY_SHELL)
    fills = FillLog(Path(journal_dir) / "fills")
    fills.resume(eng.cmd_seq, eng.ledger.next_seq, covered=False)
    return MatcherServer(JournaledEngine(eng, writer),
                         ServerConfig(chain_id=CHAIN_ID, verifying_contract=CONTRACT,
                                      limits=Limits(msgs_per_s=10_000, burst=10_000),
                                      gc_sweep_s=gc_policy.SWEEP_S,
                                      busy_poll_us=busy_poll_us), fill_log=fills)


def _server_main(port_q: Any, stop_ev: Any, journal_dir: str, busy_poll_us: int) -> None:
    """Child process: engine + server until ``stop_ev`` is set; puts its port, then its CPU
    seconds from listening to ``stop_ev``."""
    import asyncio

    async def main() -> None:
        srv = make_server(journal_dir, busy_poll_us)
        await srv.start()
        cpu0 = time.process_time()
        port_q.put(srv.port)
        while not stop_ev.is_set():
            await asyncio.sleep(0.05)
        port_q.put(time.process_time() - cpu0)
        await srv.close()

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:  # pragma: no cover
        asyncio.run(main())


def _presign(per_conn: int, seed: int) -> list[list[bytes]]:
    """Masked websocket frames of JSON place requests per connection (ids 1..per_conn),
    signed before timing."""
    from crossbook.config import PRICE, SIZE
    from crossbook.eip712 import Domain, Signer
    from crossbook.protocol_types import Order

    dom = Domain(CHAIN_ID, CONTRACT)
    rng = random.Random(seed)
    mid, tick, lot = 3000 * PRICE, PRICE // 100, SIZE // 1000
    expiry = int(time.time()) + 3600
    out = []
    for c, k in enumerate(_keys()):
        s = Signer(k)
        owner = s.address.lower()
        reqs = []
        for n in range(1, per_conn + 1):
            is_buy = rng.random() < 0.5
            ioc = rng.random() < 0.3
            off = -3 if ioc else rng.randint(1, 20)
            price = mid - off * tick if is_buy else mid + off * tick
            o = Order(owner, 0, 0, is_buy, False, price, rng.randint(1, 10) * lot,
                      c * 1_000_000 + n, expiry, 1000)
            sig = s.sign_order(dom, o)
            reqs.append(_frame(json.dumps({
                "op": "place", "id": n, "tif": "IOC" if ioc else "GTC",
                "order": {"owner": owner, "subaccount": 0, "market": 0, "is_buy": is_buy,
                          "reduce_only": False, "price": price, "size": o.size, "nonce": o.nonce,
                          "expiry": expiry, "max_fee_ppm": 1000},
                "signature": "0x" + sig.hex()}).encode(), rng))
        out.append(reqs)
    return out


def _frame(payload: bytes, rng: random.Random, opcode: int = 0x1) -> bytes:
    """One final client frame (RFC 6455 section 5.2): client frames must be masked."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = rng.randbytes(4)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(
        (mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return head + mask + masked


class _Frames:
    """Incremental parser of the server's (unmasked) frames on one connection."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """(opcode, payload) of every complete frame so far (messages are never fragmented
        by this server)."""
        buf = self.buf + data
        out = []
        i = 0
        while len(buf) - i >= 2:
            op, ln = buf[i] & 0x0F, buf[i + 1] & 0x7F
            h = 2
            if ln == 126:
                if len(buf) - i < 4:
                    break
                ln = struct.unpack_from("!H", buf, i + 2)[0]
                h = 4
            elif ln == 127:
                if len(buf) - i < 10:
                    break
                ln = struct.unpack_from("!Q", buf, i + 2)[0]
                h = 10
            if len(buf) - i < h + ln:
                break
            out.append((op, buf[i + h:i + h + ln]))
            i += h + ln
        self.buf = buf[i:]
        return out


def _connect(port: int, key: bytes, rng: random.Random) -> tuple[socket.socket, _Frames]:
    """Open one connection, complete the websocket handshake and log in (blocking, before
    timing)."""
    from crossbook.eip712 import Domain, Signer
    from matcher.sessions import login_digest

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ws_key = base64.b64encode(rng.randbytes(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {ws_key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed during the handshake")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.decode(errors="replace"))
    frames = _Frames()
    pending: list[dict[str, Any]] = []

    def next_message() -> dict[str, Any]:
        data = rest
        while not pending:
            pending.extend(json.loads(p) for op, p in frames.feed(data) if op == 0x1)
            if not pending:
                data = sock.recv(65536)
        return pending.pop(0)

    hello = next_message()
    s = Signer(key)
    exp = int(time.time()) + 60
    ch = hello["challenge"]
    sig = s.sign_digest(login_digest(Domain(CHAIN_ID, CONTRACT), s.address, s.address,
                                     bytes.fromhex(ch[2:]), exp))
    rest = b""  # already fed to the parser
    sock.sendall(_frame(json.dumps({
        "op": "login", "id": 0, "owner": s.address, "signer": s.address, "challenge": ch,
        "expiry": exp, "signature": "0x" + sig.hex()}).encode(), rng))
    while True:
        m = next_message()
        if m.get("type") == "response" and m.get("id") == 0:
            assert m["ok"], m
            return sock, frames


class _Reply(msgspec.Struct):
    """The fields of a server frame the client looks at."""

    type: str
    id: int | None = None
    ok: bool = False
    code: str | None = None


def _set_timer_slack_ns(ns: int) -> None:
    """Make this thread's sleeps precise to about ``ns`` (Linux; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(29, ctypes.c_ulong(ns), 0, 0, 0)  # PR_SET_TIMERSLACK
    except Exception:  # pragma: no cover - not Linux
        pass


def _drive(port: int, reqs: list[list[bytes]]) -> tuple[list[list[int]], list[list[int]],
                                                         dict[str, int], float]:
    """Connect, then send on schedule and collect acks; returns send and ack timestamps
    (perf_counter_ns) per connection and order, response codes, and the start time."""
    rng = random.Random(11)
    conns = [_connect(port, k, rng) for k in _keys()]
    per_conn = len(reqs[0])
    total = per_conn * CONNS
    sent = [[0] * per_conn for _ in range(CONNS)]
    got = [[0] * per_conn for _ in range(CONNS)]
    codes: dict[str, int] = {}
    clock = time.perf_counter_ns
    decode = msgspec.json.Decoder(_Reply).decode
    ep = select.epoll()
    by_fd = {}
    for c, (sock, frames) in enumerate(conns):
        ep.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = (c, sock, frames)
    locks = [threading.Lock() for _ in conns]
    done = threading.Event()

    def receive() -> None:
        left = total
        while left:
            events = ep.poll(1.0)
            t = clock()  # the wake-up is when the response arrived
            for fd, _ in events:
                c, sock, frames = by_fd[fd]
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("server closed a connection")
                for op, payload in frames.feed(data):
                    if op == 0x1:
                        m = decode(payload)
                        if m.type == "response" and m.id:
                            got[c][m.id - 1] = t
                            code = "OK" if m.ok else (m.code or "?")
                            codes[code] = codes.get(code, 0) + 1
                            left -= 1
                    elif op == 0x9:  # ping: answer with the same payload
                        with locks[c]:
                            sock.sendall(_frame(payload, rng, 0xA))
        done.set()

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    _set_timer_slack_ns(1_000)
    interval_ns = 1_000_000_000 // RATE
    start = clock() + 200_000_000
    socks = [sock for sock, _ in conns]
    for k in range(total):
        c, i = k % CONNS, k // CONNS
        due = start + k * interval_ns
        wait = due - clock()
        if wait > 0:
            time.sleep(wait / 1e9)
        with locks[c]:
            sent[c][i] = clock()
            socks[c].sendall(reqs[c][i])
    if not done.wait(30):
        raise TimeoutError("responses missing after 30 s")
    for sock in socks:
        sock.close()
    ep.close()
    return sent, got, codes, start / 1e9


def _measure(reqs: list[list[bytes]], busy_poll_us: int) -> dict[str, Any]:
    """One run against a fresh server process; latency percentiles (µs), CPU and counts."""
    per_conn = len(reqs[0])
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    stop_ev = ctx.Event()
    jdir = tempfile.mkdtemp(prefix="ws-bench-")
    proc = ctx.Process(target=_server_main, args=(port_q, stop_ev, jdir, busy_poll_us),
                       daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=60)
        cpu0 = time.process_time()
        sent, got, codes, _ = _drive(port, reqs)
        client_cpu = time.process_time() - cpu0
        stop_ev.set()
        server_cpu = port_q.get(timeout=30)
    finally:
        stop_ev.set()
        proc.join(10)
        if proc.is_alive():  # pragma: no cover
            proc.kill()
        shutil.rmtree(jdir, ignore_errors=True)
    skip = int(WARMUP_S * RATE / CONNS)
    lat = sorted((g - s) / 1000 for c in range(CONNS)
                 for i, (s, g) in enumerate(zip(sent[c], got[c])) if i >= skip and g)
    orders = CONNS * per_conn

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1)

    return {
        "ack_p50_us": pct(0.50),
        "ack_p90_us": pct(0.90),
        "ack_p99_us": pct(0.99),
        "ack_max_us": round(lat[-1], 1),
        "orders": orders,
        "measured": len(lat),
        "server_cpu_us_per_order": round(server_cpu / orders * 1e6, 1),
        "client_cpu_us_per_order": round(client_cpu / orders * 1e6, 1),
        "responses": dict(sorted(codes.items())),
    }


def run() -> dict[str, Any]:
    """Run the benchmark in both server configurations (see the module doc); the headline
    figures are the busy-polling server's."""
    reqs = _presign(int(RATE / CONNS * DURATION_S), 7)
    res = _measure(reqs, BUSY_POLL_US)
    time.sleep(1.0)  # let the first server's exit and journal removal settle
    sleeping = _measure(reqs, 0)
    res.update({"busy_poll_us": BUSY_POLL_US, "connections": CONNS, "rate_per_s": RATE,
                "goal_p50_us": 200, "goal_p99_us": 1000, "sleeping_loop": sleeping})
    return res


if __name__ == "__main__":  # pragma: no cover
    print(run())
