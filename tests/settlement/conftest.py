"""Settlement fixtures: one real anvil + the real contracts per session, a snapshot per test."""
from __future__ import annotations

import pytest
from web3 import AsyncWeb3, Web3

from crossbook.chain.anvil import AnvilNode
from crossbook.chain.devkeys import OPERATOR, dev_address, dev_key
from crossbook.chain.local_exchange import LocalExchange, user_signer
from crossbook.config import PRICE, SIZE, USD
from crossbook.protocol_types import FillItem
from crossbook.reconcile import chain_events
from settlement.events import ChainBatchSettled
from settlement.relayer import connect

ETH = 0
SECOND_OPERATOR = 6  # dev account granted OPERATOR_ROLE too (two-relayer tests)
USERS = [user_signer(i) for i in range(1, 5)]


@pytest.fixture(scope="session")
def _session_exchange(anvil_node: AnvilNode) -> LocalExchange:
    ex = LocalExchange(anvil_node)
    role = Web3.keccak(text="OPERATOR_ROLE")
    ex.admin.transact(ex.client.contract.functions.grantRole(role, dev_address(SECOND_OPERATOR)))
    ex.fund_many([u.address for u in USERS], "USDC", 1_000_000 * USD)
    return ex


@pytest.fixture
def aw3(anvil_node: AnvilNode) -> AsyncWeb3:
    """An AsyncWeb3 on the session anvil."""
    return connect(anvil_node.url)


OPERATOR_KEY = dev_key(OPERATOR)
SECOND_OPERATOR_KEY = dev_key(SECOND_OPERATOR)


def make_fills(ex: LocalExchange, n: int, expired: set[int] = frozenset()) -> list[FillItem]:  # type: ignore[assignment]
    """`n` valid ETH fills of 1 ETH between the funded users (index in `expired`: expired taker)."""
    px = 3_000 * PRICE
    out = []
    for i in range(n):
        taker, maker = USERS[i % 4], USERS[(i + 1) % 4]
        buy = (i // 4) % 2 == 0
        t = ex.order(taker, ETH, buy, px, SIZE, expiry=1 if i in expired else 2**40)
        m = ex.order(maker, ETH, not buy, px, SIZE)
        out.append(ex.fill(t, m, SIZE, px))
    return out


def settled_events(ex: LocalExchange) -> list[ChainBatchSettled]:
    """Every BatchSettled (with its rejections) the contract emitted since deployment."""
    events = chain_events(ex.w3, ex.client.contract.address, ex.deployment.start_block,
                          ex.w3.eth.block_number)
    return [e for e in events if isinstance(e, ChainBatchSettled)]


def assert_exactly_once(ex: LocalExchange, first: int, n: int) -> list[ChainBatchSettled]:
    """BatchSettled ranges since `first` tile [first, first + n) with no gap and no overlap."""
    evs = [e for e in settled_events(ex) if e.first_seq >= first and e.count]
    seqs = [s for e in evs for s in range(e.first_seq, e.first_seq + e.count)]
    assert seqs == list(range(first, first + n)), "settled sequence numbers are not exactly [first, first+n)"
    assert ex.client.next_seq() == first + n
    return evs
