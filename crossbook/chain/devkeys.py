"""The local chain's well-known development keys (anvil's default mnemonic).

Public knowledge and worthless outside a local chain; roles are assigned by index so every
service of the embedded stack agrees on who is who.
"""
from __future__ import annotations

from functools import lru_cache

from eth_account import Account

from crossbook.chain.anvil import DEV_MNEMONIC

ADMIN = 0
OPERATOR = 1
KEEPER = 2
FIRST_USER = 3


@lru_cache(maxsize=None)
def dev_key(index: int) -> str:
    """Hex private key of dev account `index` (m/44'/60'/0'/0/index)."""
    Account.enable_unaudited_hdwallet_features()
    acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return "0x" + bytes(acct.key).hex()


def dev_address(index: int) -> str:
    """Checksummed address of dev account `index`."""
    return str(Account.from_key(dev_key(index)).address)
