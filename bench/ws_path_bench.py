"""The server's CPU per websocket order, in process: the `ws` benchmark's orders fed through the
real transport callback, without the client, the pacing or the other process.

``crossbook bench ws`` measures latency with a client in another process and reports the
server's CPU per order as a whole-process figure over a paced run; on a shared two-core machine
both move with whatever else runs. This driver isolates the server's path: the same server
(:func:`bench.ws_bench.make_server`, uvloop, group-commit journal), the same 20 logged-in
connections over loopback and the same pre-signed, masked frames, but each frame is handed to
its connection's ``data_received`` directly (what the event loop does when the bytes arrive),
one at a time in the benchmark's round-robin order. Everything from there to the ack's
``transport.write`` runs inside that call: websockets' frame parse, decoding and checks, the
signature recovery, the engine, the journal write, the fan-out and the ack's send syscall on
the real socket. The clients' sockets are drained between rounds, outside the timed calls.

Figures: ``cpu_us_per_order`` (thread CPU time inside the calls, mean), ``wall_us_p50`` and
``wall_us_mean`` (wall time of one call). Run variants interleaved in the same minute to
compare them. ``--callgrind`` counts instructions per order instead (deterministic, so
unaffected by other load; see :func:`callgrind`).

    .venv/bin/python -m bench.ws_path_bench [--orders-per-conn N] [--callgrind]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench import callgrind as callgrind_run
from bench.ws_bench import CONNS, _connect, _Frames, _keys, _presign, make_server

PER_CONN = 1000
SKIP_ROUNDS = 50  # warm-up rounds (caches, first allocations) not counted
_CACHE_MAX_AGE_S = 1800  # the frames' orders expire an hour after signing
_CACHED_ONLY = "CROSSBOOK_WS_PATH_CACHED_ONLY"


def _frames(per_conn: int) -> list[list[bytes]]:
    """The first ``per_conn`` of the benchmark's pre-signed frames (seed 7) per connection,
    cached in the temp dir: signing 20,000 orders takes seconds, and minutes under valgrind."""
    path = Path(tempfile.gettempdir()) / f"crossbook-ws-path-{PER_CONN}.msgpack"
    try:
        # under callgrind() the parent has just made sure the cache is fresh: never sign here
        if (os.environ.get(_CACHED_ONLY)
                or time.time() - path.stat().st_mtime < _CACHE_MAX_AGE_S):
            # msgpack, not pickle: the temp dir is shared, and loading must not run code
            cached = msgspec.msgpack.decode(path.read_bytes(), type=list[list[bytes]])
            return [c[:per_conn] for c in cached]
    except (OSError, msgspec.DecodeError):
        pass
    frames = _presign(PER_CONN, 7)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(msgspec.msgpack.encode(frames))
    os.replace(tmp, path)
    return [c[:per_conn] for c in frames]


async def _drive(per_conn: int, count_only: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ws-path-") as jdir:
        return await _drive_in(jdir, per_conn, count_only)


async def _drive_in(jdir: str, per_conn: int, count_only: bool) -> dict[str, Any]:
    frames = _frames(per_conn)
    srv = make_server(jdir)
    # no keepalive pings: a run under valgrind outlasts the ping timeout, and the benchmark's
    # 4 s run sees none at its 20 s interval either
    srv.config.ping_interval_s = None
    await srv.start()
    loop = asyncio.get_running_loop()
    rng = random.Random(11)
    clients: list[tuple[socket.socket, _Frames]] = []
    for k in _keys():
        clients.append(await loop.run_in_executor(None, _connect, srv.port, k, rng))
    await asyncio.sleep(0.2)  # writer tasks idle: acks take the direct write, as in the run
    by_owner = {c.session.owner: c for c in srv.conns}
    from crossbook.eip712 import Signer

    protos = [by_owner[Signer(k).address.lower()].ws for k in _keys()]
    for sock, _ in clients:
        sock.setblocking(False)
    responses: dict[str, int] = {}

    def drain() -> None:
        for sock, parser in clients:
            while True:
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    break
                for op, payload in parser.feed(data):
                    m = json.loads(payload) if op == 0x1 else {}
                    if m.get("type") == "response":
                        code = "OK" if m["ok"] else m["code"]
                        responses[code] = responses.get(code, 0) + 1

    cpu = time.thread_time_ns
    wall = time.perf_counter_ns
    walls: list[int] = []
    cpu_total = 0
    for i in range(per_conn):
        for c in range(CONNS):
            frame, proto = frames[c][i], protos[c]
            if count_only:
                proto.data_received(frame)
                continue
            w0, c0 = wall(), cpu()
            proto.data_received(frame)
            c1, w1 = cpu(), wall()
            if i >= SKIP_ROUNDS:
                walls.append(w1 - w0)
                cpu_total += c1 - c0
        drain()
        await asyncio.sleep(0)  # let the loop run what it would between arrivals
    await asyncio.sleep(0.1)
    drain()
    for sock, _ in clients:
        sock.close()
    await srv.close()
    out: dict[str, Any] = {"orders": per_conn * CONNS, "responses": dict(sorted(responses.items()))}
    if walls:
        walls.sort()
        out.update({
            "cpu_us_per_order": round(cpu_total / len(walls) / 1000, 2),
            "wall_us_mean": round(sum(walls) / len(walls) / 1000, 2),
            "wall_us_p50": round(walls[len(walls) // 2] / 1000, 2),
            "measured": len(walls),
        })
    return out


def callgrind(small: int = 50, large: int = 150) -> dict[str, Any]:
    """Instructions per order from ``valgrind --tool=callgrind``: two runs of this driver
    (``--count-only``) with ``small`` and ``large`` orders per connection; the difference of
    their totals over the difference of their orders cancels start-up, imports and the
    connections' set-up. Deterministic up to the journal's timer and the kernel, which
    callgrind does not count (the ack's send syscall is excluded)."""
    if max(small, large) > PER_CONN:
        raise ValueError(f"at most {PER_CONN} orders per connection")
    _frames(PER_CONN)  # sign outside valgrind
    # one after the other: the journal's timer is the one thing a busier machine could move
    totals = [callgrind_run.total(callgrind_run.start(
        ["bench.ws_path_bench", "--orders-per-conn", str(n), "--count-only"], {_CACHED_ONLY: "1"}))
        for n in (small, large)]
    return {"instructions_per_order": round((totals[1] - totals[0]) / ((large - small) * CONNS)),
            "orders": [small * CONNS, large * CONNS]}


def run(per_conn: int = PER_CONN, count_only: bool = False) -> dict[str, Any]:
    """Feed ``per_conn`` orders per connection; returns the figures (see the module doc)."""
    import uvloop

    result: dict[str, Any] = uvloop.run(_drive(per_conn, count_only))
    return result


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders-per-conn", type=int, default=PER_CONN)
    ap.add_argument("--count-only", action="store_true")
    ap.add_argument("--callgrind", action="store_true",
                    help="instructions per order (two runs under valgrind, ~1 minute)")
    a = ap.parse_args()
    res = callgrind() if a.callgrind else run(a.orders_per_conn, a.count_only)
    print(json.dumps(res, sort_keys=True))
