"""Chain fixtures shared by every test directory: one real anvil and one deployment per session,
rolled back to a snapshot after each test. A directory that needs a differently prepared
deployment overrides `_session_exchange` in its own conftest."""
from __future__ import annotations

from typing import Iterator

import pytest

from crossbook.chain.anvil import AnvilNode
from crossbook.chain.local_exchange import LocalExchange


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[AnvilNode]:
    node = AnvilNode().start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def harness_node() -> Iterator[AnvilNode]:
    """A node for the test-only ClearinghouseHarness: the Clearinghouse plus its state setters
    is over EIP-3860's initcode limit (the Clearinghouse deploys its settlement module, ~3 kB
    under it), which the harness's node lifts so that production contracts keep the headroom."""
    node = AnvilNode(code_size_limit=2 * 24_576).start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def _session_exchange(anvil_node: AnvilNode) -> LocalExchange:
    return LocalExchange(anvil_node)


@pytest.fixture
def ex(_session_exchange: LocalExchange) -> Iterator[LocalExchange]:
    """The deployed exchange, rolled back to its prepared state after each test."""
    snap = _session_exchange.snapshot()
    yield _session_exchange
    _session_exchange.revert(snap)
