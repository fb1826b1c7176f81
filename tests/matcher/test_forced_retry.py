"""A forced-withdrawal request the shadow ledger could not cover waits, and a deposit into its
account sequences it: the owner no longer waits out the escape delay after a top-up (contracts
audit, on a live stack). It waits across a snapshot and a journal replay; executing it on-chain,
or a request that another refusal stopped, never sequences it."""
from __future__ import annotations

import msgspec
from engine_helpers import A, B, funded, req
from crossbook.config import USD
from crossbook.protocol_types import ForcedItem
from matcher.commands import ChainDeposit, ChainForcedWithdrawalExecuted, ChainForcedWithdrawalRequested, Code
from matcher.engine import Engine
from matcher.journal import encode_record, iter_records
from matcher.structs import EngineSnapshot


def _forced(res: object) -> list[int]:
    return [o.item.request_id for o in res.outputs  # type: ignore[attr-defined]
            if isinstance(getattr(o, "item", None), ForcedItem)]


def test_a_refused_request_is_sequenced_when_a_deposit_covers_it() -> None:
    eng = funded(usd=1_000)  # 1,000 USD each for A and B
    log: list[bytes] = []

    def apply(cmd: object) -> object:
        res = eng.apply(cmd)  # type: ignore[arg-type]
        if res.journal:
            log.append(encode_record(max(res.ack.seq, 0), cmd))  # type: ignore[arg-type]
        return res

    res = apply(ChainForcedWithdrawalRequested(req(), 7, A, 0, 0, 1_500 * USD))
    assert res.ack.code == Code.INSUFFICIENT_BALANCE and not _forced(res)  # type: ignore[attr-defined]
    assert list(eng.forced_waiting) == [7]
    res = apply(ChainDeposit(req(), B, 0, 0, 5_000 * USD))  # someone else's deposit: still waits
    assert not _forced(res) and list(eng.forced_waiting) == [7]
    res = apply(ChainDeposit(req(), A, 0, 0, 200 * USD))  # not enough yet
    assert not _forced(res) and list(eng.forced_waiting) == [7]

    snap = msgspec.json.decode(msgspec.json.encode(eng.snapshot()), type=EngineSnapshot)
    restored = Engine.restore(snap)
    assert restored.state_hash() == eng.state_hash() and list(restored.forced_waiting) == [7]

    res = apply(ChainDeposit(req(), A, 0, 0, 400 * USD))  # 1,600 now: the top-up covers it
    assert _forced(res) == [7] and not eng.forced_waiting
    assert eng.ledger.account((A, 0)).quote == 100 * USD  # debited in the projected state
    # the restored engine does the same, and so does a replay of the journal
    r2 = restored.apply(ChainDeposit(req(), A, 0, 0, 400 * USD))
    assert _forced(r2) == [7] and restored.state_hash() == eng.state_hash()
    fresh = funded(usd=1_000)
    for rec, _ in iter_records(b"".join(log)):
        fresh.replay(rec.cmd)
    assert fresh.state_hash() == eng.state_hash()
    # a second request with the same id is the executed one: refused, not waiting
    res = apply(ChainForcedWithdrawalRequested(req(), 7, A, 0, 0, USD))
    assert res.ack.code == Code.REPLAYED and not eng.forced_waiting  # type: ignore[attr-defined]


def test_executed_on_chain_it_stops_waiting() -> None:
    eng = funded(usd=1_000)
    assert eng.apply(ChainForcedWithdrawalRequested(req(), 9, A, 0, 0, 2_000 * USD)).ack.code \
        == Code.INSUFFICIENT_BALANCE
    assert list(eng.forced_waiting) == [9]
    # after the escape delay the owner executes it directly (its deposit landed meanwhile)
    assert eng.apply(ChainDeposit(req(), A, 0, 0, 500 * USD)).ack.ok  # 1,500: still short
    assert eng.apply(ChainForcedWithdrawalExecuted(req(), 9, A, 0, 0, 1_500 * USD)).ack.ok
    assert not eng.forced_waiting
    res = eng.apply(ChainDeposit(req(), A, 0, 0, 5_000 * USD))
    assert not _forced(res)  # never sequenced after its execution


def test_an_unknown_asset_does_not_wait() -> None:
    eng = funded(usd=1_000)
    res = eng.apply(ChainForcedWithdrawalRequested(req(), 3, A, 0, 99, USD))
    assert res.ack.code == Code.UNKNOWN_ASSET and not eng.forced_waiting
