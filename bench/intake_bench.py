"""Intake benchmark: signed orders through signature recovery, validation, pre-trade risk,
matching, sequencing and the write-ahead journal, on one core, no network.

The journal goes to a temporary file with the FSYNC_BY_SHELL policy and no timer, i.e. every
record is written (one ``write`` syscall, in the kernel before the ack) but never fsynced
during the run: this measures the matcher, not the disk.

Order flow: 20 market makers quote ETH-PERP around the oracle price (GTC within +-20 ticks),
a fifth of the orders are IOC and cross; once a maker has 40 live orders its oldest is
cancelled (cancels are timed too but not counted as orders). The signed orders are generated
before timing. Settlement notifications are fed every 2,000 orders (all items applied) so the
unsettled bound stays realistic.

    python -c "from bench.intake_bench import run; print(run())"
"""

from __future__ import annotations

import gc
import random
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from crossbook.config import PRICE, SIZE, USD
from crossbook.eip712 import Domain, Signer, order_digest, recover_address_bytes
from crossbook.protocol_types import Order
from matcher.commands import (
    Ack,
    CancelOrder,
    ChainBatchSettled,
    ChainDeposit,
    SetOraclePrices,
)
from matcher.engine import Engine, EngineConfig
from matcher.intake import Intake
from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalWriter
from matcher.orders import Tif

ORDERS = 40_000
MAKERS = 20
NOW = 1_700_000_000
MID = 3000 * PRICE
TICK = PRICE // 100
LOT = SIZE // 1000
DOMAIN = Domain(31337, "0x" + "cb" * 20)


def _signed_orders(n: int, seed: int) -> list[tuple[Order, bytes, int]]:
    rng = random.Random(seed)
    signers = [Signer(bytes([i + 1]) * 32) for i in range(MAKERS)]
    out = []
    for nonce in range(1, n + 1):
        s = rng.choice(signers)
        is_buy = rng.random() < 0.5
        ioc = rng.random() < 0.2
        off = rng.randint(-3, 3) if ioc else rng.randint(1, 20)
        price = MID - off * TICK if is_buy else MID + off * TICK
        o = Order(s.address, 0, 0, is_buy, False, price, rng.randint(1, 20) * LOT * 10, nonce,
                  NOW + 86_400, 1_000)
        out.append((o, s.sign_order(DOMAIN, o), int(Tif.IOC if ioc else Tif.GTC)))
    return out


def run(orders: int = ORDERS) -> dict[str, Any]:
    """Time ``orders`` signed orders end to end; returns ``orders_per_s`` and a breakdown."""
    signed = _signed_orders(orders, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        eng = Engine(EngineConfig(max_unsettled_per_account=100_000))
        writer = JournalWriter(Path(tmp) / "journal.bin", FSYNC_BY_SHELL)
        je = JournaledEngine(eng, writer)
        intake = Intake(eng, DOMAIN)
        je.submit(SetOraclePrices(0, {1: MID, 2: 60_000 * PRICE},
                                  {0: MID, 1: 60_000 * PRICE, 2: 150 * PRICE}, NOW))
        owners = sorted({o.owner.lower() for o, _, _ in signed})
        for i, w in enumerate(owners):
            je.submit(ChainDeposit(i + 1, w, 0, 0, 10_000_000 * USD))
        live: dict[str, deque[int]] = {w: deque() for w in owners}
        accepted = fills = rejected = cancels = 0
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        for k, (o, sig, tif) in enumerate(signed):
            cmd = intake.place(k, o, sig, tif=tif, now=NOW)
            if isinstance(cmd, Ack):
                rejected += 1
                continue
            res = je.submit(cmd)
            if not res.ack.ok:
                rejected += 1
                continue
            accepted += 1
            oid = res.ack.order_id
            owner = cmd.order.owner.lower()
            if oid in eng.orders:
                q = live[owner]
                q.append(oid)
                while len(q) > 40:
                    old = q.popleft()
                    if old in eng.orders:
                        je.submit(CancelOrder(k, owner, old, 0, 0, None, NOW))
                        cancels += 1
            if k % 2000 == 1999:
                led = eng.ledger
                n = led.next_seq - 1 - led.settled_seq
                if n:
                    je.submit(ChainBatchSettled(k, led.settled_seq + 1, n, []))
        elapsed = time.perf_counter() - t0
        gc.enable()
        fills = eng.ledger.next_seq - 1
        writer.close()
        journal_bytes = writer.offset
    # the signature recovery alone, for the breakdown
    t1 = time.perf_counter()
    for o, sig, _ in signed[:5000]:
        recover_address_bytes(order_digest(DOMAIN, o), sig)
    verify_us = (time.perf_counter() - t1) / 5000 * 1e6
    return {
        "orders": orders,
        "orders_per_s": round(orders / elapsed),
        "us_per_order": round(elapsed / orders * 1e6, 2),
        "verify_us_per_order": round(verify_us, 2),
        "accepted": accepted,
        "rejected": rejected,
        "cancels": cancels,
        "fills": fills,
        "journal_bytes": journal_bytes,
        "fsync": "none during run (FSYNC_BY_SHELL, no timer)",
    }


if __name__ == "__main__":
    print(run())
