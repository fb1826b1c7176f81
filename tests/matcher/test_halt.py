"""Trading halt (SetHalt): while halted the engine refuses new and replacement orders with
HALTED and the reason; cancels, deposits and prices go on; the halt is journaled, in the state
hash and in snapshots, and a resume lets orders in again."""
from __future__ import annotations

import msgspec

from crossbook.config import PRICE, USD
from matcher.commands import CancelOrder, ChainDeposit, Code, ModifyOrder, SetHalt
from matcher.engine import Engine, EngineSnapshot
from engine_helpers import A, B, ETH_PX, LOT, NOW, SIG, funded, order, place, req

BID = ETH_PX - 10 * PRICE


def test_halt_refuses_orders_keeps_cancels_and_resumes() -> None:
    eng = funded()
    live = place(eng, A, True, BID, 2 * LOT, nonce=1).ack.order_id
    seq = eng.cmd_seq
    r = eng.apply(SetHalt(req(), "chain reorg below block 7"))
    assert r.ack.ok and r.journal and eng.cmd_seq == seq + 1
    refused = place(eng, B, False, ETH_PX + PRICE, LOT, nonce=1)
    assert refused.ack.code == Code.HALTED and not refused.journal
    assert refused.ack.message == "trading halted: chain reorg below block 7"
    m = eng.apply(ModifyOrder(req(), A, live, 2 * LOT, order(A, True, BID - PRICE, 2 * LOT, 2), SIG, A, NOW))
    assert m.ack.code == Code.HALTED and eng.orders[live].remaining == 2 * LOT
    # lowering the size only (a partial cancel, no new signed order) reduces risk: allowed
    assert eng.apply(ModifyOrder(req(), A, live, LOT, None, None, None, NOW)).ack.ok
    assert eng.orders[live].remaining == LOT
    # a repeat changes nothing (not journaled, the first reason stays)
    again = eng.apply(SetHalt(req(), "another"))
    assert again.ack.ok and not again.journal and eng.halt_reason == "chain reorg below block 7"
    # chain events and cancels go on
    assert eng.apply(ChainDeposit(req(), B, 0, 0, 5 * USD, block=10, log_index=0)).journal
    assert eng.apply(CancelOrder(req(), A, live, 0, 0, None, NOW)).ack.ok
    assert live not in eng.orders
    resumed = eng.apply(SetHalt(req(), ""))
    assert resumed.ack.ok and resumed.journal and eng.halt_reason is None
    assert place(eng, B, False, ETH_PX + PRICE, LOT, nonce=2).ack.ok
    assert not eng.apply(SetHalt(req(), "")).journal  # resuming a trading engine: nothing


def test_halt_reason_is_bounded() -> None:
    eng = funded()
    r = eng.apply(SetHalt(req(), "x" * 201))
    assert r.ack.code == Code.BAD_REQUEST and eng.halt_reason is None


def test_halt_survives_snapshot_and_replay_and_is_in_the_state_hash() -> None:
    eng = funded()
    trading = eng.state_hash()
    eng.apply(SetHalt(req(), "maintenance"))
    assert eng.state_hash() != trading
    snap = msgspec.json.decode(msgspec.json.encode(eng.snapshot()), type=EngineSnapshot)
    clone = Engine.restore(snap)
    assert clone.halt_reason == "maintenance" and clone.state_hash() == eng.state_hash()
    assert place(clone, A, True, BID, LOT, nonce=1).ack.code == Code.HALTED
    fresh = funded()
    assert fresh.replay(SetHalt(req(), "maintenance"))
    assert fresh.state_hash() == eng.state_hash()


def test_halt_with_cancel_orders_empties_every_book_in_one_command() -> None:
    """``cancel_orders``: the halt and a cancel (reason HALT) of every resting order, market by
    market, in one journaled command; without it the orders stay."""
    from matcher.commands import OrderStatus, OrderUpdate
    from matcher.orders import CancelReason

    eng = funded()
    ids = [place(eng, owner, True, BID - i * PRICE, LOT, nonce=10 + i, market=market).ack.order_id
           for i, (owner, market) in enumerate([(A, 0), (B, 1), (A, 1), (B, 0)])]
    assert all(ids)
    kept = eng.state_hash()
    plain = Engine.restore(eng.snapshot())
    assert plain.apply(SetHalt(req(), "maintenance")).journal and len(plain.orders) == 4
    assert eng.state_hash() == kept
    r = eng.apply(SetHalt(req(), "oracle incident", True))
    assert r.ack.ok and r.journal and eng.halt_reason == "oracle incident" and not eng.orders
    ended = [(u.order_id, u.status, u.reason) for u in r.outputs if isinstance(u, OrderUpdate)]
    assert ended == [(i, OrderStatus.CANCELLED, CancelReason.HALT)
                     for i in (ids[0], ids[3], ids[2], ids[1])]  # market 0's, then market 1's
    # replayed from the journal: the same state
    twin = funded()
    for i, (owner, market) in enumerate([(A, 0), (B, 1), (A, 1), (B, 0)]):
        place(twin, owner, True, BID - i * PRICE, LOT, nonce=10 + i, market=market)
    assert twin.replay(SetHalt(req(), "oracle incident", True))
    assert twin.state_hash() == eng.state_hash()


def test_halt_cancel_orders_on_a_halted_exchange_and_refused_with_a_resume() -> None:
    eng = funded()
    place(eng, A, True, BID, LOT, nonce=1)
    assert eng.apply(SetHalt(req(), "first")).journal
    r = eng.apply(SetHalt(req(), "second", True))
    assert r.ack.ok and r.journal and not eng.orders and eng.halt_reason == "first"
    h = eng.state_hash()
    r = eng.apply(SetHalt(req(), "", True))
    assert r.ack.code == Code.BAD_REQUEST and eng.halt_reason == "first" and eng.state_hash() == h
