"""The ``fills`` channel's record on disk, so fills do not vanish when the matcher restarts.

:class:`matcher.fill_history.FillHistory` keeps every owner's recent ``fills``-channel frames in
memory for subscribe's ``fills_after`` replay. This log makes that record outlive the process:
after the fan-out of every command that produced such frames, the frames are appended, as sent,
in one record named by the command's sequence number, before any of the command's frames is
sent (matcher/channels.py holds them meanwhile). On start the log is read back into the history,
and a reconnecting market maker gets the fills of before the restart, byte for byte.

Why no fill is lost to a crash: the frames of command ``n`` are written after the journal holds
``n``, so a kill -9 can cut the log behind the journal, never ahead. The log's last command
``C`` says how far it got; recovery applies the journal records after ``C`` with their outputs
(:func:`matcher.journal.recover`, ``outputs_after``) and the server publishes those outputs
again, which rebuilds the missing frames (with the restart's ``ts_ms``; no client saw them).
That needs the engine state at ``C`` or earlier, so before every snapshot the log gets a *mark*
(a record without frames naming the engine's command sequence): the newest snapshot never lies
after ``C``. If it does anyway (the log was deleted, damaged, or a write failed), the log starts
over at the snapshot and the history claims nothing older.

Framing is the journal's (length, CRC, payload; a torn tail is cut on open). Segments: the log
is a series of files ``fills-<k>.bin``; a new one starts every ``segment_frames`` frames and the
oldest are deleted while the rest still hold ``keep_frames`` frames, the history's own bound, so
the disk holds about what memory does. Segment 0 opens with a header naming the first settlement
sequence the log can hold: while it exists, the log holds an owner's whole history (a replay
from 0 may be complete).
"""
from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import msgspec

from crossbook import gc_policy
from matcher.framing import scan
from matcher.journal import Recovery, frame

log = logging.getLogger(__name__)

# (owner, fill seq or fill_history.NOT_A_FILL, the frame as sent)
FillFrame = tuple[str, int, bytes]


class LogRecord(msgspec.Struct, array_like=True):
    """The ``fills`` frames one engine command produced, or a mark (no frames)."""

    cmd_seq: int
    frames: list[FillFrame] = msgspec.field(default_factory=list)
    # only in the header that opens segment 0: the first settlement seq the log can hold
    first_seq: int = 0


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(LogRecord)
_batch_dec = msgspec.msgpack.Decoder(list[LogRecord])
_ARRAY32 = struct.Struct(">BI")
_PREFIX, _SUFFIX = "fills-", ".bin"


def encode(rec: LogRecord) -> bytes:
    """One framed log record."""
    return frame(_enc.encode(rec))


def decode_all(buf: bytes) -> tuple[list[tuple[LogRecord, int]], int]:
    """Every whole record of ``buf`` with its offset, and the length of the intact prefix
    (shorter than ``buf`` when its tail is torn or damaged)."""
    parts: list[bytes] = []
    ends: list[int] = []
    scan(buf, 0, len(buf), parts, ends)  # the frames' lengths and CRCs, in one compiled loop
    try:  # the payloads as one msgpack array: one decoder call
        recs = _batch_dec.decode(b"".join([_ARRAY32.pack(0xDD, len(parts)), *parts]))
    except (msgspec.DecodeError, msgspec.ValidationError):
        recs = []
        for p in parts:  # a bad payload behind a good CRC: the records before it
            try:
                recs.append(_dec.decode(p))
            except (msgspec.DecodeError, msgspec.ValidationError):
                break
    starts = [0, *ends[:len(recs) - 1]] if recs else []
    return list(zip(recs, starts)), ends[len(recs) - 1] if recs else 0


