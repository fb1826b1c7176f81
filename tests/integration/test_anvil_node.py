"""The embedded anvil node cleans up after itself."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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


def test_the_osaka_transaction_gas_cap_can_be_enforced() -> None:
    # the settle benchmark runs with it, so its batches are ones an Osaka chain would take
    def send(node: AnvilNode, gas: int) -> object:
        sender = rpc_call(node.url, "eth_accounts")[0]  # type: ignore[index]
        return rpc_call(node.url, "eth_sendTransaction",
                        [{"from": sender, "to": "0x" + "11" * 20, "value": hex(1), "gas": hex(gas)}])

    with AnvilNode(gas_limit=30_000_000, tx_gas_cap=True) as capped:
        send(capped, 2**24)
        with pytest.raises(RuntimeError, match="tx_gas_limit_cap"):
            send(capped, 2**24 + 1)
    with AnvilNode(gas_limit=30_000_000) as plain:
        send(plain, 2**24 + 1)
