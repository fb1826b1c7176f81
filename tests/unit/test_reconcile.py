"""crossbook.reconcile: each finding from hand-built journal/chain/ledger views, the clean case,
and the journal loader on a real segmented, pruned journal."""
from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest

from crossbook.margin import Position, SubAccount
from crossbook.protocol_types import RejectReason
from crossbook.reconcile import (BATCH_UNDECODABLE, BUST_MISMATCH, BUST_WITHOUT_REJECTION, FAILURE,
                                 GAP, INFO, ITEM_MISMATCH, LEDGER_MISMATCH, LEDGER_SKIPPED,
                                 NEXT_SEQ_MISMATCH, OVERLAP, REJECTED_WITHOUT_BUST,
                                 SETTLED_NOT_JOURNALED, ChainView, JournalView, LedgerView, Report,
                                 SettledBatch, reconcile, recovered_engine, replay_journal)
from matcher import background_snapshot
from matcher.engine import Engine
from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalError, JournalWriter, sealed_segments
from tests.matcher.engine_helpers import random_commands

A, B = ("0x" + "aa" * 20, 0), ("0x" + "bb" * 20, 1)
MARGIN = int(RejectReason.INSUFFICIENT_MARGIN)


def item(seq: int) -> bytes:
    """Stand-in encoded item: the core compares bytes only."""
    return bytes([1]) + seq.to_bytes(8, "big")


def journal(n: int, first: int = 1, busts: dict[int, int] | None = None) -> JournalView:
    """A journal that sequenced items first..n and applied chain events up to block 100."""
    return JournalView(first_seq=first, next_seq=n + 1, items={s: item(s) for s in range(first, n + 1)},
                       busts=busts or {}, cursor=(100, 0))


def batch(first: int, count: int, block: int = 10, rejected: list[tuple[int, int]] | None = None,
          items: list[bytes] | None = None) -> SettledBatch:
    return SettledBatch(first_seq=first, count=count, block=block, log_index=1, tx_hash=f"0x{first:064x}",
                        rejected=rejected or [],
                        items=items if items is not None else [item(s) for s in range(first, first + count)])


def chain(batches: list[SettledBatch], next_seq: int | None = None,
          last_event: tuple[int, int] = (90, 1)) -> ChainView:
    if next_seq is None:
        next_seq = max((b.first_seq + b.count for b in batches), default=1)
    return ChainView(block=120, next_seq=next_seq, batches=batches, last_event=last_event)


def acct(quote: int, size: int = 0) -> SubAccount:
    return SubAccount(quote=quote, positions={0: Position(size, -size * 3, 0)} if size else {})


def ledger(engine: dict[tuple[str, int], SubAccount] | None = None,
           chain_accts: dict[tuple[str, int], SubAccount] | None = None,
           cursor: tuple[int, int] = (100, 0)) -> LedgerView:
    eng = engine if engine is not None else {A: acct(5, 2), B: acct(-5, -2)}
    return LedgerView(cursor, eng, chain_accts if chain_accts is not None else dict(eng))


def kinds(r: Report) -> list[str]:
    return [f.kind for f in r.findings]


def test_clean_case_counts_and_no_findings() -> None:
    r = reconcile(journal(7), chain([batch(1, 3), batch(4, 0), batch(4, 2)]), ledger())
    assert r.ok and r.findings == []
    assert (r.settled, r.checked, r.pending, r.not_in_journal, r.batches) == (5, 5, 2, 0, 2)
    assert r.accounts_compared == 2 and r.chain_next_seq == 6 and r.journal_next_seq == 8
    # the JSON form an operator scripts against round-trips
    again = msgspec.json.decode(msgspec.json.encode(r), type=Report)
    assert again.ok and again.checked == 5


def test_gap_is_a_failure() -> None:
    r = reconcile(journal(6), chain([batch(1, 2), batch(4, 3)]), ledger())
    assert kinds(r) == [GAP] and not r.ok
    (f,) = r.findings
    assert (f.seq, f.expected, f.actual, f.severity) == (3, 3, 4, FAILURE)


def test_overlap_is_a_failure() -> None:
    r = reconcile(journal(6), chain([batch(1, 4), batch(3, 3)]), ledger())
    assert kinds(r) == [OVERLAP] and not r.ok
    assert (r.findings[0].seq, r.findings[0].expected) == (3, 5)


def test_ranges_must_end_at_the_contracts_next_seq() -> None:
    r = reconcile(journal(6), chain([batch(1, 4)], next_seq=7), ledger())
    assert kinds(r) == [NEXT_SEQ_MISMATCH]
    assert (r.findings[0].expected, r.findings[0].actual) == (5, 7)


def test_mismatched_bytes_name_the_seq_and_both_sides() -> None:
    bad = [item(1), b"\x01tampered", item(3)]
    r = reconcile(journal(3), chain([batch(1, 3, items=bad)]), ledger())
    assert kinds(r) == [ITEM_MISMATCH] and r.checked == 2
    (f,) = r.findings
    assert (f.seq, f.expected, f.actual) == (2, "0x" + item(2).hex(), "0x" + b"\x01tampered".hex())


def test_settled_but_not_journaled() -> None:
    r = reconcile(journal(3), chain([batch(1, 5)]), ledger())
    assert kinds(r) == [SETTLED_NOT_JOURNALED] * 2
    assert [f.seq for f in r.findings] == [4, 5] and r.checked == 3 and r.pending == 0


def test_items_before_the_retained_journal_are_counted_not_failed() -> None:
    r = reconcile(journal(6, first=4), chain([batch(1, 5)]), ledger())
    assert r.ok and (r.not_in_journal, r.checked, r.pending) == (3, 2, 1)


