"""Recovery benchmark: replay a write-ahead journal of 1,000,000 events into a fresh engine.

The journal is generated before timing by driving a journaled engine with a market-making mix
(per event: ~45% new GTC/IOC orders, ~35% moves = cancel-replace into a new signed order,
~17% cancels, plus settlement notifications and oracle updates; crossing orders produce fills).
Signatures are dummy bytes: recovery never verifies them (intake did, before journaling).
The timed part is :func:`matcher.journal.recover` from an empty snapshot directory, i.e. the
worst case of a restart with no snapshot: read + CRC + decode + apply of every record. It runs
in a fresh interpreter, as a restarted matcher does (the builder's engine and its heap of freed
objects are not there; in the builder's own process the same recovery measured ~0.4 s slower).
The final state hash is checked against the generating engine.

    python -c "from bench.recovery_bench import run; print(run())"
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crossbook.config import PRICE, SIZE, USD
from crossbook.protocol_types import Order
from matcher.commands import (
    CancelOrder,
    ChainBatchSettled,
    ChainDeposit,
    ModifyOrder,
    PlaceOrder,
    SetOraclePrices,
)
from matcher.engine import Engine, EngineConfig
from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalWriter, recover
from matcher.orders import Tif

EVENTS = 1_000_000
OWNERS = 50
NOW = 1_700_000_000
MID = 3000 * PRICE
TICK = PRICE // 100
LOT = SIZE // 1000
SIG = b"\x11" * 65
CONFIG = EngineConfig(max_unsettled_per_account=1_000_000, max_unsettled_global=10_000_000)


def _addr(i: int) -> str:
    return "0x" + f"{0xABC000 + i:040x}"


def build_journal(path: Path, events: int, seed: int = 1) -> Engine:
    """Write ``events`` journal records to ``path``; returns the engine that produced them."""
    rng = random.Random(seed)
    owners = [_addr(i) for i in range(OWNERS)]
    eng = Engine(CONFIG)
    writer = JournalWriter(path, FSYNC_BY_SHELL)
    je = JournaledEngine(eng, writer)
    je.submit(SetOraclePrices(0, {1: MID, 2: 60_000 * PRICE},
                              {0: MID, 1: 60_000 * PRICE, 2: 150 * PRICE}, NOW))
    for w in owners:
        je.submit(ChainDeposit(0, w, 0, 0, 50_000_000 * USD))
    # each owner's nonces in sequence, as the SDK's NonceManager hands them out
    nonces = dict.fromkeys(owners, 0)
    live: list[int] = []
    k = 0
    while eng.cmd_seq < events:
        k += 1
        r = rng.random()
        if len(live) > 4000:
            r = 0.9  # keep the book bounded: cancel
        if r < 0.45 or not live:
            w = rng.choice(owners)
            nonces[w] += 1
            is_buy = rng.random() < 0.5
            ioc = rng.random() < 0.15
            off = rng.randint(-2, 2) if ioc else rng.randint(1, 30)
            px = MID - off * TICK if is_buy else MID + off * TICK
            o = Order(w, 0, 0, is_buy, False, px, rng.randint(1, 20) * LOT * 10, nonces[w],
                      NOW + 86_400, 1_000)
            res = je.submit(PlaceOrder(k, o, SIG, w, int(Tif.IOC if ioc else Tif.GTC), None, 0,
                                       NOW))
            if res.ack.ok and res.ack.order_id in eng.orders:
                live.append(res.ack.order_id)
        elif r < 0.8:
            i = rng.randrange(len(live))
            oid = live[i]
            rec = eng.orders.get(oid)
            if rec is None:
                live[i] = live[-1]
                live.pop()
                continue
            s = rec.signed
            nonces[s.owner] += 1
            off = rng.randint(1, 30)
            px = MID - off * TICK if s.is_buy else MID + off * TICK
            n = Order(s.owner, 0, 0, s.is_buy, False, px, s.size, nonces[s.owner], NOW + 86_400, 1_000)
            res = je.submit(ModifyOrder(k, rec.acct[0], oid, n.size, n, SIG, rec.acct[0], NOW))
            live[i] = live[-1]
            live.pop()
            if res.ack.ok and res.ack.order_id in eng.orders:
                live.append(res.ack.order_id)
        elif r < 0.97:
            i = rng.randrange(len(live))
            oid = live[i]
            live[i] = live[-1]
            live.pop()
            rec = eng.orders.get(oid)
            if rec is not None:
                je.submit(CancelOrder(k, rec.acct[0], oid, 0, 0, None, NOW))
        elif r < 0.99:
            led = eng.ledger
            cnt = led.next_seq - 1 - led.settled_seq
            if cnt:
                je.submit(ChainBatchSettled(k, led.settled_seq + 1, cnt, []))
        else:
            p = MID + rng.randint(-5, 5) * PRICE
            je.submit(SetOraclePrices(k, {1: p}, {0: p}, NOW))
    writer.close()
    return eng


_RESTART = """
import gc, sys, time
from pathlib import Path
from bench.recovery_bench import CONFIG
from matcher.journal import recover
gc.collect()
gc.disable()
t = time.perf_counter()
rec = recover(Path(sys.argv[1]), Path(sys.argv[2]), CONFIG)
dt = time.perf_counter() - t
print(dt, rec.replayed, rec.engine.state_hash().hex())
"""


def _restart(journal: Path, snapshots: Path) -> tuple[float, int, bytes]:
    """Recover in a fresh interpreter, as a restarted matcher does: (seconds in
    :func:`matcher.journal.recover`, records replayed, state hash)."""
    out = subprocess.run([sys.executable, "-c", _RESTART, str(journal), str(snapshots)],
                         check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    return float(out[0]), int(out[1]), bytes.fromhex(out[2])


def run(events: int = EVENTS) -> dict[str, Any]:
    """Build a journal of ``events`` records, then time a full recovery from it in a fresh
    process (a restart: the builder's engine and heap are not in it)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.bin"
        t0 = time.perf_counter()
        ref = build_journal(path, events)
        build_s = time.perf_counter() - t0
        size = path.stat().st_size
        replay_s, replayed, got = _restart(path, Path(tmp) / "snaps")
        ok = got == ref.state_hash()
    return {
        "events": replayed,
        "replay_s": round(replay_s, 3),
        "events_per_s": round(replayed / replay_s),
        "journal_mb": round(size / 1e6, 1),
        "fills": ref.ledger.next_seq - 1,
        "resting_orders": len(ref.orders),
        "state_hash_equal": ok,
        "build_s": round(build_s, 1),
        "snapshot": "none (worst case: full replay)",
        "process": "fresh (a restart)",
    }


if __name__ == "__main__":
    print(run())
