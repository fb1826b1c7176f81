"""cancel_all in the engine: one sub-account or every sub-account of the owner, one market or all,
as one command; nobody else's orders move, and the index of an owner's sub-accounts survives a
snapshot."""
from __future__ import annotations

from crossbook.config import PRICE, SIZE, USD
from matcher.commands import CancelAll, ChainDeposit, OrderStatus, OrderUpdate, Result
from matcher.engine import Engine
from matcher.orders import CancelReason
from engine_helpers import A, B, BTC, ETH, ETH_PX, NOW, funded, place, req

BTC_PX = 60_000 * PRICE


def cancelled(res: Result) -> list[int]:
    return [u.order_id for u in res.outputs if isinstance(u, OrderUpdate)
            and u.status == OrderStatus.CANCELLED and u.reason == CancelReason.MASS_CANCEL]


def book() -> tuple[Engine, dict[tuple[str, int, int], int]]:
    """A rests a bid in ETH and BTC from sub-accounts 0, 1 and 2; B one in each market."""
    eng = funded(owners=(A, B))
    for sub in (1, 2):
        assert eng.apply(ChainDeposit(req(), A, sub, 0, 1_000_000 * USD)).ack.ok
    ids: dict[tuple[str, int, int], int] = {}
    nonce = 0
    for owner, subs in ((A, (0, 1, 2)), (B, (0,))):
        for sub in subs:
            for market, px in ((ETH, ETH_PX - 10 * PRICE), (BTC, BTC_PX - 100 * PRICE)):
                nonce += 1
                r = place(eng, owner, True, px, SIZE // 10, nonce, market=market, sub=sub)
                assert r.ack.ok
                ids[(owner, sub, market)] = r.ack.order_id
    return eng, ids


def test_one_sub_account() -> None:
    eng, ids = book()
    r = eng.apply(CancelAll(req(), A, 1, None, NOW))
    assert r.ack.ok and r.journal
    assert cancelled(r) == [ids[(A, 1, ETH)], ids[(A, 1, BTC)]]
    assert set(eng.orders) == {v for k, v in ids.items() if k[:2] != (A, 1)}


def test_every_sub_account_of_the_owner() -> None:
    eng, ids = book()
    r = eng.apply(CancelAll(req(), A, None, None, NOW))
    assert r.ack.ok and r.journal
    # sub-accounts in order, each market in order
    assert cancelled(r) == [ids[(A, s, m)] for s in (0, 1, 2) for m in (ETH, BTC)]
    assert set(eng.orders) == {ids[(B, 0, ETH)], ids[(B, 0, BTC)]}


def test_every_sub_account_in_one_market() -> None:
    eng, ids = book()
    r = eng.apply(CancelAll(req(), A, None, BTC, NOW))
    assert cancelled(r) == [ids[(A, s, BTC)] for s in (0, 1, 2)]
    assert {ids[(A, s, ETH)] for s in (0, 1, 2)} <= set(eng.orders)


def test_nothing_live_changes_nothing() -> None:
    eng = funded(owners=(A,))
    h = eng.state_hash()
    r = eng.apply(CancelAll(req(), A, None, None, NOW))
    assert r.ack.ok and not r.outputs and not r.journal and eng.state_hash() == h


def test_the_owner_index_survives_a_snapshot() -> None:
    eng, ids = book()
    twin = Engine.restore(eng.snapshot())
    r = twin.apply(CancelAll(req(), A, None, None, NOW))
    assert cancelled(r) == [ids[(A, s, m)] for s in (0, 1, 2) for m in (ETH, BTC)]
