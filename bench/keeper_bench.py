"""`crossbook bench keeper`: the keeper's health scan and reaction time.

- scan_ms: median time of :meth:`keeper.health_scan.HealthBook.scan` over 100,000 sub-accounts
  across 8 markets (1-8 positions each, 30% also holding WETH collateral) right after a price
  tick that moves every market by up to +-1% (includes the exact Python check of every
  account the screen could not clear).
- react_ms: on anvil (automine), from sending the oracle update that makes an account liquidatable
  (its block exists when the send returns) to the keeper's ``eth_sendRawTransaction`` of the
  liquidation. The keeper polls ``eth_blockNumber`` every 2 ms (on a local node a poll is cheaper
  than a newHeads round trip). The clock starts *before* the oracle transaction is sent, so the
  figure includes its mining: a conservative upper bound. Median of ``REACT_RUNS`` runs, each from
  a fresh EVM snapshot with a fresh keeper.
"""
from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from typing import Any

from crossbook.config import risk_params
from crossbook.margin import Position, RiskParams, SubAccount
from keeper.health_scan import HealthBook

ACCOUNTS = 100_000
MARKETS = 8
PRICES = [3_000, 60_000, 150]


def _params() -> RiskParams:
    base = risk_params()
    return RiskParams(collaterals=base.collaterals, markets={m: base.markets[m % 3] for m in range(MARKETS)},
                      pnl_haircut_ppm=base.pnl_haircut_ppm)


def build_book(n: int = ACCOUNTS, seed: int = 1) -> tuple[HealthBook, dict[int, int], dict[int, int]]:
    """A book of `n` realistic accounts (about 0.05% liquidatable after a 1% tick)."""
    rng = random.Random(seed)
    mp = {m: PRICES[m % 3] * 10**8 for m in range(MARKETS)}
    ap = {1: 3_000 * 10**8, 2: 60_000 * 10**8}
    book = HealthBook(_params(), {m: 0 for m in range(MARKETS)}, capacity=n)
    for i in range(n):
        acct = SubAccount()
        for m in rng.sample(range(MARKETS), rng.randint(1, MARKETS)):
            size = rng.randrange(10**8, 10**11) * 10**10 // mp[m] * rng.choice([-1, 1])
            acct.positions[m] = Position(size, size * mp[m] // 10**10, 0)
        gross = sum(abs(p.size) * mp[m] // 10**10 for m, p in acct.positions.items())
        acct.quote = gross * rng.randint(45_000, 600_000) // 1_000_000 - sum(
            p.size * mp[m] // 10**10 for m, p in acct.positions.items())
        if rng.random() < 0.3:
            acct.collateral[1] = rng.randrange(10**18, 10**20)
        book.set_account(i, acct)
    return book, ap, mp


REACT_RUNS = 7


async def _react_once(ex: Any, key: str) -> float:
    """One react measurement in ms (see the module docstring)."""
    from eth_account import Account

    from crossbook.chain.devkeys import ADMIN, dev_key
    from crossbook.config import PRICE
    from keeper.index import SubAccountIndex
    from keeper.liquidator import Liquidator, LiquidatorConfig
    from keeper.oracle_feeder import feed_answer, set_answer_calldata
    from settlement.relayer import connect

    w3 = connect(ex.node.url)
    keeper_w3 = connect(ex.node.url)
    idx = SubAccountIndex(w3, ex.node.url, ex.client.contract.address, risk_params(),
                          start_block=ex.deployment.start_block, poll_interval_s=0.002)
    keeper = Liquidator(keeper_w3, idx, ex.deployment.oracle, key,
                        LiquidatorConfig(poll_interval_s=0.002))
    task = asyncio.create_task(keeper.run())
    try:
        while keeper.stats.scans < 1:  # warmed up: index built, first tick done
            await asyncio.sleep(0.01)
        admin = Account.from_key(dev_key(ADMIN))
        nonce = await w3.eth.get_transaction_count(admin.address, "pending")
        blk = await w3.eth.get_block("latest")
        tx = admin.sign_transaction({
            "type": 2, "chainId": await w3.eth.chain_id, "nonce": nonce, "to": ex.deployment.feeds["ETH"],
            "data": set_answer_calldata(feed_answer(2_550 * PRICE)), "gas": 100_000,
            "maxFeePerGas": 2 * int(blk.get("baseFeePerGas", 0) or 0) + 10**9, "maxPriorityFeePerGas": 10**9})
        t0 = time.time()
        await w3.eth.send_raw_transaction(tx.raw_transaction)
        deadline = time.monotonic() + 5
        while not keeper.stats.sent_at and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        if not keeper.stats.sent_at:
            raise RuntimeError("the keeper did not send a liquidation within 5 s")
        return (keeper.stats.sent_at[0] - t0) * 1000
    finally:
        keeper.stop()
        await task
        await idx.close()
        for p in (w3.provider, keeper_w3.provider):  # their HTTP sessions die with this loop
            await p.disconnect()


def react(runs: int = REACT_RUNS) -> list[float]:
    """Oracle update -> liquidation sent, ms, one value per run (own anvil, fresh snapshots)."""
    from crossbook.chain.anvil import AnvilNode
    from crossbook.chain.devkeys import KEEPER, dev_address, dev_key
    from crossbook.chain.local_exchange import LocalExchange, user_signer
    from crossbook.config import PRICE, SIZE, USD

    node = AnvilNode().start()
    try:
        ex = LocalExchange(node)
        whale, a = user_signer(1), user_signer(2)
        ex.fund(whale.address, 0, "USDC", 10_000_000 * USD)
        ex.fund(a.address, 0, "USDC", 1_000 * USD)
        ex.fund(dev_address(KEEPER), 0, "USDC", 1_000_000 * USD)
        px = 3_000 * PRICE
        ex.settle([ex.fill(ex.order(a, 0, True, px, 3 * SIZE), ex.order(whale, 0, False, px, 3 * SIZE), 3 * SIZE, px)])
        out = []
        for _ in range(runs):
            snap = ex.snapshot()
            out.append(asyncio.run(_react_once(ex, dev_key(KEEPER))))
            ex.revert(snap)
        return out
    finally:
        node.stop()


def run(ticks: int = 15) -> dict[str, Any]:
    """Build the book, then time `ticks` scans after random price ticks."""
    book, ap, mp = build_book()
    rng = random.Random(7)
    times, exact, liq = [], [], []
    for _ in range(ticks):
        tick = {m: p * rng.randint(990_000, 1_010_000) // 1_000_000 for m, p in mp.items()}
        t0 = time.perf_counter()
        res = book.scan(ap, tick)
        times.append((time.perf_counter() - t0) * 1000)
        exact.append(res.n_exact)
        liq.append(len(res.liquidatable))
    return {
        "accounts": ACCOUNTS, "markets": MARKETS,
        "scan_ms": round(statistics.median(times), 2),
        "scan_ms_max": round(max(times), 2),
        "exact_checks_median": int(statistics.median(exact)),
        "liquidatable_median": int(statistics.median(liq)),
    } | _react_summary()


def _react_summary() -> dict[str, Any]:
    runs = react()
    return {"react_ms": round(statistics.median(runs), 1), "react_ms_max": round(max(runs), 1),
            "react_runs": len(runs), "react_goal_ms": 200}


if __name__ == "__main__":
    import json

    out = run()
    print(json.dumps(out), file=sys.stdout)
