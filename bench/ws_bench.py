"""Websocket API benchmark: order-to-ack round trip over loopback.

The matcher server (uvloop, journal with the FSYNC_BY_SHELL group-commit policy, default
limits) runs in its own process; 20 client connections run in this process on another uvloop
loop, each logged in as its own owner, and send pre-signed orders (signed and JSON-encoded
before timing) on a fixed schedule totalling ``RATE`` orders/s. The latency of one order is
from just before its ``send`` to the arrival of its response (the ack with order id and
sequence), both measured in the client process, so it includes the client's own websocket
and JSON work.

Order flow: around the oracle price, 70 % GTC orders 1-20 ticks away from mid (they rest),
30 % IOC orders that cross (they trade), so acks include matching, sequencing and journaling.

    python -c "from bench.ws_bench import run; print(run())"
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import random
import tempfile
import time
from pathlib import Path
from typing import Any

CONNS = 20
RATE = 5_000  # orders per second, all connections together
DURATION_S = 4.0
WARMUP_S = 0.5  # orders in the first half second are not counted (connection warm-up)
CHAIN_ID = 31337
CONTRACT = "0x" + "cb" * 20


def _keys() -> list[bytes]:
    return [bytes([i + 1]) * 32 for i in range(CONNS)]


def _server_main(port_q: Any, stop_ev: Any, journal_dir: str) -> None:
    """Child process: engine + server until ``stop_ev`` is set."""
    from crossbook.config import PRICE, USD
    from crossbook.eip712 import Signer
    from matcher.commands import ChainDeposit, SetOraclePrices
    from matcher.engine import Engine
    from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalWriter
    from matcher.limits import Limits
    from matcher.server import MatcherServer, ServerConfig

    eng = Engine()
    eng.apply(SetOraclePrices(1, {1: 3000 * PRICE, 2: 60_000 * PRICE},
                              {0: 3000 * PRICE, 1: 60_000 * PRICE, 2: 150 * PRICE}, 0))
    for i, k in enumerate(_keys()):
        eng.apply(ChainDeposit(2 + i, Signer(k).address.lower(), 0, 0, 10_000_000 * USD))
    writer = JournalWriter(Path(journal_dir) / "journal.bin", fsync=FSYNC_BY_SHELL)

    async def main() -> None:
        srv = MatcherServer(JournaledEngine(eng, writer),
                            ServerConfig(chain_id=CHAIN_ID, verifying_contract=CONTRACT,
                                         limits=Limits(msgs_per_s=10_000, burst=10_000)))
        await srv.start()
        port_q.put(srv.port)
        while not stop_ev.is_set():
            await asyncio.sleep(0.1)
        await srv.close()

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:  # pragma: no cover
        asyncio.run(main())


def _presign(per_conn: int, seed: int) -> list[list[str]]:
    """JSON place requests per connection (ids 1..per_conn), signed before timing."""
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
            reqs.append(json.dumps({
                "op": "place", "id": n, "tif": "IOC" if ioc else "GTC",
                "order": {"owner": owner, "subaccount": 0, "market": 0, "is_buy": is_buy,
                          "reduce_only": False, "price": price, "size": o.size, "nonce": o.nonce,
                          "expiry": expiry, "max_fee_ppm": 1000},
                "signature": "0x" + sig.hex()}))
        out.append(reqs)
    return out


async def _client(url: str, key: bytes, reqs: list[str], start: float, interval: float,
                  sent: list[int], got: list[int], codes: dict[str, int]) -> None:
    from websockets.asyncio.client import connect

    from crossbook.eip712 import Domain, Signer
    from matcher.sessions import login_digest

    s = Signer(key)
    ws = await connect(url, compression=None, max_size=None)
    hello = json.loads(await ws.recv())
    ch = hello["challenge"]
    exp = int(time.time()) + 60
    sig = s.sign_digest(login_digest(Domain(CHAIN_ID, CONTRACT), s.address, s.address,
                                     bytes.fromhex(ch[2:]), exp))
    await ws.send(json.dumps({"op": "login", "id": 0, "owner": s.address, "signer": s.address,
                              "challenge": ch, "expiry": exp, "signature": "0x" + sig.hex()}))
    while True:
        m = json.loads(await ws.recv())
        if m.get("type") == "response" and m.get("id") == 0:
            assert m["ok"], m
            break
    n = len(reqs)
    clock = time.perf_counter_ns
    loads = json.loads

    async def reader() -> None:
        left = n
        async for raw in ws:
            t = clock()
            m = loads(raw)
            if m.get("type") == "response":
                i = m["id"]
                got[i - 1] = t
                code = "OK" if m["ok"] else m["code"]
                codes[code] = codes.get(code, 0) + 1
                left -= 1
                if left == 0:
                    return

    rt = asyncio.get_running_loop().create_task(reader())
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    for i, r in enumerate(reqs):
        due = start + i * interval
        d = due - time.perf_counter()
        if d > 0:
            await asyncio.sleep(d)
        sent[i] = clock()
        await ws.send(r)
    await asyncio.wait_for(rt, 30)
    await ws.close()


def run() -> dict[str, Any]:
    """Run the benchmark; returns latency percentiles (µs) and counts."""
    per_conn = int(RATE / CONNS * DURATION_S)
    reqs = _presign(per_conn, 7)
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    stop_ev = ctx.Event()
    jdir = tempfile.mkdtemp(prefix="ws-bench-")
    proc = ctx.Process(target=_server_main, args=(port_q, stop_ev, jdir), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=60)
        url = f"ws://127.0.0.1:{port}"
        sent = [[0] * per_conn for _ in range(CONNS)]
        got = [[0] * per_conn for _ in range(CONNS)]
        codes: dict[str, int] = {}
        interval = CONNS / RATE

        async def main() -> float:
            start = time.perf_counter() + 1.0
            # stagger connections across one interval so sends are evenly spread
            await asyncio.gather(*(
                _client(url, k, reqs[c], start + c * interval / CONNS, interval, sent[c],
                        got[c], codes)
                for c, k in enumerate(_keys())))
            return start

        try:
            import uvloop
            t0 = uvloop.run(main())
        except ImportError:  # pragma: no cover
            t0 = asyncio.run(main())
    finally:
        stop_ev.set()
        proc.join(10)
        if proc.is_alive():  # pragma: no cover
            proc.kill()
    skip = int(WARMUP_S / (CONNS / RATE))
    lat = sorted((g - s) / 1000 for c in range(CONNS)
                 for i, (s, g) in enumerate(zip(sent[c], got[c])) if i >= skip and g)
    del t0

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1)

    return {
        "ack_p50_us": pct(0.50),
        "ack_p90_us": pct(0.90),
        "ack_p99_us": pct(0.99),
        "ack_max_us": round(lat[-1], 1),
        "orders": CONNS * per_conn,
        "measured": len(lat),
        "connections": CONNS,
        "rate_per_s": RATE,
        "responses": dict(sorted(codes.items())),
        "goal_p50_us": 200,
        "goal_p99_us": 1000,
    }


if __name__ == "__main__":  # pragma: no cover
    print(run())
