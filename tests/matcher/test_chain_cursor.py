"""The engine's chain cursor: chain events apply exactly once, however often the watcher (or
two of them) delivers them, and the cursor survives snapshots, restores and journal replay."""

from __future__ import annotations

import msgspec

from crossbook.config import USD
from matcher.commands import (
    AgentSet,
    ChainBatchSettled,
    ChainDeposit,
    ChainForcedWithdrawalRequested,
    Code,
    Command,
)
from matcher.engine import Engine, EngineSnapshot
from matcher.journal import Record, encode_record, iter_records
from tests.matcher.engine_helpers import A, B


def test_a_redelivered_event_is_ignored_and_the_cursor_moves() -> None:
    eng = Engine()
    first = eng.apply(ChainDeposit(1, A, 0, 0, 100 * USD, 10, 3))
    assert first.ack.ok and first.journal and eng.chain_cursor == (10, 3)
    for pos in ((10, 3), (10, 2), (9, 7)):  # the same log again, or an earlier one
        dup = eng.apply(ChainDeposit(2, A, 0, 0, 100 * USD, *pos))
        assert dup.ack.ok and not dup.journal and dup.ack.message == "already applied"
    assert eng.confirmed_account(A, 0).quote == 100 * USD
    assert eng.apply(ChainDeposit(3, A, 0, 0, 5 * USD, 10, 4)).journal
    assert eng.confirmed_account(A, 0).quote == 105 * USD
    assert eng.chain_cursor == (10, 4)


def test_events_without_a_position_bypass_the_cursor() -> None:
    eng = Engine()
    eng.apply(ChainDeposit(1, A, 0, 0, USD, 10, 0))
    # in-process tools and older journals carry no position: applied as before
    assert eng.apply(ChainDeposit(2, A, 0, 0, USD)).journal
    assert eng.confirmed_account(A, 0).quote == 2 * USD and eng.chain_cursor == (10, 0)


def test_a_refused_event_still_moves_the_cursor_and_is_journaled() -> None:
    eng = Engine()
    # nothing deposited: the engine cannot execute the forced withdrawal early
    res = eng.apply(ChainForcedWithdrawalRequested(1, 1, A, 0, 0, USD, 5, 1))
    assert not res.ack.ok and res.ack.code == Code.INSUFFICIENT_BALANCE
    assert res.journal and res.ack.seq == 1 and eng.chain_cursor == (5, 1)
    # an already-settled batch (idempotent by seq) moves the cursor too
    assert eng.apply(ChainBatchSettled(2, 1, 0, [], 6, 0)).journal
    assert eng.chain_cursor == (6, 0)


def test_cursor_survives_snapshot_restore_and_replay() -> None:
    eng = Engine()
    cmds: list[Command] = [ChainDeposit(1, A, 0, 0, 50 * USD, 3, 0), AgentSet(2, A, B, True, 3, 1),
            ChainDeposit(3, B, 1, 0, 7 * USD, 4, 0)]
    journal = b""
    for c in cmds:
        res = eng.apply(c)
        journal += encode_record(res.ack.seq, c)
    snap = msgspec.msgpack.decode(msgspec.msgpack.encode(eng.snapshot()), type=EngineSnapshot)
    restored = Engine.restore(snap)
    assert restored.chain_cursor == (4, 0) and restored.state_hash() == eng.state_hash()
    replayed = Engine()
    for rec, _ in iter_records(journal):
        replayed.apply(rec.cmd)
    assert replayed.state_hash() == eng.state_hash()
    # the cursor is part of the state hash
    other = Engine.restore(snap)
    other.chain_cursor = (4, 1)
    assert other.state_hash() != eng.state_hash()


def test_old_records_and_snapshots_still_decode() -> None:
    # a ChainDeposit journaled before the position fields existed (array of 5 + tag)
    old = msgspec.msgpack.encode([1, [6, 1, A, 0, 0, 100]])
    rec = msgspec.msgpack.decode(old, type=Record)
    assert isinstance(rec.cmd, ChainDeposit) and (rec.cmd.block, rec.cmd.log_index) == (0, 0)
    eng = Engine()
    eng.chain_cursor = (5, 1)
    fields = msgspec.msgpack.decode(msgspec.msgpack.encode(eng.snapshot()))
    assert fields[11] == [5, 1]
    legacy = msgspec.msgpack.encode(fields[:11])  # written before the chain cursor (and what followed it)
    assert msgspec.msgpack.decode(legacy, type=EngineSnapshot).chain_cursor == (0, 0)
