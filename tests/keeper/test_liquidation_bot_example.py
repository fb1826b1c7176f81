"""The example keeper (examples/liquidation_bot.py) on anvil with the real contracts: it finds
accounts from Deposit events, liquidates the one below maintenance and nothing else, sends
nothing when the preview says the liquidation would fail, and its command line does one scan.

Alice's 10 ETH long at 3,000 (tests/integration/test_liquidation.py) is tier 1 at 2,060; Dave's
2 ETH long on 20,000 USDC loses on the same move but stays healthy; Carol runs the bot. Eve's
10 ETH short on 10,000 USDC is tier 1 at 3,900 (the bot sells, its price limit a floor).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from web3 import Web3

from crossbook.chain.local_exchange import LocalExchange, user_key, user_signer
from crossbook.config import PRICE, SIZE, USD, risk_params
from crossbook.liquidation import DEFAULT_LIQUIDATION_PARAMS, quote_liquidation
from crossbook.paths import REPO_ROOT
from crossbook.sdk.chain import ChainAccount
from tests.integration.test_liquidation import ALICE, BOB, CAROL, ETH, _open, _quote
from tests.sdk.test_market_maker import load_example

DAVE, EVE = user_signer(4), user_signer(5)
CAROL_KEY = user_key(3)


@pytest.fixture(scope="module")
def bot_mod() -> ModuleType:
    return load_example("liquidation_bot")


def _setup(ex: LocalExchange) -> None:
    """Alice (under water after the move), Bob her counterparty, Dave a healthy long on
    sub-account 1; Carol's sub-account 0 is funded to take positions over."""
    _open(ex)
    ex.fund(DAVE.address, 1, "USDC", 20_000 * USD)
    res = ex.settle([ex.fill(ex.order(DAVE, ETH, True, 3_000 * PRICE, 2 * SIZE, subaccount=1),
                             ex.order(BOB, ETH, False, 3_000 * PRICE, 2 * SIZE), 2 * SIZE, 3_000 * PRICE)])
    assert res.rejected == {}
    ex.set_price("ETH", 2_060 * PRICE)
    assert ex.client.health(ALICE.address, 0).maintenance_health < 0
    assert ex.client.health(DAVE.address, 1).maintenance_health >= 0


def _nonce(ex: LocalExchange, address: str) -> int:
    return int(ex.w3.eth.get_transaction_count(Web3.to_checksum_address(address)))


def test_scan_liquidates_only_the_unhealthy_account(ex: LocalExchange, bot_mod: ModuleType) -> None:
    _setup(ex)
    q = _quote(ex)
    bystanders = {k: ex.client.subaccount(*k) for k in ((BOB.address, 0), (DAVE.address, 1))}
    bot = bot_mod.LiquidationBot(ChainAccount(ex.client, CAROL_KEY))
    first_block = ex.w3.eth.block_number + 1

    assert bot.scan_once() == 1
    found = {(o.lower(), s) for o, s in bot.accounts}
    assert found == {(a.lower(), s) for a, s in ((ALICE.address, 0), (BOB.address, 0), (DAVE.address, 1),
                                                  (CAROL.address, 0))}
    (tx,) = bot.liquidations
    assert tx.startswith("0x") and len(tx) == 66  # pasteable into an explorer or `cast tx`
    receipt = ex.w3.eth.get_transaction_receipt(tx)
    (ev,) = ex.client.liquidated_in(receipt)
    assert ex.client.liquidated_events(from_block=first_block) == [ev]  # one liquidation in all
    assert (ev.owner.lower(), ev.subaccount, ev.market) == (ALICE.address.lower(), 0, ETH)
    assert (ev.liquidator.lower(), ev.liquidator_subaccount) == (CAROL.address.lower(), 0)
    assert (ev.size_delta, ev.price) == (q.size_delta, q.price) and 0 < q.size < 10 * SIZE
    # tier 1 leaves the target at the buffer above maintenance; the bot holds what it took
    h = ex.client.health(ALICE.address, 0)
    assert h.maintenance_health * 1_000_000 >= h.maintenance_requirement * DEFAULT_LIQUIDATION_PARAMS.buffer_ppm
    assert ex.client.position(ALICE.address, 0, ETH).size == 10 * SIZE - q.size
    assert ex.client.position(CAROL.address, 0, ETH).size == q.size
    assert {k: ex.client.subaccount(*k) for k in bystanders} == bystanders

    nonce = _nonce(ex, CAROL.address)
    assert bot.scan_once() == 0
    assert _nonce(ex, CAROL.address) == nonce and len(bot.liquidations) == 1


