"""Journal framing, snapshots, recovery, and a kill -9 crash test (brief invariant 7)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import engine_helpers
from engine_helpers import random_commands
from matcher.commands import CancelOrder, Command
from matcher.engine import Engine
from matcher.journal import (
    FSYNC_BY_SHELL,
    FSYNC_EVERY_RECORD,
    HEADER_SIZE,
    JournalError,
    JournaledEngine,
    JournalWriter,
    encode_record,
    frame,
    iter_journal,
    iter_records,
    recover,
    sealed_segments,
    unframe,
    write_snapshot,
)

ROOT = Path(__file__).resolve().parents[2]


def _journal(tmp: Path, cmds: list[Command], *, snap_every: int = 0,
             fsync: str = FSYNC_BY_SHELL) -> Engine:
    w = JournalWriter(tmp / "journal.bin", fsync)
    je = JournaledEngine(Engine(), w, tmp / "snaps", snap_every)
    for c in cmds:
        je.submit(c)
    w.close()
    return je.engine


def test_frame_roundtrip_and_corruption() -> None:
    data = frame(b"hello") + frame(b"") + frame(b"x" * 1000)
    got = []
    off = 0
    while (r := unframe(data, off)) is not None:
        payload, off = r
        got.append(payload)
    assert got == [b"hello", b"", b"x" * 1000] and off == len(data)
    bad = bytearray(data)
    bad[HEADER_SIZE + 1] ^= 1  # flip a payload bit of the first record
    assert unframe(bytes(bad), 0) is None
    for cut in range(1, len(frame(b"hello"))):
        assert unframe(frame(b"hello")[:cut], 0) is None


def test_replay_gives_identical_state(tmp_path: Path) -> None:
    cmds = random_commands(seed=31, n=1500)
    eng = _journal(tmp_path, cmds)
    rec = recover(tmp_path / "journal.bin")
    assert rec.truncated == 0 and rec.replayed == eng.cmd_seq
    assert rec.engine.state_hash() == eng.state_hash()
    # a fresh engine (no replay shortcuts) fed the journaled commands agrees as well
    fresh = Engine()
    for r, _ in iter_records((tmp_path / "journal.bin").read_bytes()):
        assert fresh.apply(r.cmd).ack.seq == r.seq
    assert fresh.state_hash() == eng.state_hash()


def test_snapshot_plus_tail(tmp_path: Path) -> None:
    cmds = random_commands(seed=32, n=1500)
    eng = _journal(tmp_path, cmds, snap_every=400, fsync=FSYNC_EVERY_RECORD)
    snaps = sorted((tmp_path / "snaps").glob("snapshot-*.bin"))
    assert len(snaps) >= 2
    rec = recover(tmp_path / "journal.bin", tmp_path / "snaps")
    assert rec.replayed < eng.cmd_seq  # started from a snapshot
    assert rec.engine.state_hash() == eng.state_hash()
    # a damaged newest snapshot is skipped in favour of the previous one
    snaps[-1].write_bytes(snaps[-1].read_bytes()[:-3])
    rec2 = recover(tmp_path / "journal.bin", tmp_path / "snaps")
    assert rec2.engine.state_hash() == eng.state_hash()
    assert rec2.replayed > rec.replayed


def test_torn_tail_is_truncated_and_appending_resumes(tmp_path: Path) -> None:
    cmds = random_commands(seed=33, n=300)
    eng = _journal(tmp_path, cmds)
    path = tmp_path / "journal.bin"
    full = path.read_bytes()
    whole = len(full)
    # a torn record: the header and half the payload of one more record
    extra = encode_record(eng.cmd_seq + 1, cmds[-1])
    path.write_bytes(full + extra[: len(extra) // 2])
    rec = recover(path)
    assert rec.truncated == len(extra) // 2 and rec.journal_offset == whole
    assert path.stat().st_size == whole
    assert rec.engine.state_hash() == eng.state_hash()
    # cut inside the last real record: recovery equals the engine fed one record less
    records = list(iter_records(full))
    prev_end = records[-2][1]
    path.write_bytes(full[: prev_end + 5])
    rec = recover(path)
    fresh = Engine()
    for r, _ in records[:-1]:
        fresh.apply(r.cmd)
    assert rec.engine.state_hash() == fresh.state_hash()


def test_snapshot_of_restored_engine(tmp_path: Path) -> None:
    cmds = random_commands(seed=34, n=600)
    eng = _journal(tmp_path, cmds)
    write_snapshot(tmp_path / "s", eng, (tmp_path / "journal.bin").stat().st_size)
    rec = recover(tmp_path / "journal.bin", tmp_path / "s")
    assert rec.replayed == 0 and rec.engine.state_hash() == eng.state_hash()


CHILD = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from engine_helpers import random_commands
    from matcher.journal import JournalWriter, JournaledEngine, recover, FSYNC_BY_SHELL
    d = {dir!r}
    cmds = random_commands(seed=77, n={n})
    index = {{c.req_id: i for i, c in enumerate(cmds)}}
    rec = recover(d + "/journal.bin", d + "/snaps")
    eng = rec.engine
    # resume after the last journaled command (rejected ones after it are simply redone)
    start = 0
    from matcher.journal import iter_journal
    last = None
    for r in iter_journal(d + "/journal.bin"):
        last = r
    if last is not None:
        start = index[last.cmd.req_id] + 1
    # small segments: the kills also land around seals of the active file
    w = JournalWriter(d + "/journal.bin", FSYNC_BY_SHELL, segment_bytes=16384)
    je = JournaledEngine(eng, w, d + "/snaps", 97)
    out = sys.stdout
    print("READY", start, flush=True)
    for i in range(start, len(cmds)):
        res = je.submit(cmds[i])
        out.write(f"ACK {{i}} {{res.ack.seq}}\\n")
        out.flush()
    print("DONE", flush=True)
    """
)


