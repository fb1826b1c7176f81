"""``withdraw`` / ``transfer`` refused before intake: the owner must be the session's and the
signature must decode; the engine is unchanged and the connection stays usable."""
from __future__ import annotations

import time
from typing import Any

from crossbook.protocol_types import Transfer, Withdrawal
from matcher.server import MatcherServer
from tests.ws.helpers import DOMAIN, USERS, Client, addr


def _withdrawal(owner_i: int, signer_i: int) -> dict[str, Any]:
    w = Withdrawal(addr(USERS[owner_i]), 0, 0, 1_000_000, 7, int(time.time()) + 600)
    return {"withdrawal": {"owner": w.owner, "subaccount": 0, "asset": 0, "amount": w.amount,
                           "nonce": 7, "expiry": w.expiry},
            "signature": "0x" + USERS[signer_i].sign_withdrawal(DOMAIN, w).hex()}


def _transfer(owner_i: int, signer_i: int) -> dict[str, Any]:
    t = Transfer(addr(USERS[owner_i]), 0, 1, 0, 1_000_000, 8, int(time.time()) + 600)
    return {"transfer": {"owner": t.owner, "from_subaccount": 0, "to_subaccount": 1, "asset": 0,
                         "amount": t.amount, "nonce": 8, "expiry": t.expiry},
            "signature": "0x" + USERS[signer_i].sign_transfer(DOMAIN, t).hex()}


async def test_owner_and_signature_checks(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    assert (await c.login(USERS[0]))["ok"]
    h = server.engine.state_hash()
    for op, build in (("withdraw", _withdrawal), ("transfer", _transfer)):
        r = await c.request(op, **build(1, 1))  # another owner's, signed by that owner
        assert (r["ok"], r["code"]) == (False, "NOT_AUTHORISED"), r
        assert r["message"] == f"{'withdrawal' if op == 'withdraw' else 'transfer'} owner must be the session owner"
        r = await c.request(op, **{**build(0, 0), "signature": "0xabc"})  # hex, but not bytes
        assert (r["ok"], r["code"], r["message"]) == (False, "BAD_REQUEST", "signature is not hex"), r
        r = await c.request(op, **build(0, 1))  # the session's owner, someone else's signature
        assert (r["ok"], r["code"]) == (False, "BAD_SIGNATURE"), r
    assert server.engine.state_hash() == h
    for op, build in (("withdraw", _withdrawal), ("transfer", _transfer)):
        r = await c.request(op, **build(0, 0))
        assert r["ok"] and r["result"]["seq"] > 0, r
    assert server.engine.state_hash() != h
    await c.close()
