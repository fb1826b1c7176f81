"""Liquidation-path and escape-hatch chain events in the engine (docs/protocol.md sections 8, 9).

Each event is applied to the CONFIRMED state; the expected state is computed independently with
crossbook/liquidation.py on a copy of the confirmed state before the event (the Python mirror the
differential test proves equal to the contract). The projected state is then confirmed + the
unsettled items, a pending fill the chain rejects afterwards is busted on both sides, the
target's live orders are cancelled with reason LIQUIDATION, and every event is exactly-once by
its chain position and survives journal replay and snapshot/restore."""

from __future__ import annotations

import msgspec

from crossbook.config import PRICE, SIZE, USD, risk_params
from crossbook.liquidation import (
    LiquidationParams,
    apply_liquidation,
    bad_debt_split,
    collateral_liquidation,
    quote_liquidation,
)
from crossbook.margin import Prices, SubAccount
from crossbook.protocol_types import RejectReason
from matcher.commands import (
    Bust,
    ChainBadDebtSettled,
    ChainBatchSettled,
    ChainCollateralLiquidated,
    ChainDeleveraged,
    ChainDeposit,
    ChainForcedWithdrawalExecuted,
    ChainForcedWithdrawalRequested,
    ChainLiquidated,
    ChainLiquidationParamsSet,
    Code,
    Command,
    ItemRejected,
    Liquidation,
    OrderStatus,
    OrderUpdate,
    Result,
)
from matcher.engine import Engine, EngineSnapshot
from matcher.journal import encode_record, iter_records
from matcher.orders import CancelReason, Tif
from tests.matcher.engine_helpers import A, B, C, ETH, ETH_PX, LOT, funded, place, prices_cmd, req

PARAMS = risk_params()
WETH = 1
CRASH = 2_050 * PRICE  # 1 ETH long on $1,000 at $3,000: a partial (tier 1) liquidation here
L_SUB = 1


def canon(st: SubAccount) -> tuple[object, ...]:
    """Comparable form: zero collateral and flat positions are the same as absent ones."""
    return (st.quote, sorted((k, v) for k, v in st.collateral.items() if v),
            sorted((m, p.size, p.open_notional, p.funding_snapshot)
                   for m, p in st.positions.items() if p.size))


class Run:
    """An engine plus the journal of everything it accepted (for replay checks)."""

    def __init__(self, eng: Engine) -> None:
        self.eng = eng
        self.journal = b""
        self.cmds: list[Command] = []

    def apply(self, cmd: Command) -> Result:
        res = self.eng.apply(cmd)
        if res.journal:
            self.journal += encode_record(res.ack.seq, cmd)
        return res

    def assert_replays(self) -> None:
        """Journal replay and snapshot/restore reach the same state hash."""
        replayed = Engine()
        replayed.replaying = True
        for rec, _ in iter_records(self.journal):
            replayed.apply(rec.cmd)
        assert replayed.state_hash() == self.eng.state_hash()
        snap = msgspec.msgpack.decode(msgspec.msgpack.encode(self.eng.snapshot()), type=EngineSnapshot)
        assert Engine.restore(snap).state_hash() == self.eng.state_hash()


