"""Funding end to end on the real process stack (anvil + ``crossbook matcher | relayer | watcher |
funding``): the funding service samples the matcher's book (mid above the oracle), posts a rate
per interval through the operator ``funding`` op, the matcher sequences FUNDING items, the relayer
settles them and the contract clamps and moves the cumulative index at its oracle price.

Checked against the chain: FundingUpdated carries the clamped rate and the index moves by
``trunc(rate * oracle / PPM)``; the long pays, the short receives; funding is zero-sum: over all
accounts, realized + accrued funding equals the market's funding settlement balance plus at most
1 atom of rounding dust per position settlement (each side rounds up, docs/protocol.md section 3),
and realized funding is exactly the funding balance. The oracle moves between sequencing and
settlement, so the matcher's index estimate is wrong until ``FundingUpdated`` corrects its
confirmed index; afterwards the matcher's ledger equals the chain's views."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from crossbook.chain.local_exchange import user_signer
from crossbook.config import DEFAULT_SPEC, PRICE, SIZE, USD
from crossbook.fixedpoint import NOTIONAL_DIV, PPM, trunc_div
from crossbook.protocol_types import FundingItem
from settlement.events import ChainFundingUpdated
from settlement.watcher import EventDecoder
from tests.e2e.flow import run_async
from tests.e2e.stack import Stack, assert_ledger_matches_chain, login, order_msg, wait_status

ETH = 0
LOT = SIZE // 1000
POS = 1_234 * LOT  # 1.234 ETH: index moves leave a remainder, so rounding dust shows up
MAX_RATE = DEFAULT_SPEC.markets[ETH].max_funding_ppm


def ceil_div(a: int, b: int) -> int:
    """Ceiling division (b > 0)."""
    return -((-a) // b)


def start_funding(stack: Stack) -> None:
    """``crossbook funding`` with a 2 s interval sampled every 0.25 s, ETH only."""
    stack._spawn("funding", ["--interval", "2", "--sample-interval", "0.25", "--impact-notional",
                             "1000", "--markets", "0", "--metrics-port", "0", "--log-format", "text"])


def funding_events(stack: Stack) -> list[ChainFundingUpdated]:
    """Every FundingUpdated since deployment, in chain order."""
    c = stack.ex.client.contract.address
    logs: Any = stack.w3.eth.get_logs({"address": c, "fromBlock": stack.ex.deployment.start_block,
                                       "toBlock": "latest"})
    return [e for e in EventDecoder(address=c).decode_logs(logs) if isinstance(e, ChainFundingUpdated)]


def test_funding_is_posted_settled_and_zero_sum(stack: Stack) -> None:
    maker, long_, short = user_signer(401), user_signer(402), user_signer(403)
    stack.ex.fund_many([maker.address, long_.address, short.address], "USDC", 100_000 * USD)
    stack.interval_mining()
    stack.start_matcher()
    stack.start_watcher()
    stack.start_relayer()
    fns = stack.ex.client.contract.functions
    index_at: dict[str, int] = {}

    async def trade(c: Any, who: Any, is_buy: bool, price: int, size: int) -> None:
        o, sig = stack.ex.order(who, ETH, is_buy, price, size, expiry=int(time.time()) + 3600)
        r = await c.request("place", **order_msg(o, sig, "IOC"))
        assert r["ok"], r

    async def scenario() -> None:
        await wait_status(stack, lambda s: s["cmd_seq"] >= 4)  # three deposits + oracle prices
        mc, lc, sc = [await login(stack, u) for u in (maker, long_, short)]
        exp = int(time.time()) + 3600
        # the book trades ~1% above the $3,000 oracle: a premium far above the 0.1% cap
        for is_buy, px in ((True, 3_029 * PRICE), (False, 3_031 * PRICE)):
            o, sig = stack.ex.order(maker, ETH, is_buy, px, 10 * SIZE, expiry=exp)
            assert (await mc.request("place", **order_msg(o, sig, "GTC")))["ok"]
        await trade(lc, long_, True, 3_031 * PRICE, POS)   # seq 1: long 1.234
        await trade(sc, short, False, 3_029 * PRICE, POS)  # seq 2: short 1.234 (maker flat)
        await wait_status(stack, lambda s: s["settled_seq"] == 2)
        # 1. the relayer pauses; the funding service posts two intervals: sequenced, pending
        stack.stop("relayer")
        start_funding(stack)
        await wait_status(stack, lambda s: s["matched_seq"] >= 4)
        stack.stop("funding")
        st = await stack.status()
        n_items = st["matched_seq"] - 2
        # 2. the oracle moves before they settle: the chain applies them at $3,010, not $3,000
        await asyncio.to_thread(stack.ex.set_price, "ETH", 3_010 * PRICE)
        stack.start_relayer()
        await wait_status(stack, lambda s: s["settled_seq"] == s["matched_seq"] == 2 + n_items)
        index_at["before_realize"] = int(fns.cumulativeFunding(ETH).call())
        # 3. both sides trade a lot more: their funding so far is realized into quote
        await trade(lc, long_, True, 3_031 * PRICE, LOT)
        await trade(sc, short, False, 3_029 * PRICE, LOT)
        await wait_status(stack, lambda s: s["settled_seq"] == s["matched_seq"] == 4 + n_items)
        # 4. one more interval on the normal path (relayer running)
        start_funding(stack)
        await wait_status(stack, lambda s: s["matched_seq"] >= 5 + n_items)
        stack.stop("funding")
        await wait_status(stack, lambda s: s["settled_seq"] == s["matched_seq"])
        for c in (mc, lc, sc):
            await c.close()

    run_async(scenario())
    # --- the items were sequenced by the matcher and settled on-chain ------------------------
    items = stack.journal_items()
    funding_items = [(s, it) for s, it in items if isinstance(it, FundingItem)]
    evs = funding_events(stack)
    assert len(funding_items) == len(evs) >= 3
    assert all(it.market == ETH and it.rate_ppm == MAX_RATE for _, it in funding_items)
    prev = 0
    for ev in evs:
        assert (ev.market, ev.rate_ppm) == (ETH, MAX_RATE)  # the clamped rate
        # 3,010 USD throughout settlement (the price the relayer's batches met on-chain)
        assert ev.cumulative_index - prev == trunc_div(MAX_RATE * 3_010 * PRICE, PPM)
        prev = ev.cumulative_index
    index = int(stack.ex.client.contract.functions.cumulativeFunding(ETH).call())
    assert index == evs[-1].cumulative_index
    # --- who paid: realized at the realizing trade + accrued since ------------------------------
    f1 = index_at["before_realize"]
    paid = {}
    for who, size in ((long_, POS), (short, -POS)):
        realized = ceil_div(size * f1, NOTIONAL_DIV)  # settled at the second trade (snapshot 0)
        pos = stack.ex.client.position(who.address, 0, ETH)
        assert pos.funding_snapshot == f1
        accrued = ceil_div(pos.size * (index - pos.funding_snapshot), NOTIONAL_DIV)
        paid[who.address] = (realized, accrued)
    maker_pos = stack.ex.client.position(maker.address, 0, ETH)
    assert maker_pos.size == 0  # it sold and bought the same amounts: never exposed to funding
    (lr, la), (sr, sa) = paid[long_.address], paid[short.address]
    assert lr > 0 and la > 0, "the long pays"
    assert sr < 0 and sa < 0, "the short receives"
    balance = int(stack.ex.client.contract.functions.fundingBalance(ETH).call())
    assert balance == lr + sr  # what was realized sits in the market's settlement balance
    settlements = 4  # two realizations now, two when the accrued funding is settled
    total = lr + la + sr + sa
    assert 0 <= total <= settlements, f"funding is not zero-sum: {total} atoms"
    # conservation with the funding balance (docs/protocol.md section 3)
    usdc = stack.ex.client.token("USDC")
    lhs = int(usdc.functions.balanceOf(stack.ex.client.contract.address).call()) + int(fns.unbackedDebt().call())
    rhs = sum(stack.ex.client.quote_balance(u.address, 0) for u in (maker, long_, short))
    rhs += int(fns.insuranceFund().call()) + int(fns.feePool().call())
    rhs += sum(int(fns.fundingBalance(m).call()) for m in range(len(DEFAULT_SPEC.markets)))
    assert lhs == rhs
    # --- the matcher agrees with the chain exactly (FundingUpdated corrected its estimate) -----
    for name in ("relayer", "watcher", "matcher"):
        stack.stop(name)
    eng = stack.recovered_engine()
    assert eng.ledger.conf_funding[ETH] == eng.ledger.proj_funding[ETH] == index
    assert assert_ledger_matches_chain(stack, eng) == 3
