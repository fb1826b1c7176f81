"""The supervisor tells the operator why a child exited, not only that it did.

A live stack; the matcher is killed (-9) and, before its restart, its journal is damaged in the
middle (and the snapshots removed, so recovery reads the damage). The restarted matcher refuses
the journal with a one-line reason; `up` must print that reason on its console next to the exit
code, where before it printed only "matcher exited with 1; restarting in 2s (log ...)".
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from matcher.journal import iter_records
from tests.e2e.test_audit_anvil_loss import LIGHT
from tests.supervised import Up

pytestmark = pytest.mark.timeout(240)

def test_a_child_that_exits_with_a_reason_has_it_on_the_console(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    up = Up(home, LIGHT)
    try:
        up.wait_up()
        journal = home / "matcher" / "journal.bin"
        deadline = time.monotonic() + 30
        while len(list(iter_records(journal.read_bytes()))) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)  # the demo deposits reach the matcher through the watcher
        ends = [end for _, end in iter_records(journal.read_bytes())]
        assert len(ends) >= 4
        at = ends[len(ends) // 2 - 1] + 12  # inside a record in the middle
        os.kill(int(up.refresh()["services"]["matcher"]["pid"]), signal.SIGKILL)
        with open(journal, "r+b") as fh:  # within the 1 s restart backoff
            fh.seek(at)
            b = fh.read(1)
            fh.seek(at)
            fh.write(bytes([b[0] ^ 0xFF]))
        for snap in (home / "matcher" / "snapshots").glob("*"):
            snap.unlink()
        deadline = time.monotonic() + 60
        while "matcher exited with 1" not in up.text() and time.monotonic() < deadline:
            time.sleep(0.2)
        line = next((ln for ln in up.text().splitlines() if "matcher exited with 1" in ln), "")
        assert "matcher exited with 1: matcher: journal " in line and "is damaged at byte" in line, up.text()[-3000:]
        assert "restarting in" in line
        # a kill from outside has no reason in the child's log: none is made up from its last line
        assert "matcher exited with -9; restarting in" in up.text(), up.text()[-3000:]
    finally:
        up.kill_if_running()
