"""Keeper fixtures: one anvil + deployment per session, a snapshot per test."""
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
def _session_exchange(anvil_node: AnvilNode) -> LocalExchange:
    return LocalExchange(anvil_node)


@pytest.fixture
def ex(_session_exchange: LocalExchange) -> Iterator[LocalExchange]:
    snap = _session_exchange.snapshot()
    yield _session_exchange
    _session_exchange.revert(snap)
