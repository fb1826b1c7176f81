"""The chain's ``FundingUpdated`` corrects the engine's confirmed funding index exactly.

The engine sequences a FUNDING item with an index delta computed at its own oracle price; the
contract applies it at the price it reads when the batch lands. The event (emitted before the
batch's ``BatchSettled``) carries the chain's cumulative index, which becomes the confirmed
index when the batch settles; the projected state is rebuilt on it."""
from __future__ import annotations

from crossbook.config import PRICE
from matcher.commands import ChainBatchSettled, ChainFundingUpdated, PostFunding, SetOraclePrices
from matcher.engine import Engine
import msgspec

from matcher.engine import EngineSnapshot
from matcher.orders import Tif
from engine_helpers import ETH, ETH_PX, LOT, NOW, A, B, funded, place, req


def _open_positions(eng: Engine) -> None:
    """A long (B, taker) and a short (A, maker) of 10 lots, settled."""
    assert place(eng, A, False, ETH_PX, 10 * LOT, 1).ack.ok
    assert place(eng, B, True, ETH_PX, 10 * LOT, 1, tif=Tif.IOC).ack.ok
    assert eng.apply(ChainBatchSettled(req(), 1, 1, [])).ack.ok


def test_funding_updated_sets_the_confirmed_index_to_the_chains() -> None:
    eng = funded()
    _open_positions(eng)
    assert eng.apply(PostFunding(req(), ETH, 400, NOW)).ack.ok  # seq 2, delta at $3,000
    engine_delta = 400 * ETH_PX // 1_000_000
    assert eng.ledger.proj_funding[ETH] == engine_delta
    # a later fill (seq 3) snapshots the projected index the engine assumed
    assert place(eng, A, False, ETH_PX, LOT, 2).ack.ok
    assert place(eng, B, True, ETH_PX, LOT, 2, tif=Tif.IOC).ack.ok
    # the chain read $2,900 when the batch landed: its index differs from the engine's
    chain_index = 400 * 2_900 * PRICE // 1_000_000
    r = eng.apply(ChainFundingUpdated(req(), ETH, 400, chain_index, 10, 0))
    assert r.ack.ok and r.journal
    # not yet applied: the event precedes its BatchSettled
    assert eng.ledger.conf_funding[ETH] == 0
    assert eng.apply(ChainBatchSettled(req(), 2, 1, [], 10, 1)).ack.ok
    assert eng.ledger.conf_funding[ETH] == chain_index
    # projected = confirmed + the unsettled fill, rebuilt on the chain's index
    assert eng.ledger.proj_funding[ETH] == chain_index
    assert eng.ledger.unsettled[3].findex == chain_index
    pos = eng.account(B, 0).positions[ETH]
    assert pos.funding_snapshot == chain_index
    assert eng.apply(ChainBatchSettled(req(), 3, 1, [], 11, 0)).ack.ok
    assert eng.confirmed_account(B, 0).positions[ETH].funding_snapshot == chain_index
    assert eng.confirmed_account(A, 0).positions[ETH].funding_snapshot == chain_index
    assert eng.account(B, 0) == eng.confirmed_account(B, 0)


def test_two_funding_items_in_one_batch_and_a_rejected_one() -> None:
    eng = funded()
    _open_positions(eng)
    for rate in (100, 200, 300):  # seqs 2, 3, 4
        assert eng.apply(PostFunding(req(), ETH, rate, NOW)).ack.ok
    # seq 3 is rejected on-chain: no event for it; seqs 2 and 4 applied at $2,500
    i2 = 100 * 2_500 * PRICE // 1_000_000
    i4 = i2 + 300 * 2_500 * PRICE // 1_000_000
    eng.apply(ChainFundingUpdated(req(), ETH, 100, i2, 20, 0))
    eng.apply(ChainFundingUpdated(req(), ETH, 300, i4, 20, 2))
    assert eng.apply(ChainBatchSettled(req(), 2, 3, [(3, 3)], 20, 3)).ack.ok
    assert eng.ledger.conf_funding[ETH] == i4 == eng.ledger.proj_funding[ETH]
    assert not eng.ledger.chain_funding


def test_equal_index_changes_nothing_and_replay_is_identical() -> None:
    eng = funded()
    _open_positions(eng)
    assert eng.apply(PostFunding(req(), ETH, -250, NOW)).ack.ok
    idx = -250 * ETH_PX // 1_000_000
    eng.apply(ChainFundingUpdated(req(), ETH, -250, idx, 30, 0))
    # through the snapshot encoding, like a restart does
    snap = msgspec.msgpack.decode(msgspec.msgpack.encode(eng.snapshot()), type=EngineSnapshot)
    restored = Engine.restore(snap, eng.config)
    assert restored.state_hash() == eng.state_hash()
    for e in (eng, restored):
        assert e.apply(ChainBatchSettled(req(), 2, 1, [], 30, 1)).ack.ok
        assert e.ledger.conf_funding[ETH] == idx == e.ledger.proj_funding[ETH]
    assert restored.state_hash() == eng.state_hash()
    # a duplicate delivery (at the cursor) is ignored
    r = eng.apply(ChainFundingUpdated(req(), ETH, -250, idx, 30, 0))
    assert r.ack.message == "already applied"


def test_unknown_market_is_refused_but_moves_the_cursor() -> None:
    eng = funded()
    r = eng.apply(ChainFundingUpdated(req(), 99, 1, 1, 40, 0))
    assert not r.ack.ok and eng.chain_cursor == (40, 0)
    assert eng.apply(SetOraclePrices(req(), {}, {ETH: ETH_PX}, NOW)).ack.ok
