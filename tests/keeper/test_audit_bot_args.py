"""examples/liquidation_bot.py given a wrong key or a missing deployment file: one line on
stderr naming the option and exit code 2 (as for a missing option), not a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crossbook.chain.local_exchange import LocalExchange
from crossbook.paths import REPO_ROOT

BOT = str(Path(REPO_ROOT) / "examples" / "liquidation_bot.py")
KEY = "0x" + "11" * 32


def _bot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, BOT, *args, "--once"], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("key", ["dev:3", "0x12", "not-a-key"])
def test_a_key_that_is_no_private_key(ex: LocalExchange, tmp_path: Path, key: str) -> None:
    dep = tmp_path / "deployment.json"
    ex.deployment.save(dep)
    r = _bot("--deployment", str(dep), "--key", key)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith("--key: not a private key")


def test_a_missing_deployment_file(tmp_path: Path) -> None:
    r = _bot("--deployment", str(tmp_path / "none.json"), "--key", KEY)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"--deployment: cannot read {tmp_path / 'none.json'}: No such file or directory"
