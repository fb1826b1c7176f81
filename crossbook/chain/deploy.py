"""Deploy the clearinghouse, its oracle adapter, test collateral tokens and settable feeds."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.contract import Contract

from crossbook.chain.artifacts import load_artifact
from crossbook.chain.errors import ErrorDecoder
from crossbook.chain.sender import TxSender
from crossbook.config import DEFAULT_SPEC, ExchangeSpec

CLEARINGHOUSE = "Clearinghouse"
HARNESS = "ClearinghouseHarness"


@dataclass
class Deployment:
    """Addresses of one deployed exchange; saved as JSON so every service finds the same one."""

    chain_id: int
    rpc_url: str
    clearinghouse: str
    oracle: str
    tokens: dict[str, str]  # symbol -> address; the quote symbol included
    feeds: dict[str, str]  # feed symbol -> SettableFeed address
    admin: str
    operator: str
    start_block: int
    contract_name: str = CLEARINGHOUSE
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write the deployment file atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Deployment":
        """Read a deployment file written by `save`."""
        return cls(**json.loads(path.read_text()))


def error_decoder() -> ErrorDecoder:
    """A decoder that knows the custom errors of every contract we deploy."""
    names = [CLEARINGHOUSE, "OracleAdapter", "SettableFeed", "TestToken"]
    abis = []
    for n in names:
        try:
            abis.append(load_artifact(n).abi)
        except FileNotFoundError:
            continue
    return ErrorDecoder(abis)


def bind(w3: Web3, name: str, address: str) -> Contract:
    """A web3 contract object for a deployed address, with the ABI from the build output."""
    source = f"{name}.sol"
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name, source).abi)


def deploy_exchange(
    w3: Web3,
    admin_key: str,
    operator: str,
    rpc_url: str,
    spec: ExchangeSpec = DEFAULT_SPEC,
    harness: bool = False,
) -> Deployment:
    """Deploy and configure everything `spec` lists; the admin key pays and holds admin roles.

    `harness=True` deploys the test-only ClearinghouseHarness (state setters) instead.
    """
    tx = TxSender(w3, admin_key, error_decoder())
    start_block = w3.eth.block_number
    token_art = load_artifact("TestToken")
    tokens: dict[str, Contract] = {spec.quote_symbol: tx.deploy(token_art, "USD Coin (test)", spec.quote_symbol, 6)}
    for c in spec.collaterals:
        tokens[c.symbol] = tx.deploy(token_art, f"{c.symbol} (test)", c.symbol, c.decimals)

    feed_art = load_artifact("SettableFeed")
    oracle = tx.deploy(load_artifact("OracleAdapter"), tx.address)
    feeds: dict[str, Contract] = {}
    for f in spec.feeds:
        feed = tx.deploy(feed_art, f.decimals, f"{f.symbol} / USD")
        tx.transact(feed.functions.setAnswer(f.initial_price * 10**f.decimals // 10**8))
        tx.transact(oracle.functions.setFeed(f.feed_id, feed.address, f.heartbeat_s, f.min_price, f.max_price))
        feeds[f.symbol] = feed

    if harness:
        ch_art = load_artifact(HARNESS, f"{HARNESS}.sol")
    else:
        ch_art = load_artifact(CLEARINGHOUSE)
    ch = tx.deploy(ch_art, tx.address, oracle.address, tokens[spec.quote_symbol].address, spec.escape_delay_s)
    # The liquidation module cannot be embedded in the Clearinghouse initcode (EIP-3860), so it is deployed
    # separately and installed once (docs/trust-model.md "Liquidation module").
    liq = tx.deploy(load_artifact("LiquidationModule"), oracle.address)
    tx.transact(ch.functions.setLiquidationModule(liq.address))
    for c in spec.collaterals:
        tx.transact(ch.functions.listCollateral(
            tokens[c.symbol].address, c.feed_id, c.weight_init_ppm, c.weight_maint_ppm, c.deposit_cap))
    for m in spec.markets:
        tiers = [(t.notional_cap, t.imf_ppm, t.mmf_ppm) for t in m.tiers]
        tx.transact(ch.functions.listMarket(
            (m.feed_id, m.tick_size, m.lot_size, m.open_interest_cap, m.max_funding_ppm, m.funding_period_s,
             tiers)))
    tx.transact(ch.functions.setPnlHaircut(spec.pnl_haircut_ppm))
    operator_role = Web3.keccak(text="OPERATOR_ROLE")
    tx.transact(ch.functions.grantRole(operator_role, Web3.to_checksum_address(operator)))

    return Deployment(
        chain_id=w3.eth.chain_id,
        rpc_url=rpc_url,
        clearinghouse=ch.address,
        oracle=oracle.address,
        tokens={s: c.address for s, c in tokens.items()},
        feeds={s: c.address for s, c in feeds.items()},
        admin=tx.address,
        operator=Web3.to_checksum_address(operator),
        start_block=start_block,
        contract_name=HARNESS if harness else CLEARINGHOUSE,
    )
