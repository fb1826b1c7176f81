"""Python SDK for Crossbook market makers and keepers.

- :class:`Client` — async websocket client of the matcher (login, orders, subscriptions with
  reconnect and book gap recovery, dead-man's switch).
- :class:`ChainAccount` — on-chain owner actions (agent approval, deposit, health).
- :mod:`crossbook.sdk.units` — human decimals <-> protocol integers, no floats.
- :mod:`crossbook.sdk.risk` — leverage and liquidation prices.
"""
from __future__ import annotations

from crossbook.sdk import units
from crossbook.sdk.book import GapDetected, OrderBook
from crossbook.sdk.client import Ack, Client, ClientStats, ModifyRequest, OrderRequest, Subscription
from crossbook.sdk.errors import ConnectionLost, NotConnected, Rejected, SdkError
from crossbook.sdk.nonces import NonceManager
from crossbook.sdk.risk import (
    AccountRisk,
    PositionRisk,
    account_risk,
    liquidation_bounds,
    liquidation_price,
)

__all__ = [
    "Ack", "AccountRisk", "Client", "ClientStats", "ConnectionLost", "GapDetected",
    "ModifyRequest", "NonceManager", "NotConnected", "OrderBook", "OrderRequest", "PositionRisk", "Rejected",
    "SdkError", "Subscription", "account_risk", "liquidation_bounds", "liquidation_price", "units",
]


def __getattr__(name: str) -> object:
    # ChainAccount pulls in web3 (slow import); load it only when asked for
    if name == "ChainAccount":
        from crossbook.sdk.chain import ChainAccount

        return ChainAccount
    raise AttributeError(name)