def test_short_target_is_sold_under_a_floor(ex: LocalExchange, bot_mod: ModuleType) -> None:
    _open(ex)  # funds Bob and Carol
    ex.fund(EVE.address, 0, "USDC", 10_000 * USD)
    res = ex.settle([ex.fill(ex.order(EVE, ETH, False, 3_000 * PRICE, 10 * SIZE),
                             ex.order(BOB, ETH, True, 3_000 * PRICE, 10 * SIZE), 10 * SIZE, 3_000 * PRICE)])
    assert res.rejected == {}
    ex.set_price("ETH", 3_900 * PRICE)
    q = quote_liquidation(ex.client.subaccount(EVE.address, 0), risk_params(), ex.client.prices(), ETH,
                          2**64 - 1, DEFAULT_LIQUIDATION_PARAMS)
    assert not q.critical and q.size_delta > 0
    bot = bot_mod.LiquidationBot(ChainAccount(ex.client, CAROL_KEY))
    assert bot.scan_once() == 1
    (ev,) = ex.client.liquidated_in(ex.w3.eth.get_transaction_receipt(bot.liquidations[0]))
    assert (ev.owner.lower(), ev.size_delta, ev.price) == (EVE.address.lower(), q.size_delta, q.price)
    assert ex.client.position(CAROL.address, 0, ETH).size == -q.size_delta
    assert ex.client.health(EVE.address, 0).maintenance_health >= 0


def test_preview_failure_sends_nothing(ex: LocalExchange, bot_mod: ModuleType) -> None:
    _setup(ex)
    before = ex.client.subaccount(ALICE.address, 0)
    nonce = _nonce(ex, CAROL.address)
    # the bot's sub-account 1 holds nothing: the preview answers LiquidatorUnhealthy
    broke = bot_mod.LiquidationBot(ChainAccount(ex.client, CAROL_KEY), liquidator_sub=1)
    assert broke.scan_once() == 0
    # the price recovers between the health read and the liquidation: NotLiquidatable
    bot = bot_mod.LiquidationBot(ChainAccount(ex.client, CAROL_KEY))
    ex.set_price("ETH", 3_000 * PRICE)
    assert bot.liquidate(ALICE.address, 0) is False
    assert _nonce(ex, CAROL.address) == nonce
    assert broke.liquidations == bot.liquidations == []
    assert ex.client.subaccount(ALICE.address, 0) == before


def test_command_line_scans_once(ex: LocalExchange, tmp_path: Path) -> None:
    _setup(ex)
    dep = tmp_path / "deployment.json"
    ex.deployment.save(dep)
    first_block = ex.w3.eth.block_number + 1
    r = subprocess.run([sys.executable, str(Path(REPO_ROOT) / "examples" / "liquidation_bot.py"),
                        "--deployment", str(dep), "--key", "0x" + CAROL_KEY.hex(), "--once"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "liquidations sent: 1"
    (ev,) = ex.client.liquidated_events(from_block=first_block)
    assert (ev.owner.lower(), ev.liquidator.lower()) == (ALICE.address.lower(), CAROL.address.lower())
    assert ex.client.position(CAROL.address, 0, ETH).size == -ev.size_delta > 0


def test_discovery_walks_the_chain_in_log_ranges(ex: LocalExchange, bot_mod: ModuleType,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Public RPCs cap an eth_getLogs span: a range of 2 blocks finds exactly what one request
    over the whole chain finds, and an --account given in lower case is not a second entry."""
    _setup(ex)
    whole = bot_mod.LiquidationBot(ChainAccount(ex.client, CAROL_KEY))
    whole.discover()
    assert ex.w3.eth.block_number - ex.deployment.start_block > 4  # several ranges below
    monkeypatch.setattr(bot_mod, "LOG_RANGE", 2)
    stepped = bot_mod.LiquidationBot(ChainAccount(ex.client, CAROL_KEY))
    stepped.discover()
    assert stepped.accounts == whole.accounts and len(whole.accounts) == 4
    assert stepped._scanned_block == ex.w3.eth.block_number
    stepped.accounts.add(bot_mod.parse_account(ALICE.address.lower()))
    assert stepped.accounts == whole.accounts
    assert bot_mod.parse_account(f"{DAVE.address.lower()}:1") == (DAVE.address, 1)
