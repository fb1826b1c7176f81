"""The embedded anvil node cleans up after itself."""
from __future__ import annotations

import os
from pathlib import Path

from crossbook.chain.anvil import AnvilNode, rpc_call


def _files(d: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(d))


def test_spilled_block_states_are_removed_on_stop() -> None:
    # anvil keeps recent block states in memory and writes older ones to its cache path; left
    # in ~/.foundry/anvil/tmp they reached 75 GB over a day of test and benchmark runs
    node = AnvilNode().start()
    assert node._cache_dir is not None
    cache = Path(node._cache_dir)
    try:
        sender = rpc_call(node.url, "eth_accounts")[0]  # type: ignore[index]
        for _ in range(600):  # a state change per block; anvil spills past ~500 of them
            rpc_call(node.url, "eth_sendTransaction",
                     [{"from": sender, "to": "0x" + "11" * 20, "value": hex(1)}])
        assert _files(cache) > 0, "anvil spilled nothing: the test no longer exercises the cache"
    finally:
        node.stop()
    assert not cache.exists()
    assert node._cache_dir is None
