"""Write-ahead journal, snapshots and recovery of the matching engine (brief invariant 7).

Record framing (the sans-I/O part, :func:`frame` / :func:`unframe`)::

    record := length:uint32le crc32:uint32le payload[length]
    payload := msgpack(Record(seq, command))

``seq`` is the engine's command sequence number (``Ack.seq``), so a replay can check that the
journal is gap-free. A record cut short by a crash (kill -9 mid-write) fails the length or CRC
test; recovery stops there and truncates the file to the last whole record.

Durability: :class:`JournalWriter` writes every record with one unbuffered ``write`` before
``append`` returns, so the record is in the kernel (it survives the process being killed) before
the caller releases the ack. Whether it is also fsynced before the ack is the ``fsync`` policy:
``FSYNC_EVERY_RECORD`` (power-loss safe per ack), or ``FSYNC_BY_SHELL`` where the shell calls
:meth:`JournalWriter.sync` on a timer (every N ms, group commit) and holds acks until then if it
wants power-loss safety for them.

Snapshots are the engine's :meth:`matcher.engine.Engine.snapshot` plus the journal offset it
covers, written to ``snapshot-<seq>.bin`` atomically (tmp file, fsync, rename, fsync dir).
Recovery = newest valid snapshot + replay of the journal from its offset, without signature
checks (intake verified them before journaling) and without the pre-trade check (a journaled
order was accepted, and the check is a function of journaled state).
"""

from __future__ import annotations

import gc
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import msgspec

from matcher.commands import Command, Result
from matcher.engine import Engine, EngineConfig, EngineSnapshot
from matcher.framing import HEADER_SIZE, scan

_HEADER = struct.Struct("<II")  # length, crc32: the frame matcher/framing.py scans

FSYNC_EVERY_RECORD = "every_record"
FSYNC_BY_SHELL = "by_shell"


class Record(msgspec.Struct, array_like=True):
    """One journaled command and its engine command sequence number."""

    seq: int
    cmd: Command


class SnapshotFile(msgspec.Struct, array_like=True):
    """A snapshot: the engine state after command ``seq``, covering the journal up to byte
    ``journal_offset``."""

    seq: int
    journal_offset: int
    engine: EngineSnapshot


_enc = msgspec.msgpack.Encoder()
_rec_dec = msgspec.msgpack.Decoder(Record)
# msgpack stops at 64-bit integers, but amounts are uint128 (1e20 atoms is 100 WETH). A record
# that does not fit is written as JSON instead; both decode by their first byte ('[' is JSON,
# an array_like msgpack record starts with an array marker), so the fast path stays msgpack.
_json_enc = msgspec.json.Encoder()
_rec_json_dec = msgspec.json.Decoder(Record)
_snap_json_dec = msgspec.json.Decoder(SnapshotFile)
_JSON_START = ord("[")


