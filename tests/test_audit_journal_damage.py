"""`crossbook matcher` on a journal damaged in the middle (a flipped byte, a bad disk block).

Recovery cuts the active journal at the first record that fails its CRC, which is right for a
torn tail (a crash tears only the last records) but, for damage in the middle, silently drops
every accepted command after it (fills and deposits the chain already settled). The matcher
must refuse to start, name the file and the byte, and leave the journal as it was; a torn tail
is still cut as before.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossbook.paths import REPO_ROOT
from matcher.engine import Engine
from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalWriter, encode_record, iter_records
from settlement.services import journal_damage
from tests.matcher.engine_helpers import random_commands

pytestmark = pytest.mark.timeout(120)


def _journal(d: Path, n: int = 400, segment_bytes: int = 256 * 1024 * 1024) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    w = JournalWriter(d / "journal.bin", FSYNC_BY_SHELL, segment_bytes=segment_bytes)
    je = JournaledEngine(Engine(), w)
    for c in random_commands(seed=7, n=n):
        je.submit(c)
    w.close()
    return d / "journal.bin"


def _deployment(path: Path) -> Path:
    # recovery runs before the matcher touches the chain: an unreachable RPC is never called
    zero = "0x" + "00" * 20
    path.write_text(json.dumps({
        "chain_id": 31337, "rpc_url": "http://127.0.0.1:1", "clearinghouse": zero, "oracle": zero,
        "tokens": {}, "feeds": {}, "admin": zero, "operator": zero, "start_block": 0}))
    return path


def _damage_middle(path: Path) -> tuple[int, bytes]:
    """Flip a byte inside a record near the middle; (that record's start, the original bytes)."""
    full = path.read_bytes()
    ends = [end for _, end in iter_records(full)]
    start = ends[len(ends) // 2]
    bad = bytearray(full)
    bad[start + 12] ^= 0xFF
    path.write_bytes(bytes(bad))
    return start, bytes(bad)


def test_damage_in_the_middle_is_named_a_torn_tail_is_not(tmp_path: Path) -> None:
    path = _journal(tmp_path / "m")
    full = path.read_bytes()
    extra = encode_record(10_000, random_commands(seed=7, n=2)[0])
    path.write_bytes(full + extra[: len(extra) // 2])
    assert journal_damage(path, len(full)) is None  # a torn last record: nothing whole follows
    path.write_bytes(full)
    start, _ = _damage_middle(path)
    why = journal_damage(path, start)
    assert why is not None and f"damaged at byte {start}" in why and str(path) in why


def _matcher(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    dep = _deployment(tmp_path / "deployment.json")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CROSSBOOK_LOG_FORMAT": "text"}
    env.pop("CROSSBOOK_HOME", None)
    argv = [sys.executable, "-m", "crossbook.cli", "matcher", "--journal-dir", str(tmp_path / "m"),
            "--deployment", str(dep), "--rpc-url", "http://127.0.0.1:1", "--port", "0",
            "--metrics-port", "0"]
    try:
        return subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the matcher started on a damaged journal: {exc.stderr!r}")


def test_matcher_refuses_a_journal_damaged_in_the_middle_and_keeps_it(tmp_path: Path) -> None:
    path = _journal(tmp_path / "m")
    start, damaged = _damage_middle(path)
    proc = _matcher(tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("matcher: journal ") and f"damaged at byte {start}" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert path.read_bytes() == damaged  # nothing cut


def test_a_damaged_sealed_segment_is_one_line_too(tmp_path: Path) -> None:
    path = _journal(tmp_path / "m", n=800, segment_bytes=16 * 1024)
    sealed = sorted(tmp_path.joinpath("m").glob("journal.bin.*"))
    assert sealed  # the journal spans several segments
    data = bytearray(sealed[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    sealed[0].write_bytes(bytes(data))
    size = path.stat().st_size
    proc = _matcher(tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"matcher: journal {path}: ") and "sealed journal segment is damaged" in last, last
    assert path.stat().st_size == size