def leveraged_long() -> Run:
    """A holds a settled 1 ETH long on $1,000 (B is short), a resting bid, and a pending
    (matched, unsettled) 0.1 ETH buy from B; liquidator C has $100k in sub 1."""
    # deposits through the journal too, so replay starts from an empty engine
    run = Run(Engine())
    assert run.apply(prices_cmd()).ack.ok
    for owner, sub, usd in ((A, 0, 1_000), (B, 0, 1_000_000), (C, L_SUB, 100_000)):
        assert run.apply(ChainDeposit(req(), owner, sub, 0, usd * USD)).ack.ok
    eng = run.eng
    _place(run, B, False, ETH_PX, 2 * SIZE, 1)
    _place(run, A, True, ETH_PX, SIZE, 2, tif=Tif.IOC)
    assert run.apply(ChainBatchSettled(req(), 1, 1, [], 10, 0)).ack.ok
    _place(run, A, True, 2_500 * PRICE, SIZE // 5, 3)  # rests: cancelled by the liquidation
    _place(run, A, True, ETH_PX, SIZE // 10, 4, tif=Tif.IOC)  # seq 2, pending
    assert eng.ledger.unsettled_count() == 1 and eng.ledger.settled_seq == 1
    assert eng.account(A, 0).positions[ETH].size == SIZE + SIZE // 10
    return run


def _place(run: Run, owner: str, is_buy: bool, price: int, size: int, nonce: int,
           tif: int = Tif.GTC) -> None:
    from matcher.commands import PlaceOrder
    from tests.matcher.engine_helpers import SIG, NOW, order

    res = run.apply(PlaceOrder(req(), order(owner, is_buy, price, size, nonce), SIG, owner,
                               int(tif), None, 0, NOW))
    assert res.ack.ok, res.ack


def crashed(eng: Engine, eth: int = CRASH) -> Prices:
    """Chain prices after the crash, with the engine's confirmed funding indices."""
    return Prices(assets={1: eth, 2: 60_000 * PRICE}, markets={0: eth, 1: 60_000 * PRICE, 2: 150 * PRICE},
                  funding=dict(eng.ledger.conf_funding))


def liquidate_a(run: Run, block: int = 20, log_index: int = 3) -> tuple[Result, SubAccount, SubAccount]:
    """Send A's liquidation (as the contract would size it) and return the mirror's states."""
    eng = run.eng
    target = eng.confirmed_account(A, 0).copy()
    liq = eng.confirmed_account(C, L_SUB).copy()
    q = quote_liquidation(target, PARAMS, crashed(eng), ETH, 2**64 - 1)
    assert not q.critical and 0 < q.size < SIZE  # a partial (tier 1) liquidation
    apply_liquidation(target, liq, ETH, q, eng.ledger.conf_funding[ETH])
    res = run.apply(ChainLiquidated(req(), A, 0, ETH, C, L_SUB, q.size_delta, q.price, q.penalty,
                                    q.insurance_share, block, log_index))
    assert res.ack.ok and res.journal, res.ack
    return res, target, liq


def test_liquidated_moves_confirmed_state_exactly_like_the_contract() -> None:
    run = leveraged_long()
    eng = run.eng
    b_before = canon(eng.confirmed_account(B, 0))
    res, want_target, want_liq = liquidate_a(run)
    assert canon(eng.confirmed_account(A, 0)) == canon(want_target)
    assert canon(eng.confirmed_account(C, L_SUB)) == canon(want_liq)
    assert canon(eng.confirmed_account(B, 0)) == b_before  # untouched
    # projected = confirmed + the pending 0.1 ETH buy (seq 2) on top
    proj = eng.account(A, 0)
    assert proj.positions[ETH].size == want_target.positions[ETH].size + SIZE // 10
    assert canon(eng.account(C, L_SUB)) == canon(want_liq)  # nothing pending for the liquidator
    # the resting bid is cancelled with reason LIQUIDATION, and the event is reported
    ups = [o for o in res.outputs if isinstance(o, OrderUpdate)]
    assert [(u.owner, u.status, u.reason) for u in ups] == [
        (A, OrderStatus.CANCELLED, int(CancelReason.LIQUIDATION))]
    assert not [r for r in eng.orders.values() if r.acct == (A, 0)]
    assert eng.open_exposure(A, 0).get(ETH, [0, 0, 0, 0]) == [0, 0, 0, 0]
    (liq_out,) = [o for o in res.outputs if isinstance(o, Liquidation)]
    assert liq_out.kind == "liquidated" and liq_out.target == (A, 0)
    assert liq_out.counterparty == (C, L_SUB) and liq_out.cancelled == [ups[0].order_id]
    assert liq_out.size_delta < 0 and (liq_out.block, liq_out.log_index) == (20, 3)
    run.assert_replays()


def test_a_pending_fill_the_chain_rejects_after_a_liquidation_is_busted_on_both_sides() -> None:
    run = leveraged_long()
    eng = run.eng
    _, want_target, _ = liquidate_a(run)
    b_conf = canon(eng.confirmed_account(B, 0))
    res = run.apply(ChainBatchSettled(req(), 2, 1, [(2, int(RejectReason.INSUFFICIENT_MARGIN))], 21, 0))
    assert res.ack.ok
    (bust,) = [o for o in res.outputs if isinstance(o, Bust)]
    assert (bust.seq, bust.taker, bust.maker) == (2, (A, 0), (B, 0))
    assert eng.ledger.unsettled_count() == 0
    for acct in ((A, 0), (B, 0), (C, L_SUB)):
        assert canon(eng.account(*acct)) == canon(eng.confirmed_account(*acct)), acct
    assert canon(eng.confirmed_account(A, 0)) == canon(want_target)
    assert canon(eng.confirmed_account(B, 0)) == b_conf
    run.assert_replays()


def test_a_pending_fill_the_chain_applies_after_a_liquidation_lands_on_the_new_state() -> None:
    run = leveraged_long()
    eng = run.eng
    _, want_target, _ = liquidate_a(run)
    # the mirror: the fill applied by the contract after the liquidation (same funding index)
    from crossbook.margin import apply_fill_side, fee_amount, fill_cash

    cash = fill_cash(SIZE // 10, ETH_PX)
    apply_fill_side(want_target, ETH, SIZE // 10, cash, fee_amount(cash, eng.taker_fee),
                    eng.ledger.conf_funding[ETH])
    assert run.apply(ChainBatchSettled(req(), 2, 1, [], 21, 0)).ack.ok
    assert canon(eng.confirmed_account(A, 0)) == canon(want_target)
    assert canon(eng.account(A, 0)) == canon(want_target)
    run.assert_replays()


def test_chain_position_makes_every_new_event_exactly_once() -> None:
    run = leveraged_long()
    eng = run.eng
    res, _, _ = liquidate_a(run, block=20, log_index=3)
    h = eng.state_hash()
    events: list[Command] = [
        ChainLiquidated(req(), A, 0, ETH, C, L_SUB, -LOT, CRASH, 1, 1, 20, 3),
        ChainCollateralLiquidated(req(), A, 0, WETH, C, L_SUB, 1, CRASH, 1, 20, 2),
        ChainBadDebtSettled(req(), A, 0, 1, 0, 0, 19, 9),
        ChainDeleveraged(req(), A, 0, ETH, B, 0, -LOT, CRASH, 20, 3),
        ChainForcedWithdrawalExecuted(req(), 5, A, 0, 0, USD, 20, 0),
        ChainLiquidationParamsSet(req(), 1, 2, 3, 4, 1, 0),
    ]
    for ev in events:
        dup = eng.apply(ev)
        assert dup.ack.ok and not dup.journal and dup.ack.message == "already applied"
    assert eng.state_hash() == h and eng.chain_cursor == (20, 3)


def test_collateral_liquidation_and_bad_debt_follow_the_mirror() -> None:
    run = Run(Engine())
    eng = run.eng
    assert run.apply(prices_cmd()).ack.ok
    assert run.apply(ChainDeposit(req(), A, 0, WETH, 10**17, 1, 0)).ack.ok  # 0.1 WETH, no quote
    assert run.apply(ChainDeposit(req(), B, 0, 0, 1_000_000 * USD, 1, 1)).ack.ok
    assert run.apply(ChainDeposit(req(), C, L_SUB, 0, 100_000 * USD, 1, 2)).ack.ok
    _place(run, B, False, ETH_PX, SIZE, 1)
    _place(run, A, True, ETH_PX, SIZE // 10, 2, tif=Tif.IOC)  # quote goes to -$300.15
    assert run.apply(ChainBatchSettled(req(), 1, 1, [], 2, 0)).ack.ok
    params = LiquidationParams()
    # 1. the whole position taken over at a crash price (tier 2): the quote stays negative
    crash = 1_000 * PRICE
    target = eng.confirmed_account(A, 0).copy()
    liq = eng.confirmed_account(C, L_SUB).copy()
    q = quote_liquidation(target, PARAMS, crashed(eng, crash), ETH, 2**64 - 1, params)
    assert q.critical and q.size == SIZE // 10
    apply_liquidation(target, liq, ETH, q, 0)
    assert run.apply(ChainLiquidated(req(), A, 0, ETH, C, L_SUB, q.size_delta, q.price, q.penalty,
                                      q.insurance_share, 3, 0)).ack.ok
    assert canon(eng.confirmed_account(A, 0)) == canon(target)
    assert canon(eng.confirmed_account(C, L_SUB)) == canon(liq)
    assert target.quote < 0 and not target.positions
    # 2. the collateral sold to the liquidator at a discount (section 9.5)
    amount, pc, paid = collateral_liquidation(target.quote, target.collateral[WETH], crash, 18,
                                              2**128 - 1, params)
    assert amount == 10**17  # all of it, and still short of the debt
    target.quote += paid
    del target.collateral[WETH]
    liq.quote -= paid
    liq.collateral[WETH] = amount
    res = run.apply(ChainCollateralLiquidated(req(), A, 0, WETH, C, L_SUB, amount, pc, paid, 4, 0))
    assert res.ack.ok
    assert canon(eng.confirmed_account(A, 0)) == canon(target)
    assert canon(eng.confirmed_account(C, L_SUB)) == canon(liq)
    assert [o.kind for o in res.outputs if isinstance(o, Liquidation)] == ["collateral_liquidated"]
    # 3. the remaining deficit covered (section 9.6): insurance first, then fee pool, then unbacked
    assert target.quote < 0
    ins, fee, unbacked = bad_debt_split(-target.quote, 1 * USD, 0)
    res = run.apply(ChainBadDebtSettled(req(), A, 0, ins, fee, unbacked, 5, 0))
    assert res.ack.ok
    assert canon(eng.confirmed_account(A, 0)) == (0, [], [])
    assert canon(eng.account(A, 0)) == (0, [], [])
    (out,) = [o for o in res.outputs if isinstance(o, Liquidation)]
    assert (out.kind, out.covered, out.unbacked, out.amount) == (
        "bad_debt_settled", ins + fee, unbacked, -canon(target)[0])  # type: ignore[operator]
    run.assert_replays()


def test_deleveraged_closes_both_sides_at_the_bankruptcy_price() -> None:
    run = leveraged_long()
    eng = run.eng
    assert run.apply(ChainBatchSettled(req(), 2, 1, [], 11, 0)).ack.ok  # A long 1.1, B short 1.1
    target = eng.confirmed_account(A, 0).copy()
    counter = eng.confirmed_account(B, 0).copy()
    from crossbook.liquidation import LiquidationQuote, bankruptcy_price
    from crossbook.margin import compute_health_at, fill_cash

    prices = crashed(eng, 2_000 * PRICE)
    h = compute_health_at(target, PARAMS, prices)
    size = SIZE // 2
    pb = bankruptcy_price(target.positions[ETH].size, 2_000 * PRICE, h.equity,
                          PARAMS.markets[ETH].tick_size)
    apply_liquidation(target, counter, ETH,
                      LiquidationQuote(size, pb, -size, fill_cash(size, pb), 0, 0, False), 0)
    res = run.apply(ChainDeleveraged(req(), A, 0, ETH, B, 0, -size, pb, 12, 0))
    assert res.ack.ok
    assert canon(eng.confirmed_account(A, 0)) == canon(target)
    assert canon(eng.confirmed_account(B, 0)) == canon(counter)
    assert canon(eng.account(B, 0)) == canon(counter)
    ups = [o for o in res.outputs if isinstance(o, OrderUpdate)]
    # A's resting bid is cancelled; B's remaining ask is not (it is the counterparty)
    assert [(u.owner, u.reason) for u in ups] == [(A, int(CancelReason.LIQUIDATION))]
    assert [r.acct for r in eng.orders.values()] == [(B, 0)]
    run.assert_replays()


def test_owner_executed_escape_hatch_withdrawal_debits_confirmed_and_the_forced_item_busts() -> None:
    run = Run(Engine())
    eng = run.eng
    assert run.apply(ChainDeposit(req(), A, 0, 0, 1_000 * USD, 1, 0)).ack.ok
    res = run.apply(ChainForcedWithdrawalRequested(req(), 7, A, 0, 0, 300 * USD, 2, 0))
    assert res.ack.ok and eng.ledger.unsettled_count() == 1  # the operator would execute early
    assert eng.account(A, 0).quote == 700 * USD
    # the relayer is late: the owner executes it on-chain after the delay
    assert run.apply(ChainForcedWithdrawalExecuted(req(), 7, A, 0, 0, 300 * USD, 3, 1)).ack.ok
    assert eng.confirmed_account(A, 0).quote == 700 * USD
    assert eng.account(A, 0).quote == 400 * USD  # the FORCED item still counts until it settles
    assert 7 in eng.forced
    # the contract rejects the now-spent FORCED item: the projection is back to the chain's
    res = run.apply(ChainBatchSettled(req(), 1, 1, [(1, int(RejectReason.REPLAYED))], 4, 0))
    (rej,) = [o for o in res.outputs if isinstance(o, ItemRejected)]
    assert (rej.seq, rej.reason, rej.account) == (1, int(RejectReason.REPLAYED), (A, 0))
    assert eng.account(A, 0).quote == eng.confirmed_account(A, 0).quote == 700 * USD
    # a request the engine had refused (not sequenced) executed by the owner: only the debit
    assert run.apply(ChainDeposit(req(), B, 0, WETH, 10**18, 5, 0)).ack.ok
    assert run.apply(ChainForcedWithdrawalExecuted(req(), 8, B, 0, WETH, 10**18, 6, 1)).ack.ok
    assert canon(eng.confirmed_account(B, 0)) == canon(eng.account(B, 0)) == (0, [], [])
    # a duplicate request id is never sequenced again
    dup = run.apply(ChainForcedWithdrawalRequested(req(), 8, B, 0, 0, USD, 7, 0))
    assert dup.ack.code == Code.REPLAYED
    bad = run.apply(ChainForcedWithdrawalExecuted(req(), 9, B, 0, 99, 1, 8, 0))
    assert bad.ack.code == Code.UNKNOWN_ASSET and bad.journal  # refused, cursor still moves
    run.assert_replays()


def test_liquidation_params_are_mirrored_and_persist() -> None:
    run = Run(funded())
    eng = run.eng
    assert eng.liquidation_params == LiquidationParams()
    assert run.apply(ChainLiquidationParamsSet(req(), 30_000, 400_000, 50_000, 600_000, 3, 0)).ack.ok
    assert eng.liquidation_params == LiquidationParams(30_000, 400_000, 50_000, 600_000)
    bad = run.apply(ChainLiquidationParamsSet(req(), 600_000, 0, 0, 0, 3, 1))
    assert bad.ack.code == Code.BAD_REQUEST
    assert eng.liquidation_params.penalty_ppm == 30_000
    snap = msgspec.msgpack.decode(msgspec.msgpack.encode(eng.snapshot()), type=EngineSnapshot)
    assert Engine.restore(snap).liquidation_params == eng.liquidation_params


def test_malformed_events_are_refused_before_any_change() -> None:
    eng = funded()
    h = eng.state_hash()
    for ev in (ChainLiquidated(req(), A, 0, 99, B, 0, -LOT, ETH_PX, 0, 0),
               ChainLiquidated(req(), A, 0, ETH, B, 0, 0, ETH_PX, 0, 0),
               ChainLiquidated(req(), A, 0, ETH, A, 0, -LOT, ETH_PX, 0, 0),
               ChainDeleveraged(req(), A, 0, ETH, B, 0, -LOT, 0),
               ChainCollateralLiquidated(req(), A, 0, 0, B, 0, 1, 1, 1),
               ChainBadDebtSettled(req(), A, 0, -1, 0, 0)):
        res = eng.apply(ev)
        assert not res.ack.ok and not res.journal, ev
    assert eng.state_hash() == h