def frame(payload: bytes) -> bytes:
    """Length- and CRC-prefix one payload."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def unframe(buf: bytes, offset: int) -> tuple[bytes, int] | None:
    """The payload of the record at ``offset`` and the offset after it, or None when the bytes
    there are not a whole, intact record (end of data or a torn/corrupt tail)."""
    parts: list[bytes] = []
    ends: list[int] = []
    scan(buf, offset, 1, parts, ends)
    return (parts[0], ends[0]) if parts else None


def encode_record(seq: int, cmd: Command) -> bytes:
    """A framed journal record (msgpack, or JSON when a value exceeds 64 bits)."""
    rec = Record(seq, cmd)
    try:
        return frame(_enc.encode(rec))
    except OverflowError:
        return frame(_json_enc.encode(rec))


def decode_record(payload: bytes) -> Record:
    """Decode one record payload written by :func:`encode_record`."""
    if payload[:1] and payload[0] == _JSON_START:
        return _rec_json_dec.decode(payload)
    return _rec_dec.decode(payload)


def iter_records(buf: bytes, offset: int = 0) -> Iterator[tuple[Record, int]]:
    """Decode records from ``offset`` until the data ends or a torn record; yields each record
    with the offset just after it."""
    dec = decode_record
    while True:
        got = unframe(buf, offset)
        if got is None:
            return
        payload, offset = got
        yield dec(payload), offset


# a run of msgpack payloads is decoded as one msgpack array (array32 header + the payloads).
# A Record is array_like, so each decodes as a (seq, command) tuple: no Record object to
# build per record, and the compiled replay loop unpacks a tuple instead of reading two
# attributes through the generic getattr
_batch_dec = msgspec.msgpack.Decoder(list[tuple[int, Command]])
_ARRAY32 = struct.Struct(">BI")
BATCH = 65536  # records per decoder call in :func:`iter_record_batches`


def _decode_batch(parts: list[bytes]) -> list[tuple[int, Command]]:
    """Decode framed payloads in order to (seq, command) pairs, with one decoder call when all
    are msgpack."""
    try:
        recs = _batch_dec.decode(b"".join([_ARRAY32.pack(0xDD, len(parts)), *parts]))
    except msgspec.DecodeError:
        # a JSON record (its '[' is a msgpack int, not a Record) or a bad payload: one by one,
        # so the error (if any) is the one decode_record raises
        return [(r.seq, r.cmd) for r in (decode_record(p) for p in parts)]
    if len(recs) != len(parts):  # pragma: no cover - the array header fixes the count
        raise msgspec.DecodeError("journal batch decoded to the wrong number of records")
    return recs


def iter_record_batches(
    buf: bytes, offset: int = 0, batch: int = BATCH
) -> Iterator[tuple[list[tuple[int, Command]], list[int]]]:
    """:func:`iter_records` in batches, for recovery: yields ((seq, command) pairs, end
    offsets) of up to ``batch`` records at a time. Frames are checked (length and CRC,
    stopping at the first torn or corrupt one, like :func:`unframe`) in a compiled loop, and
    a batch of msgpack payloads is decoded with a single decoder call."""
    while True:
        parts: list[bytes] = []
        ends: list[int] = []
        offset = scan(buf, offset, batch, parts, ends)
        if not parts:
            return
        yield _decode_batch(parts), ends
        if len(parts) < batch:
            return


class JournalWriter:
    """Appends framed records to a journal file (created if missing)."""

    def __init__(self, path: str | Path, fsync: str = FSYNC_EVERY_RECORD) -> None:
        if fsync not in (FSYNC_EVERY_RECORD, FSYNC_BY_SHELL):
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self.path = Path(path)
        self.fsync_policy = fsync
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.offset = os.fstat(self._fd).st_size
        self._dirty = False

    def append(self, seq: int, cmd: Command) -> int:
        """Write one record (and fsync it under FSYNC_EVERY_RECORD) before returning; returns
        the journal offset after it. Call this before releasing the command's ack."""
        data = encode_record(seq, cmd)
        n = os.write(self._fd, data)
        while n < len(data):  # regular files take it all at once; be safe anyway
            n += os.write(self._fd, data[n:])
        self.offset += len(data)
        if self.fsync_policy == FSYNC_EVERY_RECORD:
            os.fsync(self._fd)
        else:
            self._dirty = True
        return self.offset

    def sync(self, force: bool = False) -> None:
        """fsync what was written (the shell's timer under FSYNC_BY_SHELL). ``force``: also
        when nothing is marked dirty (a :meth:`begin_sync` fsync may still be running)."""
        if self._dirty or force:
            os.fsync(self._fd)
            self._dirty = False

    def begin_sync(self) -> int | None:
        """For a shell that fsyncs off its event loop: the descriptor to fsync if anything was
        written since the last sync, else None. The dirty flag is cleared *before* the caller's
        fsync, so a record appended while that fsync runs marks the journal dirty again and the
        next sync covers it (fsync flushes everything written before it starts)."""
        if not self._dirty:
            return None
        self._dirty = False
        return self._fd

    def close(self) -> None:
        """Sync and close the file."""
        self.sync()
        os.close(self._fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(directory: str | Path, engine: Engine, journal_offset: int) -> Path:
    """Atomically write the engine's snapshot (tmp + fsync + rename); returns its path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    snap = SnapshotFile(engine.cmd_seq, journal_offset, engine.snapshot())
    # JSON: snapshots hold balances beyond 64 bits and are written and read rarely
    data = frame(_json_enc.encode(snap))
    final = d / f"snapshot-{engine.cmd_seq:016d}.bin"
    tmp = final.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(d)
    return final


def load_latest_snapshot(directory: str | Path) -> SnapshotFile | None:
    """The newest snapshot that passes its CRC (a damaged one is skipped), or None."""
    d = Path(directory)
    if not d.is_dir():
        return None
    for p in sorted(d.glob("snapshot-*.bin"), reverse=True):
        got = unframe(p.read_bytes(), 0)
        if got is not None:
            return _snap_json_dec.decode(got[0])
    return None


class JournalError(RuntimeError):
    """The journal does not continue the snapshot (a gap or reordering of records)."""


class JournalWriteFailed(JournalError):
    """A record could not be written after the engine applied its command: the in-memory state
    is now ahead of the journal, so the process must stop and recover from the journal."""


@dataclass
class Recovery:
    """Outcome of :func:`recover`."""

    engine: Engine
    journal_offset: int  # valid length of the journal (the file was truncated to it)
    replayed: int  # records replayed on top of the snapshot
    truncated: int  # bytes of torn tail removed


def _apply_records(engine: Engine, records: list[tuple[int, Command]]) -> tuple[int, int]:
    """:meth:`Engine.replay_records` through :meth:`Engine.apply` (the reference path)."""
    replayed = 0
    for i, (seq, cmd) in enumerate(records):
        if seq > engine.cmd_seq:
            if seq != engine.cmd_seq + 1:
                return i, replayed
            res: Result = engine.apply(cmd)
            if not res.journal:
                return i, replayed
            replayed += 1
    return len(records), replayed


def recover(
    journal_path: str | Path,
    snapshot_dir: str | Path | None = None,
    config: EngineConfig | None = None,
    *,
    truncate: bool = True,
    fast: bool = True,
) -> Recovery:
    """Rebuild the engine: newest snapshot (if any) + replay of the journal after it.

    A torn last record is cut off (``truncate``) so the writer can append after it. ``fast``
    replays through :meth:`Engine.replay` (no client outputs; the same state as ``apply``);
    ``fast=False`` uses :meth:`Engine.apply` for every record (the reference path).
    """
    snap = load_latest_snapshot(snapshot_dir) if snapshot_dir is not None else None
    if snap is not None:
        engine = Engine.restore(snap.engine, config)
        offset = snap.journal_offset
    else:
        engine = Engine(config)
        offset = 0
    path = Path(journal_path)
    buf = path.read_bytes() if path.exists() else b""
    if offset > len(buf):
        raise JournalError("snapshot covers more journal than exists")
    engine.replaying = True
    replayed = 0
    # the replay builds millions of objects and no cyclic garbage: with the collector on, its
    # generation-2 passes over the growing engine would cost seconds of a million-record replay
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for recs, ends in iter_record_batches(buf, offset):
            done, n = engine.replay_records(recs) if fast else _apply_records(engine, recs)
            replayed += n
            if done:
                offset = ends[done - 1]
            if done < len(recs):
                seq = recs[done][0]
                if seq != engine.cmd_seq + 1:
                    raise JournalError(f"journal gap: expected {engine.cmd_seq + 1}, got {seq}")
                raise JournalError(f"record {seq} changed nothing on replay")
    finally:
        engine.replaying = False
        if gc_was_on:
            gc.enable()
    cut = len(buf) - offset
    if cut and truncate:
        with open(path, "r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())
    return Recovery(engine, offset, replayed, cut)


class JournaledEngine:
    """An engine with its journal: :meth:`submit` applies a command and journals it (when it
    changed state) before returning the result, so the caller may release the ack right away.
    Takes a snapshot every ``snapshot_every`` journaled commands (0: never)."""

    def __init__(
        self,
        engine: Engine,
        writer: JournalWriter,
        snapshot_dir: str | Path | None = None,
        snapshot_every: int = 0,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.snapshot_dir = snapshot_dir
        self.snapshot_every = snapshot_every
        self._since = 0

    def submit(self, cmd: Command) -> Result:
        """Apply, journal, maybe snapshot; then the ack in the result may be released."""
        res = self.engine.apply(cmd)
        if res.journal:
            try:
                self.writer.append(res.ack.seq, cmd)
            except Exception as exc:
                raise JournalWriteFailed(f"journal write of command {res.ack.seq} failed: {exc}") from exc
            if self.snapshot_every and self.snapshot_dir is not None:
                self._since += 1
                if self._since >= self.snapshot_every:
                    self._since = 0
                    write_snapshot(self.snapshot_dir, self.engine, self.writer.offset)
        return res


__all__ = [
    "FSYNC_BY_SHELL", "FSYNC_EVERY_RECORD", "HEADER_SIZE", "JournalError", "JournalWriteFailed",
    "JournalWriter", "decode_record",
    "JournaledEngine", "Record", "Recovery", "SnapshotFile", "encode_record", "frame",
    "iter_record_batches", "iter_records", "load_latest_snapshot", "recover", "unframe", "write_snapshot",
]
