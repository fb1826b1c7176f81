"""Shared builders for the engine, risk and journal tests (not a test module)."""

from __future__ import annotations

import random
from typing import Any

from crossbook.config import PRICE, SIZE, USD
from crossbook.protocol_types import Order
from matcher.commands import (
    CancelOrder,
    ChainBatchSettled,
    ChainDeposit,
    Command,
    ExpireTick,
    FillReport,
    ModifyOrder,
    OrderUpdate,
    PlaceOrder,
    PostFunding,
    Result,
    SetOraclePrices,
)
from matcher.engine import Engine, EngineConfig
from matcher.orders import Stp, Tif

NOW = 1_700_000_000
EXP = NOW + 86_400
SIG = bytes(65)  # the engine never verifies signatures (intake does)
ETH = 0  # market ids of DEFAULT_SPEC
BTC = 1
ETH_PX = 3_000 * PRICE
TICK = PRICE // 100
LOT = SIZE // 1000


def addr(i: int) -> str:
    """A deterministic lower-case address."""
    return "0x" + f"{i:040x}"


A, B, C, D = addr(0xA), addr(0xB), addr(0xC), addr(0xD)

_req = [0]


def req() -> int:
    """A fresh request id."""
    _req[0] += 1
    return _req[0]


def prices_cmd(eth: int = ETH_PX, btc: int = 60_000 * PRICE, sol: int = 150 * PRICE) -> SetOraclePrices:
    """Oracle prices for every market and collateral of DEFAULT_SPEC."""
    return SetOraclePrices(req(), {1: eth, 2: btc}, {0: eth, 1: btc, 2: sol}, NOW)


def order(owner: str, is_buy: bool, price: int, size: int, nonce: int, *, market: int = ETH,
          sub: int = 0, reduce_only: bool = False, expiry: int = EXP,
          max_fee: int = 1000) -> Order:
    """A signed-order value (signature not needed by the engine)."""
    return Order(owner, sub, market, is_buy, reduce_only, price, size, nonce, expiry, max_fee)


def place(eng: Engine, owner: str, is_buy: bool, price: int, size: int, nonce: int,
          *, tif: int = Tif.GTC, cid: int | None = None, stp: int = Stp.EXPIRE_TAKER,
          now: int = NOW, **kw: Any) -> Result:
    """Place an order through the engine."""
    o = order(owner, is_buy, price, size, nonce, **kw)
    return eng.apply(PlaceOrder(req(), o, SIG, owner, int(tif), cid, int(stp), now))


def funded(config: EngineConfig | None = None, usd: int = 1_000_000,
           owners: tuple[str, ...] = (A, B, C, D)) -> Engine:
    """An engine with prices set and ``usd`` quote deposited into sub 0 of every owner."""
    eng = Engine(config)
    assert eng.apply(prices_cmd()).ack.ok
    for o in owners:
        assert eng.apply(ChainDeposit(req(), o, 0, 0, usd * USD)).ack.ok
    return eng


def fills(res: Result) -> list[FillReport]:
    """The fills a command produced."""
    return [o for o in res.outputs if isinstance(o, FillReport)]


def updates(res: Result) -> list[OrderUpdate]:
    """The order updates a command produced."""
    return [o for o in res.outputs if isinstance(o, OrderUpdate)]


def random_commands(seed: int, n: int, owners: int = 6) -> list[Command]:
    """A reproducible stream of mixed commands (places, cancels, modifies, deposits, prices,
    funding, settlements with occasional rejections, expiry ticks) for determinism tests.
    A scratch engine is driven alongside so cancels name live orders and settlements continue
    the settled prefix; some commands are still meant to be rejected."""
    rng = random.Random(seed)
    who = [addr(0x100 + i) for i in range(owners)]
    scratch = Engine()
    cmds: list[Command] = []

    def emit(c: Command) -> None:
        cmds.append(c)
        scratch.apply(c)

    emit(prices_cmd())
    for w in who:
        emit(ChainDeposit(req(), w, 0, 0, 200_000 * USD))
    nonce = 0
    now = NOW
    for _ in range(n):
        r = rng.random()
        now += rng.randint(0, 2)
        live = sorted(scratch.orders)
        if r < 0.55 or not live:
            nonce += 1
            w = rng.choice(who)
            is_buy = rng.random() < 0.5
            off = rng.randint(-20, 40) * TICK
            px = ETH_PX - off if is_buy else ETH_PX + off
            tif = rng.choice([Tif.GTC, Tif.GTC, Tif.GTC, Tif.IOC, Tif.POST_ONLY, Tif.FOK])
            size = rng.randint(1, 30) * LOT * 100
            exp = now + rng.randint(5, 400)
            emit(PlaceOrder(req(), order(w, is_buy, px, size, nonce, expiry=exp,
                                         reduce_only=rng.random() < 0.05),
                            SIG, w, int(tif), rng.choice([None, nonce]),
                            int(rng.choice(list(Stp))), now))
        elif r < 0.7:
            oid = rng.choice(live)
            emit(CancelOrder(req(), scratch.orders[oid].acct[0], oid, 0, ETH, None, now))
        elif r < 0.8:
            oid = rng.choice(live)
            emit(ModifyOrder(req(), scratch.orders[oid].acct[0], oid,
                             rng.randint(1, 10) * LOT * 100, None, None, None, now))
        elif r < 0.85:
            emit(ExpireTick(req(), now))
        elif r < 0.9:
            emit(prices_cmd(eth=ETH_PX + rng.randint(-100, 100) * PRICE))
        elif r < 0.93:
            emit(PostFunding(req(), ETH, rng.randint(-500, 500), now))
        else:
            led = scratch.ledger
            avail = led.next_seq - 1 - led.settled_seq
            if avail:
                first = led.settled_seq + 1
                cnt = rng.randint(1, avail)
                rej = [(first + rng.randrange(cnt), 7)] if rng.random() < 0.3 else []
                emit(ChainBatchSettled(req(), first, cnt, rej))
    return cmds


def run_all(eng: Engine, cmds: list[Command]) -> list[Result]:
    """Apply every command; the engine may refuse some."""
    return [eng.apply(c) for c in cmds]