@pytest.mark.timeout(300)
def test_kill_minus_9_recovery(tmp_path: Path) -> None:
    n = 2500
    engine_helpers._req[0] = 0  # the child generates the same stream from a fresh counter
    cmds = random_commands(seed=77, n=n)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), tests=str(ROOT / "tests" / "matcher"),
                                   dir=str(tmp_path), n=n))
    rng = random.Random(1234)
    acked: dict[int, int] = {}  # command index -> ack seq (0: not journaled)
    kills = 0
    done = False
    while not done:
        p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("READY"), line
        target = rng.randint(1, 400)
        seen = 0
        while True:
            line = p.stdout.readline()
            if not line or line.startswith("DONE"):
                done = True
                break
            _, idx, ack_seq = line.split()
            acked[int(idx)] = int(ack_seq)
            seen += 1
            if seen >= target and kills < 6:
                os.kill(p.pid, signal.SIGKILL)
                kills += 1
                break
        p.wait()
        # after every crash: recovery == a fresh engine fed the journaled prefix, and every
        # acknowledged (journaled) command is in the journal
        rec = recover(tmp_path / "journal.bin", tmp_path / "snaps", truncate=False)
        records = list(iter_journal(tmp_path / "journal.bin"))
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        fresh = Engine()
        for r in records:
            fresh.apply(r.cmd)
        assert rec.engine.state_hash() == fresh.state_hash()
        journaled = {r.cmd.req_id for r in records}
        for i, seq in acked.items():
            if seq:
                assert cmds[i].req_id in journaled and seq <= len(records)
    assert kills >= 5
    assert len(sealed_segments(tmp_path / "journal.bin")) >= 10
    # the end state equals one uninterrupted run
    ref = Engine()
    for c in cmds:
        ref.apply(c)
    rec = recover(tmp_path / "journal.bin", tmp_path / "snaps")
    assert rec.engine.state_hash() == ref.state_hash()


def test_amounts_beyond_64_bits_survive_journal_and_snapshot(tmp_path: Path) -> None:
    """A 100 WETH deposit is 1e20 atoms: msgpack cannot hold it, the journal must anyway."""
    from matcher.commands import ChainDeposit

    big = 100 * 10**18
    cmds: list[Command] = [ChainDeposit(1, engine_helpers.addr(1), 0, 1, big),
                           ChainDeposit(2, engine_helpers.addr(2), 0, 0, 2**100)]
    cmds += random_commands(seed=34, n=50)
    eng = _journal(tmp_path, cmds, snap_every=1, fsync=FSYNC_EVERY_RECORD)
    assert eng.ledger.account((engine_helpers.addr(1).lower(), 0)).collateral[1] == big
    rec = recover(tmp_path / "journal.bin")  # journal only
    assert rec.engine.state_hash() == eng.state_hash()
    rec2 = recover(tmp_path / "journal.bin", tmp_path / "snaps")  # snapshot + tail
    assert rec2.engine.state_hash() == eng.state_hash()
    assert rec2.engine.ledger.account((engine_helpers.addr(2).lower(), 0)).quote == 2**100


@pytest.mark.parametrize("seed", [41, 42, 43])
def test_fast_replay_matches_apply_in_lock_step(tmp_path: Path, seed: int) -> None:
    """``Engine.replay`` (recovery's output-free path) changes state exactly like ``apply``:
    same journal verdict per record and the same state hash along the way and at the end."""
    cmds = random_commands(seed=seed, n=1200)
    eng = _journal(tmp_path, cmds)
    ref, fast = Engine(), Engine()
    ref.replaying = fast.replaying = True
    for i, (r, _) in enumerate(iter_records((tmp_path / "journal.bin").read_bytes())):
        assert ref.apply(r.cmd).journal
        assert fast.replay(r.cmd)
        assert fast.cmd_seq == ref.cmd_seq == r.seq
        if i % 97 == 0:
            assert fast.state_hash() == ref.state_hash()
            assert fast.next_oid == ref.next_oid and fast.open_count == ref.open_count
    assert fast.state_hash() == ref.state_hash() == eng.state_hash()
    # recover() with either path, and the reference path of recover, agree
    got = recover(tmp_path / "journal.bin", truncate=False)
    slow = recover(tmp_path / "journal.bin", truncate=False, fast=False)
    assert got.engine.state_hash() == slow.engine.state_hash() == eng.state_hash()
    assert got.replayed == slow.replayed == eng.cmd_seq


