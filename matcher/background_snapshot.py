"""Snapshots written by a forked child, so the matcher's event loop never waits for them.

Building, encoding and fsyncing a snapshot takes tens of milliseconds for a small engine and
grows with the state (every used nonce is in it): on the loop, every connection would stall
that long each time. Instead the process forks, as Redis does for its background saves: the
child holds a copy-on-write image of the engine frozen at the fork, fsyncs the journal up to
the offset the snapshot names, writes the snapshot (tmp + fsync + rename, as
:func:`matcher.journal.write_snapshot` always does) and exits; the parent only pays for the
fork itself and goes on at once. One child runs at a time.

The child never returns into the event loop or the logging module (locks another thread held
at the fork would never be released there); it reports failure through its exit status.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from matcher.engine import Engine
from matcher.journal import JournalWriter, prune_segments, snapshot_files, write_snapshot


@dataclass
class Child:
    """A running snapshot child."""

    pid: int
    cmd_seq: int  # the engine's cmd_seq the snapshot holds


def _write_in_child(snapdir: Path, engine: Engine, journal_fd: int, offset: int,
                    segment: int, also_sync: Sequence[int]) -> None:
    status = 1
    try:
        # the snapshot says "the journal up to offset is applied": make that part durable first,
        # through the descriptor inherited at the fork (the parent may seal and rename the
        # segment meanwhile; this one still names it); likewise the files whose record must
        # reach the snapshot (the fill log's mark)
        os.fsync(journal_fd)
        for fd in also_sync:
            os.fsync(fd)
        write_snapshot(snapdir, engine, offset, segment)
        status = 0
    except BaseException as exc:  # noqa: BLE001 - reported through the exit status
        try:
            os.write(2, f"background snapshot failed: {exc!r}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(status)


def start(snapdir: Path, engine: Engine, writer: JournalWriter,
          also_sync: Sequence[int] = ()) -> Child:
    """Fork a child that writes the snapshot of ``engine`` as it is now; returns at once.
    ``also_sync``: descriptors the child fsyncs with the journal before writing."""
    offset, segment = writer.offset, writer.segment
    sys.stdout.flush()  # the child exits without flushing: nothing buffered twice
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage does not follow it)
        _write_in_child(snapdir, engine, writer.fileno(), offset, segment, also_sync)
    return Child(pid, engine.cmd_seq)


def poll(child: Child) -> bool | None:
    """None while ``child`` runs; then True if it wrote its snapshot, False if it failed."""
    pid, status = os.waitpid(child.pid, os.WNOHANG)
    if pid == 0:
        return None
    return os.waitstatus_to_exitcode(status) == 0


def wait(child: Child) -> bool:
    """Block until ``child`` ends; True if it wrote its snapshot."""
    _, status = os.waitpid(child.pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def prune(snapdir: Path, keep: int = 3, journal: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` snapshots (recovery takes the newest that passes its
    CRC, so a few older ones stay as fallbacks), then the sealed segments of ``journal`` that
    only the deleted ones needed; returns the deleted paths."""
    snaps = snapshot_files(snapdir)
    n_old = max(0, len(snaps) - keep)
    old = [p for _, p in snaps[:n_old]]
    for p in old:
        p.unlink(missing_ok=True)
    if journal is not None and n_old < len(snaps):
        # the oldest kept snapshot needs the records after its cmd_seq
        old += prune_segments(journal, snaps[n_old][0] + 1)
    return old
