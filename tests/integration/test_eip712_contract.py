"""Python's EIP-712 digests equal the contract's own, for random orders, withdrawals, transfers."""
from __future__ import annotations

import random

from crossbook.chain.local_exchange import LocalExchange
from crossbook.eip712 import order_digest, transfer_digest, withdrawal_digest
from crossbook.protocol_types import Order, Transfer, Withdrawal


def _addr(rng: random.Random) -> str:
    from web3 import Web3

    return Web3.to_checksum_address(rng.randbytes(20).hex())


def _u(rng: random.Random, bits: int) -> int:
    return rng.choice([0, 1, (1 << bits) - 1, rng.getrandbits(bits)])


def test_order_withdrawal_and_transfer_digests_match_the_contract(ex: LocalExchange) -> None:
    rng = random.Random(712)
    ch = ex.client.contract.functions
    for _ in range(60):
        o = Order(owner=_addr(rng), subaccount=_u(rng, 32), market=_u(rng, 32), is_buy=rng.random() < 0.5,
                  reduce_only=rng.random() < 0.5, price=_u(rng, 64), size=_u(rng, 64), nonce=_u(rng, 64),
                  expiry=_u(rng, 64), max_fee_ppm=_u(rng, 32))
        onchain = ch.orderDigest((o.owner, o.subaccount, o.market, o.is_buy, o.reduce_only, o.price, o.size,
                                  o.nonce, o.expiry, o.max_fee_ppm)).call()
        assert bytes(onchain) == order_digest(ex.domain, o)
        w = Withdrawal(owner=_addr(rng), subaccount=_u(rng, 32), asset=_u(rng, 16), amount=_u(rng, 128),
                       nonce=_u(rng, 64), expiry=_u(rng, 64))
        onchain = ch.withdrawalDigest(w.owner, w.subaccount, w.asset, w.amount, w.nonce, w.expiry).call()
        assert bytes(onchain) == withdrawal_digest(ex.domain, w)
        t = Transfer(owner=_addr(rng), from_subaccount=_u(rng, 32), to_subaccount=_u(rng, 32), asset=_u(rng, 16),
                     amount=_u(rng, 128), nonce=_u(rng, 64), expiry=_u(rng, 64))
        onchain = ch.transferDigest(t.owner, t.from_subaccount, t.to_subaccount, t.asset, t.amount, t.nonce,
                                    t.expiry).call()
        assert bytes(onchain) == transfer_digest(ex.domain, t)
