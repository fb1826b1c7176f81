"""`crossbook up` on a chain whose settled items its journal does not have (the journal
directory lost or replaced by an older copy).

Before, `up` came up: the matcher numbered new items from 1 while the contract waited for the
next seq after those it settled, so nothing settled again (the relayer waited forever) and every
position the matcher reported lacked the settled fills. It must refuse, naming both numbers, and
resume normally once the journal is back.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossbook.paths import REPO_ROOT
from tests.e2e.test_audit_anvil_loss import LIGHT
from tests.supervised import Up

pytestmark = pytest.mark.timeout(300)


def test_a_lost_journal_is_refused_and_its_return_resumes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    up = Up(home, LIGHT)
    try:
        up.wait_up()
        env = {**os.environ, "CROSSBOOK_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
        w = subprocess.run([sys.executable, "-m", "crossbook.cli", "withdraw", "10"], env=env, cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=120)
        assert w.returncode == 0 and "withdrew 10 USDC" in w.stdout, w.stdout + w.stderr
        assert up.stop() == 0
    finally:
        up.kill_if_running()
    shutil.move(str(home / "matcher"), str(tmp_path / "journal-kept"))

    lost = Up(home, LIGHT)
    try:
        rc = lost.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("up ran on a chain ahead of its journal:\n" + lost.text()[-3000:])
    finally:
        lost.kill_if_running()
    text = lost.text()
    assert rc == 1, text[-3000:]
    assert (f"cannot resume: the chain has settled items up to seq 1, but the matcher's journal "
            f"({home / 'matcher'}) has sequenced only 0") in text, text[-3000:]
    assert "Crossbook is up" not in text

    shutil.rmtree(home / "matcher")
    shutil.move(str(tmp_path / "journal-kept"), str(home / "matcher"))
    back = Up(home, LIGHT)
    try:
        back.wait_up()
        time.sleep(1)
        assert "cannot resume" not in back.text()
        assert back.stop() == 0
    finally:
        back.kill_if_running()