class FillLog:
    """The ``fills`` frames of every command, on disk in ``directory`` (created if missing).

    Opening reads what is there: :attr:`last_cmd_seq` (None: no log yet) and :attr:`first_seq`
    (None: segment 0 is gone or there is no log). After recovery, :meth:`resume` makes it agree
    with the engine and ready to :meth:`append`; :meth:`take_records` then hands over the
    records it holds, once.
    """

    def __init__(self, directory: str | Path, *, segment_frames: int = 250_000,
                 keep_frames: int = 1_000_000) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_frames = max(1, segment_frames)
        self.keep_frames = max(1, keep_frames)
        self._fd: int | None = None
        self.broken = False
        # (k, frames) of every segment on disk, oldest first; the last one is appended to
        self._segs: list[tuple[int, int]] = []
        self._records: list[LogRecord] = []
        # the last command of each segment read on open (resume's cut finds its segment)
        self._last_in: dict[int, int] = {}
        self.first_seq: int | None = None
        self.last_cmd_seq: int | None = None
        self._load()

    # ------------------------------------------------------------------ reading

    def _path(self, k: int) -> Path:
        return self.dir / f"{_PREFIX}{k}{_SUFFIX}"

    def _segment_numbers(self) -> list[int]:
        ks = []
        for p in self.dir.glob(f"{_PREFIX}*{_SUFFIX}"):
            mid = p.name[len(_PREFIX):-len(_SUFFIX)]
            if mid.isdigit():
                ks.append(int(mid))
        return sorted(ks)

    def _load(self) -> None:
        with gc_policy.paused():
            self._load_segments()

    def _load_segments(self) -> None:
        ks = self._segment_numbers()
        for i, k in enumerate(ks):
            buf = self._path(k).read_bytes()
            recs, valid = decode_all(buf)
            if recs:
                first = recs[0][0]
                if k == 0 and first.first_seq:
                    self.first_seq = first.first_seq
                self.last_cmd_seq = recs[-1][0].cmd_seq
            self._records += [r for r, _ in recs]
            self._last_in[k] = recs[-1][0].cmd_seq if recs else -1
            self._segs.append((k, sum(len(r.frames) for r, _ in recs)))
            if valid < len(buf):
                # a torn tail (kill -9 mid-write) or damage: nothing after it can be trusted,
                # and recovery rebuilds what followed from the journal
                log.warning("fill log %s: cutting %d bytes after byte %d", self._path(k),
                            len(buf) - valid, valid)
                self._truncate(k, valid, later=ks[i + 1:])
                break

    def _truncate(self, k: int, offset: int, later: list[int]) -> None:
        for j in later:
            self._path(j).unlink(missing_ok=True)
        self._segs = [(j, n) for j, n in self._segs if j not in later]
        with open(self._path(k), "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())

    def take_records(self) -> list[LogRecord]:
        """The records read on open, oldest first (once: the log does not keep them)."""
        recs, self._records = self._records, []
        return recs

    # ------------------------------------------------------------------ after recovery

    def resume_after(self, rec: Recovery) -> None:
        """:meth:`resume` after :func:`matcher.journal.recover` (with ``outputs_after`` =
        :attr:`last_cmd_seq`): the server then publishes ``rec.unpublished``, which follow."""
        eng = rec.engine
        self.resume(eng.cmd_seq - len(rec.unpublished), eng.ledger.next_seq,
                    rec.unpublished_complete)

    def resume(self, cmd_seq: int, next_seq: int, covered: bool) -> None:
        """Make the log agree with the recovered engine and open it for appending: ``cmd_seq``
        is the last command whose frames the server will not publish again (the engine's, less
        the commands recovery hands back to publish, which follow it), ``next_seq`` the
        engine's next settlement seq. ``covered``: recovery rebuilt the outputs of every command
        after :attr:`last_cmd_seq`; if not, what the log holds has a hole before what the
        server will append, so it starts over at ``cmd_seq``."""
        if self.last_cmd_seq is not None and self.last_cmd_seq > cmd_seq:
            # records of commands the journal does not hold (lost with a power failure, or a
            # log from another journal): dropped, as those commands never happened
            k = next(j for j, _ in self._segs if self._last_in.get(j, -1) > cmd_seq)
            recs, _ = decode_all(self._path(k).read_bytes())
            keep = [r for r, _ in recs if r.cmd_seq <= cmd_seq]
            self._truncate(k, recs[len(keep)][1], later=[j for j, _ in self._segs if j > k])
            self._segs[-1] = (k, sum(len(r.frames) for r in keep))
            while self._records and self._records[-1].cmd_seq > cmd_seq:
                self._records.pop()
            # no record left, not even the header: the log starts over below
            self.last_cmd_seq = self._records[-1].cmd_seq if self._records else None
        self._last_in = {}
        if not covered or self.last_cmd_seq is None:
            if self._segs:
                log.warning("fill log %s: it does not reach the journal's snapshot; starting "
                            "over (fills of before this start are not replayed)", self.dir)
            for k, _ in self._segs:
                self._path(k).unlink(missing_ok=True)
            self._segs, self._records = [], []
            self.first_seq, self.last_cmd_seq = next_seq, cmd_seq
            self._open(0)
            self._write(LogRecord(cmd_seq, [], next_seq))
            return
        self._open(self._segs[-1][0], new=False)

    # ------------------------------------------------------------------ writing

    def _open(self, k: int, new: bool = True) -> None:
        if new:
            self._segs.append((k, 0))
        self._fd = os.open(self._path(k), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _write(self, rec: LogRecord) -> None:
        if self.broken or self._fd is None:
            return
        data = encode(rec)
        try:
            n = os.write(self._fd, data)
            while n < len(data):
                n += os.write(self._fd, data[n:])
        except OSError:
            # the log is not the journal: the exchange goes on. Nothing more is written (not
            # even marks), so the next start sees the hole and claims no history before it.
            log.critical("fill log write failed; fills of before the next restart will not "
                         "be replayed after it", exc_info=True)
            self.broken = True
            return
        self.last_cmd_seq = rec.cmd_seq

    def append(self, cmd_seq: int, frames: list[FillFrame]) -> None:
        """Record the ``fills`` frames command ``cmd_seq`` produced (after its fan-out)."""
        self._write(LogRecord(cmd_seq, frames))
        k, n = self._segs[-1]
        n += len(frames)
        self._segs[-1] = (k, n)
        if n >= self.segment_frames and not self.broken:
            self._roll()

    def mark(self, cmd_seq: int) -> None:
        """Say that every command up to ``cmd_seq`` was published (before a snapshot of the
        engine at ``cmd_seq``, and at shutdown)."""
        if cmd_seq != self.last_cmd_seq:
            self._write(LogRecord(cmd_seq))

    def _roll(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._open(self._segs[-1][0] + 1)
        # the oldest segment goes once the newer ones hold the history's whole window
        while len(self._segs) > 1 and sum(n for _, n in self._segs[1:]) >= self.keep_frames:
            k, _ = self._segs.pop(0)
            self._path(k).unlink(missing_ok=True)
            if k == 0:
                self.first_seq = None

    def fileno(self) -> int:
        """The segment being appended to (a forked snapshot child fsyncs through it)."""
        assert self._fd is not None
        return self._fd

    def close(self) -> None:
        """fsync and close."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
