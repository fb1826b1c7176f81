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

Segments: the journal is a series of files so that it can be deleted from the front. Records are
appended to the *active* segment (the journal path itself, e.g. ``journal.bin``); once it holds
``segment_bytes`` the writer fsyncs it and renames it to ``journal.bin.<first seq>`` (a *sealed*
segment, named by the sequence number of its first record) and starts a new active file. Sealed
segments older than the oldest snapshot kept are deleted (:func:`prune_segments`), so the disk
holds the journal since that snapshot, not the exchange's whole history, and recovery reads only
what it replays.

Snapshots are the engine's :meth:`matcher.engine.Engine.snapshot` plus the journal position it
covers (the segment's first sequence number and the offset in it), written to
``snapshot-<seq>.bin`` atomically (tmp file, fsync, rename, fsync dir).
Recovery = newest valid snapshot + replay of the journal from its offset, without signature
checks (intake verified them before journaling) and without the pre-trade check (a journaled
order was accepted, and the check is a function of journaled state).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import msgspec

from crossbook import gc_policy
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
    ``journal_offset`` of the segment whose first record is ``segment``."""

    seq: int
    journal_offset: int
    engine: EngineSnapshot
    # additive, defaulted: 0 in snapshots written before segments (the offset is then in the
    # active file); recovery finds its segment by ``seq`` anyway and only uses the offset to
    # start without decoding the records the snapshot covers
    segment: int = 0


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


def sealed_path(path: str | Path, first_seq: int) -> Path:
    """The name of the sealed segment of the journal at ``path`` whose first record is
    ``first_seq``."""
    p = Path(path)
    return p.with_name(f"{p.name}.{first_seq:016d}")


def sealed_segments(path: str | Path) -> list[tuple[int, Path]]:
    """(first seq, path) of every sealed segment of the journal at ``path``, oldest first."""
    p = Path(path)
    out: list[tuple[int, Path]] = []
    for q in p.parent.glob(p.name + ".*"):
        suffix = q.name[len(p.name) + 1:]
        if len(suffix) == 16 and suffix.isdigit():
            out.append((int(suffix), q))
    out.sort()
    return out


def first_seq(path: str | Path) -> int | None:
    """The sequence number of the first record in the file at ``path`` (None: missing, empty,
    or a torn first record)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                return None
            length, _ = _HEADER.unpack(head)
            got = unframe(head + f.read(length), 0)
    except FileNotFoundError:
        return None
    return decode_record(got[0]).seq if got is not None else None


def prune_segments(path: str | Path, keep_from: int) -> list[Path]:
    """Delete the sealed segments of the journal at ``path`` that hold only records before
    ``keep_from`` (the oldest snapshot kept covers them); returns the deleted paths. The active
    file and the segment holding ``keep_from`` always stay."""
    segs = sealed_segments(path)
    gone: list[Path] = []
    for i in range(len(segs) - 1):
        if segs[i + 1][0] <= keep_from:  # segment i ends at the next one's first record - 1
            segs[i][1].unlink(missing_ok=True)
            gone.append(segs[i][1])
    if segs and segs[-1][0] <= keep_from:
        active = first_seq(path)
        if active is not None and active <= keep_from:
            segs[-1][1].unlink(missing_ok=True)
            gone.append(segs[-1][1])
    if gone:
        _fsync_dir(Path(path).parent)
    return gone


def iter_journal(path: str | Path) -> Iterator[Record]:
    """Every intact record of the journal at ``path``, sealed segments first, oldest first
    (for tools and tests that read the whole history still on disk)."""
    p = Path(path)
    files = [q for _, q in sealed_segments(p)] + ([p] if p.exists() else [])
    for q in files:
        for rec, _ in iter_records(q.read_bytes()):
            yield rec


SEGMENT_BYTES = 256 * 1024 * 1024  # a sealed segment holds about a million records


class JournalWriter:
    """Appends framed records to a journal's active segment (created if missing); seals it and
    starts the next one every ``segment_bytes`` (0: never)."""

    def __init__(self, path: str | Path, fsync: str = FSYNC_EVERY_RECORD,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        if fsync not in (FSYNC_EVERY_RECORD, FSYNC_BY_SHELL):
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self.path = Path(path)
        self.fsync_policy = fsync
        self.segment_bytes = segment_bytes
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.offset = os.fstat(self._fd).st_size
        # first record of the active segment (0 until one is written): a snapshot names it
        self.segment = (first_seq(self.path) or 0) if self.offset else 0
        self._dirty = False
        # descriptors of sealed segments, closed once no shell fsync can still be using them
        self._retired: list[int] = []

    def fileno(self) -> int:
        """The active segment's descriptor (a forked snapshot child fsyncs through it)."""
        return self._fd

    def append(self, seq: int, cmd: Command) -> int:
        """Write one record (and fsync it under FSYNC_EVERY_RECORD) before returning; returns
        the journal offset after it. Call this before releasing the command's ack."""
        data = encode_record(seq, cmd)
        n = os.write(self._fd, data)
        while n < len(data):  # regular files take it all at once; be safe anyway
            n += os.write(self._fd, data[n:])
        if not self.segment:
            self.segment = seq
        self.offset += len(data)
        if self.fsync_policy == FSYNC_EVERY_RECORD:
            os.fsync(self._fd)
        else:
            self._dirty = True
        if self.segment_bytes and self.offset >= self.segment_bytes:
            self._seal(seq + 1)
        return self.offset

    def _seal(self, next_seq: int) -> None:
        """Make the active segment durable, rename it to its sealed name and open a new active
        file whose first record will be ``next_seq``. A crash at any point leaves either the
        old active file or the sealed one plus no (or an empty) active file: recovery reads
        both layouts."""
        os.fsync(self._fd)
        os.replace(self.path, sealed_path(self.path, self.segment))
        self._retired.append(self._fd)  # the shell's fsync thread may hold it right now
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_dir(self.path.parent)
        self.offset = 0
        self.segment = next_seq
        self._dirty = False

    def _close_retired(self) -> None:
        while self._retired:
            os.close(self._retired.pop())

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
        next sync covers it (fsync flushes everything written before it starts). The shell
        calls this again only after its previous fsync returned, so sealed segments' retired
        descriptors are closed here."""
        self._close_retired()
        if not self._dirty:
            return None
        self._dirty = False
        return self._fd

    def close(self) -> None:
        """Sync and close the file."""
        self.sync()
        self._close_retired()
        os.close(self._fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(directory: str | Path, engine: Engine, journal_offset: int,
                   segment: int = 0) -> Path:
    """Atomically write the engine's snapshot (tmp + fsync + rename); returns its path.
    ``journal_offset`` is in the segment whose first record is ``segment`` (the writer's
    ``offset`` and ``segment``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    snap = SnapshotFile(engine.cmd_seq, journal_offset, engine.snapshot(), segment)
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


def snapshot_files(directory: str | Path) -> list[tuple[int, Path]]:
    """(cmd_seq, path) of the snapshots :func:`write_snapshot` wrote to ``directory``, oldest
    first (by name: no file is read)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = ((p.stem[len("snapshot-"):], p) for p in d.glob("snapshot-*.bin"))
    return sorted((int(seq), p) for seq, p in found if seq.isdigit())


def read_snapshot(path: str | Path) -> SnapshotFile | None:
    """One snapshot file, or None when it is torn or fails its CRC.

    A snapshot is one frame that fills its file, checked here without the journal's record
    size bound (framing.MAX_RECORD): a busy day's state outgrows 64 MiB, and a reader that
    took such a snapshot for a damaged one found its journal already pruned and could not
    start at all."""
    buf = Path(path).read_bytes()
    if len(buf) < HEADER_SIZE:
        return None
    length, crc = _HEADER.unpack_from(buf, 0)
    if length != len(buf) - HEADER_SIZE:
        return None
    payload = memoryview(buf)[HEADER_SIZE:]
    if zlib.crc32(payload) != crc:
        return None
    return _snap_json_dec.decode(payload)


def load_latest_snapshot(directory: str | Path) -> SnapshotFile | None:
    """The newest snapshot that passes its CRC (a damaged one is skipped), or None."""
    for _, p in reversed(snapshot_files(directory)):
        snap = read_snapshot(p)
        if snap is not None:
            return snap
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
    journal_offset: int  # valid length of the active segment (the file was truncated to it)
    replayed: int  # records replayed on top of the snapshot
    truncated: int  # bytes of torn tail removed
    # with ``outputs_after``: the commands after it, with their results (outputs included)
    unpublished: list[tuple[Command, Result]] = field(default_factory=list)
    # ... and whether those are all of them (False: the snapshot lies after ``outputs_after``)
    unpublished_complete: bool = False


@dataclass
class _Chain:
    """The journal bytes a recovery replays: the segment holding the first record after the
    snapshot (from the snapshot's offset when it names that segment) and every later one,
    concatenated; ``active_at`` is where the active file's bytes begin in ``buf`` (None: no
    active file) and ``active_base`` the file offset they begin at."""

    buf: bytes
    active_at: int | None
    active_base: int


def _read_from(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


def _journal_chain(path: Path, snap: SnapshotFile | None) -> _Chain:
    """Read the segments a recovery needs (see :class:`_Chain`)."""
    files: list[tuple[int | None, Path]] = list(sealed_segments(path))
    n_sealed = len(files)
    if path.exists():
        # an empty active file, or one whose first record is torn, has no first seq: it can only
        # be the tail of the chain
        files.append((first_seq(path), path))
    if not files:
        if snap is not None and snap.journal_offset:
            raise JournalError("snapshot covers more journal than exists")
        return _Chain(b"", None, 0)
    want = snap.seq + 1 if snap is not None else 1
    start, offset = -1, 0
    if snap is not None:
        if not snap.segment:  # written before segments: the offset is in the only file
            if n_sealed == 0:
                start, offset = 0, snap.journal_offset
        else:
            for i, (first, _) in enumerate(files):
                if first == snap.segment:
                    start, offset = i, snap.journal_offset
            if start < 0 and files[-1][0] is None and n_sealed < len(files):
                # the snapshot's segment is the active file, still empty (or torn) now
                start, offset = len(files) - 1, snap.journal_offset
    if start < 0:
        # by sequence number: the segment holding record `want`; the replay skips the records
        # of it that the snapshot covers
        start = 0
        for i, (first, _) in enumerate(files):
            if first is not None and first <= want:
                start = i
        first0 = files[start][0]
        if first0 is not None and first0 > want:
            raise JournalError(f"the journal begins at record {first0}; records from {want} "
                               "on, which the newest snapshot does not cover, were deleted")
    parts: list[bytes] = []
    at = 0
    active_at: int | None = None
    active_base = 0
    for i in range(start, len(files)):
        skip = offset if i == start else 0
        data = _read_from(files[i][1], skip)
        if i == start and skip and not data and os.path.getsize(files[i][1]) < skip:
            raise JournalError("snapshot covers more journal than exists")
        if i >= n_sealed:
            active_at, active_base = at, skip
        parts.append(data)
        at += len(data)
    return _Chain(parts[0] if len(parts) == 1 else b"".join(parts), active_at, active_base)


def _apply_records(engine: Engine, records: list[tuple[int, Command]],
                   results: list[tuple[Command, Result]] | None = None) -> tuple[int, int]:
    """:meth:`Engine.replay_records` through :meth:`Engine.apply` (the reference path); each
    command replayed is appended to ``results`` with its result when given."""
    replayed = 0
    for i, (seq, cmd) in enumerate(records):
        if seq > engine.cmd_seq:
            if seq != engine.cmd_seq + 1:
                return i, replayed
            res: Result = engine.apply(cmd)
            if not res.journal:
                return i, replayed
            if results is not None:
                results.append((cmd, res))
            replayed += 1
    return len(records), replayed


def recover(
    journal_path: str | Path,
    snapshot_dir: str | Path | None = None,
    config: EngineConfig | None = None,
    *,
    truncate: bool = True,
    fast: bool = True,
    outputs_after: int | None = None,
) -> Recovery:
    """Rebuild the engine: newest snapshot (if any) + replay of the journal after it (the
    segments from the one holding the first record the snapshot does not cover).

    A torn last record of the active segment is cut off (``truncate``) so the writer can
    append after it. ``fast`` replays through :meth:`Engine.replay` (no client outputs; the same state as ``apply``);
    ``fast=False`` uses :meth:`Engine.apply` for every record (the reference path).
    ``outputs_after``: the records after that command are applied with :meth:`Engine.apply`
    and returned with their results (:attr:`Recovery.unpublished`), for a caller whose own
    record of the outputs (matcher/fill_log.py) ends there.
    """
    snap = load_latest_snapshot(snapshot_dir) if snapshot_dir is not None else None
    engine = Engine.restore(snap.engine, config) if snap is not None else Engine(config)
    path = Path(journal_path)
    chain = _journal_chain(path, snap)
    buf = chain.buf
    offset = 0
    engine.replaying = True
    replayed = 0
    unpublished: list[tuple[Command, Result]] = []
    fast_until = outputs_after if outputs_after is not None else 2**63
    # the replay builds millions of objects and no cyclic garbage: with the collector on, its
    # generation-2 passes over the growing engine would cost seconds of a million-record replay
    try:
        with gc_policy.paused():
            for recs, ends in iter_record_batches(buf, offset):
                k = len(recs)
                if recs[-1][0] > fast_until:  # the records after it are applied with outputs
                    k = next(i for i, (seq, _) in enumerate(recs) if seq > fast_until)
                head = recs if k == len(recs) else recs[:k]
                done, n = engine.replay_records(head) if fast else _apply_records(engine, head)
                if done == k < len(recs):
                    more, n2 = _apply_records(engine, recs[k:], unpublished)
                    done, n = done + more, n + n2
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
    cut = len(buf) - offset
    # the outputs of every command after outputs_after were rebuilt unless a snapshot covers
    # some of them (their outputs are then beyond reach)
    complete = outputs_after is not None and (snap is None or snap.seq <= outputs_after)
    if chain.active_at is None:
        if cut:
            raise JournalError("a sealed journal segment is damaged (no active segment after it)")
        return Recovery(engine, 0, replayed, 0, unpublished, complete)
    if offset < chain.active_at:
        raise JournalError(f"a sealed journal segment is damaged after record {engine.cmd_seq}")
    valid = chain.active_base + offset - chain.active_at
    if cut and truncate:
        cut_tail(path, valid)
    return Recovery(engine, valid, replayed, cut, unpublished, complete)


def cut_tail(path: str | Path, valid: int) -> None:
    """Cut the active journal segment at ``path`` to its first ``valid`` bytes (a torn tail
    :func:`recover` found, with ``truncate=False``, and the caller judged torn) and sync it."""
    with open(path, "r+b") as f:
        f.truncate(valid)
        f.flush()
        os.fsync(f.fileno())


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
                    write_snapshot(self.snapshot_dir, self.engine, self.writer.offset,
                                   self.writer.segment)
        return res


__all__ = [
    "FSYNC_BY_SHELL", "FSYNC_EVERY_RECORD", "HEADER_SIZE", "JournalError", "JournalWriteFailed",
    "JournalWriter", "decode_record",
    "JournaledEngine", "Record", "Recovery", "SnapshotFile", "encode_record", "frame",
    "iter_journal", "iter_record_batches", "iter_records", "load_latest_snapshot",
    "prune_segments", "recover", "sealed_path", "sealed_segments", "snapshot_files", "unframe",
    "write_snapshot",
]
