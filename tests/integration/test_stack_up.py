"""`crossbook up --chain-only` starts a chain, deploys, prints addresses, stops cleanly and resumes its
state (the full stack with every service: tests/test_supervisor.py)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from web3 import Web3

from crossbook.chain.anvil import free_port


def _start(home: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "CROSSBOOK_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "crossbook.cli", "up", "--port", str(port), "--chain-only"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _read_until_ready(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    assert proc.stdout is not None
    out = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
        if "Ctrl-C to stop" in line:
            return out
    raise AssertionError(f"stack did not become ready:\n{out}")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    return rest


def test_up_deploys_prints_addresses_and_survives_a_restart(tmp_path: Path) -> None:
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        out = _read_until_ready(proc)
        match = re.search(r"clearinghouse (0x[0-9a-fA-F]{40})", out)
        assert match, out
        address = match.group(1)
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
        assert len(w3.eth.get_code(Web3.to_checksum_address(address))) > 0
        assert "ETH-PERP" in out or "feed  ETH" in out
    finally:
        tail = _stop(proc)
    assert "stopped" in tail
    assert (tmp_path / "anvil-state.json").exists()
    assert (tmp_path / "deployment.json").exists()

    proc = _start(tmp_path, port)
    try:
        out = _read_until_ready(proc)
        assert "reusing deployment" in out, out
        assert address in out
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
        assert len(w3.eth.get_code(Web3.to_checksum_address(address))) > 0
    finally:
        _stop(proc)
