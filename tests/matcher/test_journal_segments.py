"""Journal segments: the active file is sealed every ``segment_bytes``, recovery reads the
segments after the snapshot, and segments the kept snapshots no longer need are deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine_helpers import random_commands
from matcher import background_snapshot
from matcher.commands import Command
from matcher.engine import Engine
from matcher.journal import (
    FSYNC_BY_SHELL,
    JournalError,
    JournaledEngine,
    JournalWriter,
    first_seq,
    iter_journal,
    iter_records,
    load_latest_snapshot,
    recover,
    sealed_path,
    sealed_segments,
    write_snapshot,
)

SEG = 16_384  # bytes per segment: a 1,500-command stream fills a few dozen


def _run(tmp: Path, cmds: list[Command], *, snap_every: int = 0,
         seg: int = SEG) -> tuple[Engine, JournalWriter]:
    w = JournalWriter(tmp / "journal.bin", FSYNC_BY_SHELL, segment_bytes=seg)
    je = JournaledEngine(Engine(), w, tmp / "snaps", snap_every)
    for c in cmds:
        je.submit(c)
    return je.engine, w


def test_sealed_segments_are_contiguous_and_replay_to_the_same_state(tmp_path: Path) -> None:
    eng, w = _run(tmp_path, random_commands(seed=51, n=1500))
    w.close()
    segs = sealed_segments(tmp_path / "journal.bin")
    assert len(segs) >= 5
    # each sealed file is named by its first record, and the records run 1..cmd_seq without gaps
    seqs = [r.seq for r in iter_journal(tmp_path / "journal.bin")]
    assert seqs == list(range(1, eng.cmd_seq + 1))
    for first, p in segs:
        assert next(iter_journal(p)).seq == first  # a sealed file read alone starts there
        assert p.stat().st_size >= SEG  # sealed once it reached the size, not before
    rec = recover(tmp_path / "journal.bin")
    assert rec.replayed == eng.cmd_seq and rec.truncated == 0
    assert rec.engine.state_hash() == eng.state_hash()


def test_recovery_starts_at_the_snapshots_segment_and_appending_resumes(tmp_path: Path) -> None:
    cmds = random_commands(seed=52, n=1500)
    eng, w = _run(tmp_path, cmds[:1000], snap_every=300)
    w.close()
    snap = load_latest_snapshot(tmp_path / "snaps")
    assert snap is not None and snap.segment > 1  # taken after several seals
    rec = recover(tmp_path / "journal.bin", tmp_path / "snaps")
    assert rec.replayed == eng.cmd_seq - snap.seq
    assert rec.engine.state_hash() == eng.state_hash()
    # a reopened writer continues the same active segment and the stream stays contiguous
    w2 = JournalWriter(tmp_path / "journal.bin", FSYNC_BY_SHELL, segment_bytes=SEG)
    je = JournaledEngine(rec.engine, w2)
    ref = Engine()
    for c in cmds:
        ref.apply(c)
    for c in cmds[1000:]:
        je.submit(c)
    w2.close()
    assert [r.seq for r in iter_journal(tmp_path / "journal.bin")] == list(
        range(1, ref.cmd_seq + 1))
    assert recover(tmp_path / "journal.bin").engine.state_hash() == ref.state_hash()


def test_pruning_deletes_only_what_no_kept_snapshot_needs(tmp_path: Path) -> None:
    eng, w = _run(tmp_path, random_commands(seed=53, n=1500), snap_every=250)
    journal = tmp_path / "journal.bin"
    snapdir = tmp_path / "snaps"
    before = sealed_segments(journal)
    gone = background_snapshot.prune(snapdir, keep=2, journal=journal)
    after = sealed_segments(journal)
    deleted_segments = [p for p in gone if p.parent == tmp_path]
    assert deleted_segments and len(after) == len(before) - len(deleted_segments)
    snaps = sorted(snapdir.glob("snapshot-*.bin"))
    assert len(snaps) == 2
    oldest_kept = int(snaps[0].stem.split("-")[1])
    # what is left still begins at or before the first record the oldest kept snapshot needs
    assert after[0][0] <= oldest_kept + 1
    assert min(r.seq for r in iter_journal(journal)) <= oldest_kept + 1
    w.close()
    assert recover(journal, snapdir).engine.state_hash() == eng.state_hash()
    # the newest snapshot damaged: the older kept one still has its segments
    snaps[-1].write_bytes(snaps[-1].read_bytes()[:-5])
    rec = recover(journal, snapdir)
    assert rec.replayed == eng.cmd_seq - oldest_kept
    assert rec.engine.state_hash() == eng.state_hash()
    # no usable snapshot at all: the deleted history cannot be replayed, and recovery says so
    for p in snaps:
        p.unlink()
    with pytest.raises(JournalError, match="were deleted"):
        recover(journal, snapdir)


def test_torn_active_tail_is_cut_but_a_damaged_sealed_segment_is_an_error(
        tmp_path: Path) -> None:
    eng, w = _run(tmp_path, random_commands(seed=54, n=800))
    w.close()
    journal = tmp_path / "journal.bin"
    whole = journal.stat().st_size
    with open(journal, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a header promising 64 bytes, then too few
    rec = recover(journal)
    assert rec.truncated == 11 and rec.journal_offset == whole == journal.stat().st_size
    assert rec.engine.state_hash() == eng.state_hash()
    # a flipped byte inside a sealed segment: the records after it exist, so this is damage,
    # not a torn tail, and nothing is truncated
    _, p = sealed_segments(journal)[1]
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="sealed journal segment is damaged"):
        recover(journal)
    assert journal.stat().st_size == whole


def test_crash_between_seal_and_new_active_file(tmp_path: Path) -> None:
    """A crash after the rename but before the new active file exists leaves only sealed
    segments: recovery reads them, and a new writer starts the next segment."""
    cmds = random_commands(seed=55, n=900)
    eng, w = _run(tmp_path, cmds[:600])
    journal = tmp_path / "journal.bin"
    w.close()
    # what _seal leaves after os.replace when the process dies right there
    first = first_seq(journal)
    assert first is not None and first > max(f for f, _ in sealed_segments(journal))
    journal.rename(sealed_path(journal, first))
    rec = recover(journal)
    assert rec.engine.state_hash() == eng.state_hash() and rec.journal_offset == 0
    w2 = JournalWriter(journal, FSYNC_BY_SHELL, segment_bytes=SEG)
    je = JournaledEngine(rec.engine, w2)
    for c in cmds[600:]:
        je.submit(c)
    w2.close()
    ref = Engine()
    for c in cmds:
        ref.apply(c)
    assert recover(journal).engine.state_hash() == ref.state_hash()


def test_snapshot_taken_right_after_a_seal(tmp_path: Path) -> None:
    """The active file is empty: the snapshot names the segment still to be written, and
    recovery replays nothing without reading the sealed segments before it."""
    eng, w = _run(tmp_path, random_commands(seed=56, n=700))
    w._seal(eng.cmd_seq + 1)  # noqa: SLF001 - the state right after a seal
    assert w.offset == 0 and w.segment == eng.cmd_seq + 1
    write_snapshot(tmp_path / "snaps", eng, w.offset, w.segment)
    w.close()
    for _, p in sealed_segments(tmp_path / "journal.bin"):
        p.write_bytes(b"\x00" * 3)  # would be an error if recovery read them
    rec = recover(tmp_path / "journal.bin", tmp_path / "snaps")
    assert rec.replayed == 0 and rec.engine.state_hash() == eng.state_hash()


def test_snapshot_from_before_segments_still_recovers(tmp_path: Path) -> None:
    """Snapshots written before segments existed have segment 0 and an offset in the only
    journal file."""
    eng, w = _run(tmp_path, random_commands(seed=57, n=600), seg=0)
    w.close()
    assert sealed_segments(tmp_path / "journal.bin") == []
    write_snapshot(tmp_path / "snaps", eng, (tmp_path / "journal.bin").stat().st_size)
    snap = load_latest_snapshot(tmp_path / "snaps")
    assert snap is not None and snap.segment == 0
    rec = recover(tmp_path / "journal.bin", tmp_path / "snaps")
    assert rec.replayed == 0 and rec.engine.state_hash() == eng.state_hash()


def test_a_corrupt_record_inside_the_active_file_ends_the_replay_there(tmp_path: Path) -> None:
    cmds = random_commands(seed=58, n=400)
    eng, w = _run(tmp_path, cmds, seg=0)
    w.close()
    journal_path = tmp_path / "journal.bin"
    records = list(iter_records(journal_path.read_bytes()))
    end_of_good = records[149][1]  # the 151st record gets a flipped payload byte
    data = bytearray(journal_path.read_bytes())
    data[end_of_good + 20] ^= 0x01
    journal_path.write_bytes(bytes(data))
    rec = recover(journal_path)
    prefix = Engine()
    for r, _ in records[:150]:
        prefix.apply(r.cmd)
    assert rec.replayed == 150 and rec.journal_offset == end_of_good
    assert rec.truncated == len(data) - end_of_good == len(data) - journal_path.stat().st_size
    assert rec.engine.state_hash() == prefix.state_hash()
    assert eng.cmd_seq > 150
