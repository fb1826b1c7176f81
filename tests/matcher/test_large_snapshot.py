"""A snapshot larger than the journal's record bound (framing.MAX_RECORD, 64 MiB) is still a
snapshot: a live demo stack wrote 72-79 MB ones after ~1.2M commands (the nonces its orders
used stay remembered until they expire), recovery took them for damaged ones, and since the
journal they covered was already pruned the matcher could not start again."""
from __future__ import annotations

from pathlib import Path

from engine_helpers import random_commands
from matcher.engine import Engine
from matcher.framing import HEADER_SIZE, MAX_RECORD
from matcher.journal import (
    FSYNC_BY_SHELL,
    JournaledEngine,
    JournalWriter,
    frame,
    read_snapshot,
    recover,
    snapshot_files,
    write_snapshot,
)


def _pad(path: Path, size: int) -> None:
    """Grow a written snapshot past ``size`` bytes with JSON whitespace after its value (the
    same state, re-framed with a valid length and CRC), as a big state would."""
    path.write_bytes(frame(path.read_bytes()[HEADER_SIZE:] + b" " * size))


def test_a_snapshot_beyond_the_record_bound_is_read_and_recovered_from(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "journal.bin", FSYNC_BY_SHELL)
    je = JournaledEngine(Engine(), w)
    cmds = random_commands(seed=77, n=600)
    for c in cmds[:400]:
        je.submit(c)
    at = je.engine.cmd_seq
    snap_path = write_snapshot(tmp_path / "snaps", je.engine, w.offset, w.segment)
    for c in cmds[400:]:
        je.submit(c)
    w.close()
    _pad(snap_path, MAX_RECORD)
    assert snap_path.stat().st_size > MAX_RECORD + HEADER_SIZE
    snap = read_snapshot(snap_path)
    assert snap is not None and snap.seq == at
    rec = recover(tmp_path / "journal.bin", tmp_path / "snaps")
    assert rec.replayed == je.engine.cmd_seq - at  # from the big snapshot, not from record 1
    assert rec.engine.state_hash() == je.engine.state_hash()


def test_a_torn_or_damaged_snapshot_is_still_refused(tmp_path: Path) -> None:
    eng = Engine()
    for c in random_commands(seed=78, n=50):
        eng.apply(c)
    p = write_snapshot(tmp_path / "snaps", eng, 0)
    good = p.read_bytes()
    assert read_snapshot(p) is not None
    p.write_bytes(good[:-1])  # torn: shorter than its length says
    assert read_snapshot(p) is None
    p.write_bytes(good + b" ")  # longer than its frame: not what write_snapshot wrote
    assert read_snapshot(p) is None
    flipped = bytearray(good)
    flipped[-2] ^= 0x01
    p.write_bytes(bytes(flipped))  # CRC
    assert read_snapshot(p) is None
    p.write_bytes(good[:3])
    assert read_snapshot(p) is None
    assert [s for s, _ in snapshot_files(tmp_path / "snaps")] == [eng.cmd_seq]
