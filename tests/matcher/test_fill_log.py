"""The fills channel's record on disk (matcher/fill_log.py): what a restart reads back, a torn
tail, records of commands the journal lost, segments and their retention, a failing disk."""
from __future__ import annotations

import os
from pathlib import Path

from matcher.fill_log import FillLog, LogRecord, decode_all, encode


def _frames(log: FillLog) -> list[tuple[str, int, bytes]]:
    return [f for rec in log.take_records() for f in rec.frames]


def _new(d: Path, **kw: int) -> FillLog:
    log = FillLog(d, **kw)
    assert log.last_cmd_seq is None and log.first_seq is None
    log.resume(cmd_seq=4, next_seq=1, covered=False)  # no log yet: it starts at the engine
    return log


def test_a_reopened_log_holds_what_was_appended_and_where_it_ended(tmp_path: Path) -> None:
    log = _new(tmp_path)
    log.append(5, [("a", 1, b"f1a"), ("b", 1, b"f1b")])
    log.append(7, [("a", 0, b"bust")])
    log.mark(9)
    log.close()
    again = FillLog(tmp_path)
    assert (again.last_cmd_seq, again.first_seq) == (9, 1)
    again.resume(cmd_seq=9, next_seq=2, covered=True)
    assert _frames(again) == [("a", 1, b"f1a"), ("b", 1, b"f1b"), ("a", 0, b"bust")]
    again.append(10, [("a", 2, b"f2")])  # appends after what was there
    again.close()
    assert _frames(FillLog(tmp_path))[-1] == ("a", 2, b"f2")


def test_a_torn_tail_is_cut_and_the_log_ends_before_it(tmp_path: Path) -> None:
    log = _new(tmp_path)
    log.append(5, [("a", 1, b"f1")])
    log.append(6, [("a", 2, b"f2")])
    log.close()
    seg = tmp_path / "fills-0.bin"
    whole = seg.stat().st_size
    with open(seg, "ab") as f:  # kill -9 in the middle of the next write
        f.write(encode(LogRecord(7, [("a", 3, b"f3")]))[:9])
    again = FillLog(tmp_path)
    assert again.last_cmd_seq == 6  # recovery rebuilds command 7's frames from the journal
    assert seg.stat().st_size == whole
    again.resume(cmd_seq=7, next_seq=4, covered=True)
    assert [s for _, s, _ in _frames(again)] == [1, 2]


def test_records_of_commands_the_journal_lost_are_dropped(tmp_path: Path) -> None:
    """After a power failure the journal may end before the log (both were written, neither
    fsynced): those commands never happened, so neither do their frames."""
    log = _new(tmp_path, segment_frames=2)
    for cmd in (5, 7, 9, 11):
        log.append(cmd, [("a", cmd, b"f%d" % cmd)])
    log.close()
    assert len(list(tmp_path.glob("fills-*.bin"))) == 3
    again = FillLog(tmp_path)
    again.resume(cmd_seq=7, next_seq=8, covered=True)
    assert again.last_cmd_seq == 7
    assert [s for _, s, _ in _frames(again)] == [5, 7]
    again.append(8, [("a", 8, b"f8")])
    again.close()
    third = FillLog(tmp_path)
    assert third.last_cmd_seq == 8
    assert [s for _, s, _ in _frames(third)] == [5, 7, 8]


def test_a_log_that_does_not_reach_the_snapshot_starts_over(tmp_path: Path) -> None:
    log = _new(tmp_path)
    log.append(5, [("a", 1, b"f1")])
    log.close()
    again = FillLog(tmp_path)
    again.resume(cmd_seq=20, next_seq=9, covered=False)  # recovery could not rebuild 6..20
    assert _frames(again) == [] and (again.first_seq, again.last_cmd_seq) == (9, 20)
    again.close()
    # a log from another journal (its header is after the engine's cmd_seq) starts over too
    other = FillLog(tmp_path)
    other.resume(cmd_seq=3, next_seq=1, covered=True)
    assert _frames(other) == [] and other.first_seq == 1


def test_old_segments_go_once_the_rest_hold_the_window(tmp_path: Path) -> None:
    log = _new(tmp_path, segment_frames=4, keep_frames=10)
    for cmd in range(5, 105):
        log.append(cmd, [("a", cmd, b"x"), ("b", cmd, b"y")])
    log.close()
    segs = sorted(tmp_path.glob("fills-*.bin"))
    assert 3 <= len(segs) <= 5  # ~10 frames kept plus the segment being written
    again = FillLog(tmp_path)
    assert again.first_seq is None  # segment 0 is gone: no replay from 0 is complete
    again.resume(cmd_seq=104, next_seq=101, covered=True)
    kept = _frames(again)
    assert len(kept) >= 10
    assert [s for o, s, _ in kept if o == "a"] == list(range(105 - len(kept) // 2, 105))


def test_a_failing_disk_stops_the_log_and_not_the_caller(tmp_path: Path) -> None:
    log = _new(tmp_path)
    log.append(5, [("a", 1, b"f1")])
    fd = log.fileno()
    os.close(fd)
    log._fd = os.open(tmp_path / "fills-0.bin", os.O_RDONLY)  # noqa: SLF001 - the failure under test
    log.append(6, [("a", 2, b"f2")])
    log.mark(7)
    assert log.broken and log.last_cmd_seq == 5
    log.close()
    again = FillLog(tmp_path)
    assert again.last_cmd_seq == 5  # so a restart rebuilds from 6, or starts over
    recs, valid = decode_all((tmp_path / "fills-0.bin").read_bytes())
    assert [r.cmd_seq for r, _ in recs] == [4, 5]
