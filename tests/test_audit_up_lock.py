"""One `crossbook up` per state directory.

With free ports (`--port 0 ...`, the documented way to run beside another stack) nothing
collided, so a second `up` on the same home came up next to the first: a second anvil saving
into the same state file and a second matcher appending to the same journal, whose interleaved
records the next recovery found damaged. The second `up` must refuse, naming the first one's pid.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.supervised import Up

pytestmark = pytest.mark.timeout(180)


def _wait_for(up: Up, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in up.text():
        if up.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not printed:\n{up.text()[-3000:]}")
        time.sleep(0.2)


def test_a_second_up_on_the_same_home_is_refused(tmp_path: Path) -> None:
    first = Up(tmp_path, ["--chain-only"])
    second: Up | None = None
    try:
        _wait_for(first, "chain only (--chain-only)", 120)
        second = Up(tmp_path, ["--chain-only"])
        try:
            rc = second.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - still running: it came up beside the first
            pytest.fail(f"a second up ran on the same home:\n{second.text()[-3000:]}")
        assert rc == 1
        assert f"another `crossbook up` (pid {first.proc.pid}) is running on {tmp_path}" in second.text()
        assert first.proc.poll() is None  # the first one is untouched
        assert first.stop() == 0
        third = Up(tmp_path, ["--chain-only"])  # the lock went with the first process
        try:
            _wait_for(third, "chain only (--chain-only)", 120)
        finally:
            third.kill_if_running()
    finally:
        first.kill_if_running()
        if second is not None:
            second.kill_if_running()
