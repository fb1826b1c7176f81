"""Snapshots written by a forked child: frozen at the fork while the parent goes on, and a
recovery from them (plus the journal tail) equals the live engine."""
from __future__ import annotations

from pathlib import Path

from engine_helpers import random_commands
from matcher import background_snapshot
from matcher.engine import Engine
from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalWriter, load_latest_snapshot, recover


def test_child_snapshot_is_the_state_at_the_fork(tmp_path: Path) -> None:
    cmds = random_commands(seed=41, n=1200)
    w = JournalWriter(tmp_path / "journal.bin", FSYNC_BY_SHELL)
    je = JournaledEngine(Engine(), w)
    for c in cmds[:700]:
        je.submit(c)
    at_fork = je.engine.cmd_seq
    child = background_snapshot.start(tmp_path / "snaps", je.engine, w)
    assert child.cmd_seq == at_fork
    for c in cmds[700:]:  # the parent keeps going while the child writes
        je.submit(c)
    assert background_snapshot.wait(child)
    snap = load_latest_snapshot(tmp_path / "snaps")
    assert snap is not None and snap.seq == at_fork < je.engine.cmd_seq
    w.close()
    rec = recover(tmp_path / "journal.bin", tmp_path / "snaps")
    assert rec.replayed == je.engine.cmd_seq - at_fork  # started from the child's snapshot
    assert rec.engine.state_hash() == je.engine.state_hash()


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    d = tmp_path / "snaps"
    d.mkdir()
    for seq in (5, 40, 300, 1200, 9000):
        (d / f"snapshot-{seq:016d}.bin").write_bytes(b"x")
    (d / "journal.bin").write_bytes(b"keep me")
    gone = background_snapshot.prune(d, keep=3)
    assert [p.name for p in gone] == [f"snapshot-{s:016d}.bin" for s in (5, 40)]
    assert sorted(p.name for p in d.iterdir()) == ["journal.bin"] + [
        f"snapshot-{s:016d}.bin" for s in (300, 1200, 9000)]


def test_a_failed_child_is_reported_and_leaves_no_snapshot(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "journal.bin", FSYNC_BY_SHELL)
    je = JournaledEngine(Engine(), w)
    for c in random_commands(seed=42, n=50):
        je.submit(c)
    blocked = tmp_path / "snaps"
    blocked.write_text("a file where the snapshot directory should be")
    child = background_snapshot.start(blocked, je.engine, w)
    while (done := background_snapshot.poll(child)) is None:
        pass
    assert done is False
    assert blocked.read_text().startswith("a file")
    w.close()