def test_record_batches_equal_single_records(tmp_path: Path) -> None:
    """Batched framing/decoding yields the same records and offsets as ``iter_records``,
    across batch boundaries, JSON records mid-batch and a torn or corrupt record."""
    from matcher.commands import ChainDeposit
    from matcher.journal import iter_record_batches

    cmds: list[Command] = random_commands(seed=44, n=120)
    cmds.insert(40, ChainDeposit(1, engine_helpers.addr(1), 0, 0, 2**100))  # a JSON record
    _journal(tmp_path, cmds)
    full = (tmp_path / "journal.bin").read_bytes()
    single = list(iter_records(full))
    bad = bytearray(full)
    bad[single[70][1] + HEADER_SIZE + 2] ^= 0xFF  # corrupt record 72's payload
    for data in (full, full[:-7], bytes(bad)):
        want = [(r.seq, r.cmd, end) for r, end in iter_records(data)]
        for batch in (1, 7, 64, 4096):
            got = [(seq, cmd, end) for recs, ends in iter_record_batches(data, 0, batch)
                   for (seq, cmd), end in zip(recs, ends)]
            assert got == want
    start = single[10][1]
    got_tail = [seq for recs, _ in iter_record_batches(full, start, 16) for seq, _ in recs]
    assert got_tail == [r.seq for r, _ in iter_records(full, start)]


def test_fast_replay_of_cancel_replace_flow(tmp_path: Path) -> None:
    """The recovery benchmark's market-making flow (cancel-replace modifies into new signed
    orders, IOCs that fill, settlements, oracle moves) replays identically on the fast path."""
    from bench.recovery_bench import CONFIG, build_journal

    path = tmp_path / "journal.bin"
    eng = build_journal(path, 4000, seed=5)
    ref, fast = Engine(CONFIG), Engine(CONFIG)
    ref.replaying = fast.replaying = True
    kinds: set[str] = set()
    for i, (r, _) in enumerate(iter_records(path.read_bytes())):
        kinds.add(type(r.cmd).__name__)
        assert ref.apply(r.cmd).journal
        assert fast.replay(r.cmd)
        if i % 250 == 0:
            assert fast.state_hash() == ref.state_hash()
    assert {"PlaceOrder", "ModifyOrder", "CancelOrder", "ChainBatchSettled"} <= kinds
    assert eng.ledger.next_seq > 1  # some fills happened
    assert fast.state_hash() == ref.state_hash() == eng.state_hash()
    assert recover(path, None, CONFIG, truncate=False).engine.state_hash() == eng.state_hash()


@pytest.mark.parametrize("fast", [True, False])
def test_gap_and_noop_records_stop_recovery(tmp_path: Path, fast: bool) -> None:
    """A journal that skips a sequence number, or holds a record that changes nothing on
    replay, is refused with the record named (on both replay paths); the records before it
    were applied."""
    cmds = random_commands(5, 40)
    eng = _journal(tmp_path, cmds)
    path = tmp_path / "journal.bin"
    good = path.read_bytes()
    # a gap: the next record claims seq + 2
    path.write_bytes(good + encode_record(eng.cmd_seq + 2, cmds[0]))
    with pytest.raises(JournalError, match=f"journal gap: expected {eng.cmd_seq + 1}, "
                                           f"got {eng.cmd_seq + 2}"):
        recover(path, None, truncate=False, fast=fast)
    # a no-op: the right seq, but a cancel of an order that is not live
    noop = CancelOrder(0, engine_helpers.A, 10**9, 0, 0, None, engine_helpers.NOW)
    path.write_bytes(good + encode_record(eng.cmd_seq + 1, noop))
    with pytest.raises(JournalError, match=f"record {eng.cmd_seq + 1} changed nothing"):
        recover(path, None, truncate=False, fast=fast)
    # without the bad record the same journal recovers the writer's state
    path.write_bytes(good)
    assert recover(path, None, fast=fast).engine.state_hash() == eng.state_hash()


def test_recovery_runs_without_the_cyclic_gc_and_restores_it(tmp_path: Path) -> None:
    import gc

    eng = _journal(tmp_path, random_commands(seed=34, n=200))
    seen: list[bool] = []
    gc.callbacks.append(lambda phase, info: seen.append(phase == "start"))
    try:
        assert gc.isenabled()
        gc.set_threshold(1)  # would collect on nearly every allocation if it were on
        rec = recover(tmp_path / "journal.bin")
    finally:
        gc.set_threshold(700, 10, 10)
        gc.callbacks.pop()
    assert rec.engine.state_hash() == eng.state_hash()
    # some collections around the replay (reading the file, building the engine), none inside:
    # with the collector on during the replay, this journal gives ~850
    assert gc.isenabled() and sum(seen) < 150, sum(seen)
