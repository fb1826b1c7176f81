"""The journal's off-loop fsync handshake: nothing written since the last sync is never lost."""
from __future__ import annotations

import os
from pathlib import Path

from matcher.commands import SetOraclePrices
from matcher.journal import FSYNC_BY_SHELL, JournalWriter, iter_records


def _cmd(i: int) -> SetOraclePrices:
    return SetOraclePrices(i, {}, {0: 3_000 * 10**8 + i}, 1_700_000_000)


def test_begin_sync_hands_out_the_fd_once_per_dirty_period(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path / "journal.bin", FSYNC_BY_SHELL)
    assert w.begin_sync() is None  # nothing written yet
    w.append(1, _cmd(1))
    fd = w.begin_sync()
    assert fd is not None
    assert w.begin_sync() is None  # the caller's fsync covers it
    # a record written while that fsync runs makes the journal dirty again
    w.append(2, _cmd(2))
    os.fsync(fd)
    assert w.begin_sync() == fd
    w.sync(force=True)  # shutdown: always fsyncs, even when not marked dirty
    w.close()
    assert [rec.seq for rec, _ in iter_records((tmp_path / "journal.bin").read_bytes())] == [1, 2]
