"""The engine's pre-trade floor (cached base health + RiskModel.health_floor) never changes a
decision: an engine that always runs the exact pass gives every command the same ack and ends
in the same state, on streams that keep accounts near their margin limit and move what the
cached base health depends on (fills, prices, funding, deposits, withdrawals, settlements
with busts)."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as hs

from crossbook.config import PRICE, SIZE, USD
from crossbook.fixedpoint import NOTIONAL_DIV
from crossbook.protocol_types import Withdrawal
from matcher.commands import (
    CancelOrder,
    ChainBatchSettled,
    ChainDeposit,
    Code,
    Command,
    ModifyOrder,
    OrderUpdate,
    PlaceOrder,
    PostFunding,
    RequestWithdrawal,
)
from matcher.engine import Engine
from matcher.orders import CancelReason, Tif
from tests.matcher.engine_helpers import (
    BTC,
    ETH,
    ETH_PX,
    NOW,
    SIG,
    TICK,
    addr,
    order,
    prices_cmd,
    req,
)

ONE = SIZE  # 1 ETH
WHO = [addr(0x200 + i) for i in range(4)]
BTC_PX = 60_000 * PRICE


def _exact_only(eng: Engine) -> Engine:
    """The same engine with the floor switched off: no market has usable floor terms, so
    health_floor returns None and every order takes the exact pass."""
    eng.risk._floor_terms.clear()
    return eng


def _stream(seed: int, n: int) -> list[Command]:
    """Orders sized against ~20k USD accounts (many near or over the limit), moves as signed
    cancel-replace, cancels, crossing orders that fill, price and funding moves, deposits,
    withdrawals and settlements with busts."""
    rng = random.Random(seed)
    scratch = Engine()
    cmds: list[Command] = []

    def emit(c: Command) -> None:
        cmds.append(c)
        scratch.apply(c)

    emit(prices_cmd())
    for w in WHO:
        emit(ChainDeposit(req(), w, 0, 0, 20_000 * USD))
    nonce = 0
    # two markets, so an order's floor also sums the account's legs in the other one (the
    # leg costs cached in the exposure lists): mark, price step and size unit per market
    mark = {ETH: ETH_PX, BTC: BTC_PX}
    step = {ETH: TICK * 100, BTC: TICK * 2000}
    unit = {ETH: ONE // 2, BTC: ONE // 40}
    for _ in range(n):
        r = rng.random()
        live = sorted(scratch.orders)
        nonce += 1
        if r < 0.45 or not live:
            w = rng.choice(WHO)
            m = rng.choice((ETH, BTC))
            is_buy = rng.random() < 0.5
            off = rng.randint(-15, 40) * step[m]
            px = mark[m] - off if is_buy else mark[m] + off
            tif = Tif.IOC if rng.random() < 0.15 else Tif.GTC
            size = rng.randint(1, 80) * unit[m]
            emit(order_cmd(w, is_buy, px, size, nonce, tif, m))
        elif r < 0.7:
            rec = scratch.orders[rng.choice(live)]
            s = rec.signed
            m = rec.market
            off = rng.randint(-5, 40) * step[m]
            px = mark[m] - off if s.is_buy else mark[m] + off
            new = order(s.owner, s.is_buy, px, rng.randint(1, 80) * unit[m], nonce, market=m)
            emit(ModifyOrder(req(), s.owner, rec.oid, new.size, new, SIG, s.owner, NOW))
        elif r < 0.8:
            rec = scratch.orders[rng.choice(live)]
            emit(CancelOrder(req(), rec.acct[0], rec.oid, 0, rec.market, None, NOW))
        elif r < 0.86:
            m = rng.choice((ETH, BTC))
            mark[m] = (ETH_PX + rng.randint(-300, 300) * PRICE if m == ETH
                       else BTC_PX + rng.randint(-3000, 3000) * PRICE)
            emit(prices_cmd(eth=mark[ETH], btc=mark[BTC]))
        elif r < 0.89:
            emit(PostFunding(req(), rng.choice((ETH, BTC)), rng.randint(-3000, 3000), NOW))
        elif r < 0.92:
            emit(ChainDeposit(req(), rng.choice(WHO), 0, 0, rng.randint(1, 5000) * USD))
        elif r < 0.95:
            w = rng.choice(WHO)
            wd = Withdrawal(w, 0, 0, rng.randint(1, 8000) * USD, nonce, NOW + 3600)
            emit(RequestWithdrawal(req(), wd, SIG, nonce.to_bytes(32, "big"), NOW))
        else:
            led = scratch.ledger
            avail = led.next_seq - 1 - led.settled_seq
            if avail:
                first = led.settled_seq + 1
                cnt = rng.randint(1, avail)
                rej = [(first + rng.randrange(cnt), 7)] if rng.random() < 0.4 else []
                emit(ChainBatchSettled(req(), first, cnt, rej))
    return cmds


def order_cmd(w: str, is_buy: bool, px: int, size: int, nonce: int, tif: Tif,
              market: int = ETH) -> Command:
    """A signed new order of ``w``."""
    return PlaceOrder(req(), order(w, is_buy, px, size, nonce, market=market), SIG, w,
                      int(tif), None, 0, NOW)


def _check_leg_cache(eng: Engine) -> int:
    """Every leg cost cached in the engine's exposure lists (current generation) equals the
    one computed afresh from the list's sums, prices and indices, and so do every cached
    qd and qt of a size sum; returns how many there are."""
    risk, funding = eng.risk, eng.ledger.proj_funding
    known = 0
    for ex in eng.exposure.values():
        for m, x in ex.items():
            if x[6] != eng._leg_gen:
                continue
            for is_buy, off, slot in ((True, 0, 4), (False, 2, 5)):
                if x[slot] >= 0:
                    known += 1
                    assert x[off], "a cost cached for a side with nothing open"
                    assert x[slot] == risk._leg_cost(m, x[off], x[off + 1], is_buy,
                                                     eng.taker_fee, funding)
            for qs in (7, 10):
                if x[qs] >= 0:
                    known += 1
                    assert x[qs + 1] == (x[qs] * risk.market_prices[m]) // NOTIONAL_DIV
                    # qt as a fresh _leg_cost of that size sum computes it
                    assert risk._leg_cost(m, x[qs], 1, True, eng.taker_fee, funding) >= 0
                    assert (x[qs + 1], x[qs + 2]) == (risk.last_qd, risk.last_qt)
    return known


def _run_pair(seed: int, n: int) -> Counter[object]:
    """Apply one stream to an engine with the floor and one without; every ack and output
    must agree, and so must the final state. Returns the ack codes and the number of makers
    the re-check cancelled."""
    fast, exact = Engine(), _exact_only(Engine())
    seen: Counter[object] = Counter()
    for cmd in _stream(seed, n):
        a, b = fast.apply(cmd), exact.apply(cmd)
        seen["cached legs"] += _check_leg_cache(fast)
        assert a.ack == b.ack
        assert a.outputs == b.outputs
        seen[a.ack.code] += 1
        seen["risk cancels"] += sum(1 for o in a.outputs if isinstance(o, OrderUpdate)
                                    and o.reason == CancelReason.RISK)
    assert fast.state_hash() == exact.state_hash()
    return seen


@settings(max_examples=25, deadline=None)
@given(seed=hs.integers(0, 2**32))
def test_floor_never_changes_a_decision(seed: int) -> None:
    _run_pair(seed, 250)


def test_floor_streams_reach_both_sides_of_each_check() -> None:
    """The streams refuse orders on margin and veto makers on the re-check (so the pair
    above compares both outcomes of both checks), orders pass on the floor, and the floor
    reads leg costs cached in the exposure lists."""
    seen: Counter[object] = Counter()
    for seed in range(6):
        seen.update(_run_pair(seed, 400))
    assert seen[Code.OK] and seen[Code.INSUFFICIENT_MARGIN] and seen["risk cancels"]
    assert seen["cached legs"]


def test_floor_is_used_and_dropped_when_the_account_changes() -> None:
    """The base health is cached by an accepted order, and a fill, a price or a deposit
    drops it, so the next check sees the new state."""
    eng = Engine()
    for c in [prices_cmd()] + [ChainDeposit(req(), w, 0, 0, 20_000 * USD) for w in WHO[:2]]:
        eng.apply(c)
    a, b = WHO[0], WHO[1]
    assert eng.apply(order_cmd(a, True, ETH_PX - 100 * PRICE, ONE, 1, Tif.GTC)).ack.ok
    assert (a, 0) in eng._base_health
    # b's IOC sell fills a's bid: both accounts' cached bases go
    assert eng.apply(order_cmd(b, False, ETH_PX - 100 * PRICE, ONE, 2, Tif.IOC)).ack.ok
    assert (a, 0) not in eng._base_health and (b, 0) not in eng._base_health
    assert eng.apply(order_cmd(a, True, ETH_PX - 100 * PRICE, ONE, 3, Tif.GTC)).ack.ok
    assert (a, 0) in eng._base_health
    eng.apply(prices_cmd(eth=ETH_PX + PRICE))
    assert not eng._base_health


def test_makers_of_one_account_after_a_floor_accept_see_its_fill() -> None:
    """Three makers of one account meet one taker: the first passes on the floor, the second
    is refused, and the third must still be checked on the account after the first fill
    (here it is refused too), as the exact re-check does."""
    m, t = addr(0x300), addr(0x301)

    def run(eng: Engine, deposit: int) -> list[object]:
        for c in [prices_cmd(), ChainDeposit(req(), m, 0, 0, deposit),
                  ChainDeposit(req(), t, 0, 0, 10**7 * USD)]:
            eng.apply(c)
        for i, (px, size) in enumerate([(ETH_PX, ONE), (ETH_PX + PRICE, 30 * ONE),
                                        (ETH_PX + 2 * PRICE, 5 * ONE)]):
            assert eng.apply(order_cmd(m, False, px, size, 10 + i, Tif.GTC)).ack.ok
        eng.apply(prices_cmd(eth=ETH_PX + 1000 * PRICE))
        res = eng.apply(order_cmd(t, True, ETH_PX + 2 * PRICE, 100 * ONE, 20, Tif.IOC))
        return list(res.outputs)

    vetoed = []
    for usd in range(6000, 8000, 100):
        fast = run(Engine(), usd * USD)
        assert fast == run(_exact_only(Engine()), usd * USD)
        vetoed.append([o.order_id for o in fast if isinstance(o, OrderUpdate)
                       and o.reason == CancelReason.RISK])
    # the deposits span the case where the third maker is refused after the first fill
    assert [2, 3] in vetoed
