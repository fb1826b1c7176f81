"""kill -9 a relayer subprocess at random points, several times; then every item is on-chain
exactly once (BatchSettled ranges tile the stream, every order filled exactly once)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from crossbook.chain.local_exchange import LocalExchange
from crossbook.protocol_types import NONCE_SPENT
from crossbook.paths import REPO_ROOT
from settlement.source import InMemorySource
from tests.settlement.conftest import OPERATOR_KEY, assert_exactly_once, make_fills


def _relayer(ex: LocalExchange, items: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "settlement.relayer", "--rpc", ex.node.url,
           "--contract", ex.client.contract.address, "--key", OPERATOR_KEY, "--items", str(items),
           "--max-items", "3", "--max-age", "0.01", "--in-flight", "3"]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_kill_minus_nine_at_random_points_settles_everything_exactly_once(ex: LocalExchange, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("KILL9_SEED", "1234")))
    first = ex.client.next_seq()
    assert first == 1  # the subprocess source numbers items from 1
    fills = make_fills(ex, 60)
    items = tmp_path / "items.msgpack"
    InMemorySource(fills).dump(str(items))
    progress: list[int] = []
    # one-second blocks: kills land while settle transactions wait in the mempool
    ex.w3.provider.make_request("evm_setIntervalMining", [1])  # type: ignore[arg-type]
    try:
        _kill_repeatedly(ex, items, rng, first + len(fills), progress)
    finally:
        ex.w3.provider.make_request("evm_setIntervalMining", [0])  # type: ignore[arg-type]
        ex.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    final = _relayer(ex, items)
    _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err.decode()[-2000:]
    assert progress[0] < first + len(fills), "the first kill came too late to test anything"
    assert len(progress) >= 3
    print("nextSeq after each kill:", progress)
    assert_exactly_once(ex, first, len(fills))
    for f in fills:
        assert ex.client.filled_amount(f.taker.owner, f.taker.nonce) == NONCE_SPENT
        assert ex.client.filled_amount(f.maker.owner, f.maker.nonce) == NONCE_SPENT


def _kill_repeatedly(ex: LocalExchange, items: Path, rng: random.Random, end: int, progress: list[int]) -> None:
    for _ in range(5):
        before = ex.client.next_seq()
        proc = _relayer(ex, items)
        # wait until it has settled something (or a random short time), then kill at a random point
        deadline = time.monotonic() + 20
        while ex.client.next_seq() == before and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        progress.append(ex.client.next_seq())
        if progress[-1] == end:
            break