def test_undecodable_calldata_is_a_failure() -> None:
    r = reconcile(journal(3), chain([SettledBatch(first_seq=1, count=3, items=None, tx_hash="0xab")]),
                  ledger())
    assert kinds(r) == [BATCH_UNDECODABLE] and r.findings[0].actual == "0xab" and r.checked == 0


def test_rejection_with_its_bust_is_listed() -> None:
    r = reconcile(journal(3, busts={2: MARGIN}), chain([batch(1, 3, rejected=[(2, MARGIN)])]), ledger())
    assert r.ok
    assert [(x.seq, x.reason_name, x.bust) for x in r.rejected] == [(2, "INSUFFICIENT_MARGIN", "journaled")]


def test_rejected_without_bust() -> None:
    r = reconcile(journal(3), chain([batch(1, 3, rejected=[(2, MARGIN)])]), ledger())
    assert kinds(r) == [REJECTED_WITHOUT_BUST] and not r.ok
    assert r.findings[0].seq == 2 and r.rejected[0].bust == "missing"


def test_bust_with_another_reason_and_bust_without_rejection() -> None:
    expired = int(RejectReason.EXPIRED)
    r = reconcile(journal(3, busts={2: expired, 3: MARGIN}), chain([batch(1, 3, rejected=[(2, MARGIN)])]),
                  ledger())
    assert kinds(r) == [BUST_MISMATCH, BUST_WITHOUT_REJECTION]
    assert (r.findings[0].expected, r.findings[0].actual) == (MARGIN, expired)
    assert r.findings[1].seq == 3


def test_rejections_the_journal_cannot_show_are_not_failures() -> None:
    # applied before the replay's start (a snapshot), and not applied by the matcher yet
    j = journal(4)
    j.cursor_from = (20, 0)
    batches = [batch(1, 2, block=10, rejected=[(1, MARGIN)]), batch(3, 2, block=150, rejected=[(4, MARGIN)])]
    r = reconcile(j, chain(batches, last_event=(90, 1)), ledger())
    assert r.ok and [x.bust for x in r.rejected] == ["before_journal", "not_seen"]


def test_ledger_mismatch_names_the_account() -> None:
    chain_accts = {A: acct(5, 2), B: acct(-4, -2)}
    r = reconcile(journal(3), chain([batch(1, 3)]), ledger(chain_accts=chain_accts))
    assert kinds(r) == [LEDGER_MISMATCH] and not r.ok
    (f,) = r.findings
    assert f.account == f"{B[0]}/{B[1]}" and f.expected[0] == -4 and f.actual[0] == -5


def test_zero_collateral_and_flat_positions_equal_absent_ones() -> None:
    eng = {A: SubAccount(quote=7, collateral={1: 0}, positions={0: Position(0, 0, 123)})}
    r = reconcile(journal(3), chain([batch(1, 3)]), ledger(eng, {A: SubAccount(quote=7)}))
    assert r.ok and r.accounts_compared == 1
    # an account the chain never saw compares as empty
    r = reconcile(journal(3), chain([batch(1, 3)]), ledger({A: SubAccount()}, {}))
    assert r.ok


def test_ledger_check_is_skipped_when_the_matcher_is_behind() -> None:
    chain_accts = {A: acct(0), B: acct(0)}  # would mismatch, but the matcher has not seen block 130
    r = reconcile(journal(3), chain([batch(1, 3)], last_event=(130, 0)), ledger(chain_accts=chain_accts))
    assert r.ok and kinds(r) == [LEDGER_SKIPPED] and r.accounts_compared == 0
    (f,) = r.findings
    assert f.severity == INFO and "matcher behind chain by 30 blocks" in f.message


# ------------------------------------------------------------------- the journal loader

def _write(tmp: Path, n: int, snap_every: int) -> Engine:
    w = JournalWriter(tmp / "journal.bin", FSYNC_BY_SHELL, segment_bytes=16_384)
    je = JournaledEngine(Engine(), w, tmp / "snapshots", snap_every)
    for c in random_commands(seed=61, n=n):
        je.submit(c)
    w.close()
    return je.engine


def test_replay_from_record_one_then_from_the_oldest_kept_snapshot(tmp_path: Path) -> None:
    eng = _write(tmp_path, 1500, snap_every=250)
    full = replay_journal(tmp_path)
    v = full.view
    assert v.first_seq == 1 and v.from_snapshot == 0 and v.next_seq == eng.ledger.next_seq > 50
    assert [s for s, _ in full.items] == list(range(1, v.next_seq))
    assert v.busts  # the stream's settlements reject some items
    # production prunes sealed segments older than the oldest kept snapshot
    before = len(sealed_segments(tmp_path / "journal.bin"))
    background_snapshot.prune(tmp_path / "snapshots", keep=2, journal=tmp_path / "journal.bin")
    assert len(sealed_segments(tmp_path / "journal.bin")) < before
    part = replay_journal(tmp_path).view
    assert part.from_snapshot > 0 and 1 < part.first_seq < part.next_seq == v.next_seq
    assert part.items == {s: b for s, b in v.items.items() if s >= part.first_seq}
    assert part.cursor == v.cursor
    assert recovered_engine(tmp_path).state_hash() == eng.state_hash()
    # without the snapshots the pruned history cannot be proven: a clear error
    shutil.rmtree(tmp_path / "snapshots")
    with pytest.raises(JournalError, match="no snapshot covers"):
        replay_journal(tmp_path)


def test_no_journal_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no matcher journal"):
        replay_journal(tmp_path)
