"""Login by signed EIP-712 challenge: owner, agent, wrong signer, expired, replayed."""
from __future__ import annotations

import asyncio
import time

from matcher.commands import AgentSet
from matcher.server import MatcherServer
from matcher.sessions import login_digest
from tests.ws.helpers import AGENT, DOMAIN, USERS, Client, addr, start_server


async def test_hello_then_owner_login(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    h = c.hello
    assert h["chain_id"] == 31337 and len(h["challenge"]) == 66
    assert h["limits"]["open_orders_per_subaccount"] == 1000
    r = await c.login(USERS[0])
    assert r["ok"] and r["result"]["owner"] == addr(USERS[0])
    # a second login on the same connection is refused
    r2 = await c.login(USERS[1])
    assert not r2["ok"] and r2["code"] == "ALREADY_LOGGED_IN"
    await c.close()


async def test_wrong_signer_refused(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    # signed by USERS[1] but claims USERS[1] is signing for USERS[0]: not an approved agent
    r = await c.login(USERS[0], signer=USERS[1])
    assert not r["ok"] and r["code"] == "NOT_AUTHORISED"
    # claims signer=USERS[0] but the signature is USERS[1]'s
    ch = c.hello["challenge"]
    exp = int(time.time()) + 60
    sig = USERS[1].sign_digest(login_digest(DOMAIN, addr(USERS[0]), addr(USERS[0]),
                                            bytes.fromhex(ch[2:]), exp))
    r = await c.request("login", owner=addr(USERS[0]), signer=addr(USERS[0]), challenge=ch,
                        expiry=exp, signature="0x" + sig.hex())
    assert not r["ok"] and r["code"] == "BAD_SIGNATURE"
    # still usable: a private channel is refused until logged in
    r = await c.request("subscribe", channels=["orders"])
    assert r["code"] == "NOT_LOGGED_IN"
    await c.close()


async def test_garbage_signature(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    ch = c.hello["challenge"]
    r = await c.request("login", owner=addr(USERS[0]), signer=addr(USERS[0]), challenge=ch,
                        expiry=int(time.time()) + 60, signature="0x" + "11" * 65)
    assert not r["ok"] and r["code"] == "BAD_SIGNATURE"
    await c.close()


async def test_expired_login(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    r = await c.login(USERS[0], expiry=int(time.time()) - 5)
    assert not r["ok"] and r["code"] == "LOGIN_EXPIRED"
    await c.close()


async def test_expired_challenge(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path), challenge_ttl_s=0.05)
    try:
        c = await Client.open(srv.url)
        await asyncio.sleep(0.1)
        ch = c.hello["challenge"]
        exp = int(time.time()) + 60
        sig = USERS[0].sign_digest(login_digest(DOMAIN, addr(USERS[0]), addr(USERS[0]),
                                                bytes.fromhex(ch[2:]), exp))
        r = await c.request("login", owner=addr(USERS[0]), signer=addr(USERS[0]), challenge=ch,
                            expiry=exp, signature="0x" + sig.hex())
        assert not r["ok"] and r["code"] == "LOGIN_EXPIRED"
        await c.close()
    finally:
        await srv.close()


async def test_replayed_challenge(server: MatcherServer) -> None:
    a = await Client.open(server.url)
    ch = a.hello["challenge"]
    exp = int(time.time()) + 60
    sig = "0x" + USERS[0].sign_digest(login_digest(DOMAIN, addr(USERS[0]), addr(USERS[0]),
                                                   bytes.fromhex(ch[2:]), exp)).hex()
    fields = dict(owner=addr(USERS[0]), signer=addr(USERS[0]), challenge=ch, expiry=exp,
                  signature=sig)
    assert (await a.request("login", **fields))["ok"]
    # the same signed login on another connection: different challenge
    b = await Client.open(server.url)
    r = await b.request("login", **fields)
    assert not r["ok"] and r["code"] == "BAD_CHALLENGE"
    # and a failed attempt consumed b's challenge too
    r = await b.request("login", **{**fields, "challenge": b.hello["challenge"]})
    assert not r["ok"] and r["code"] in ("BAD_SIGNATURE", "BAD_CHALLENGE")
    await a.close()
    await b.close()


async def test_agent_login(server: MatcherServer) -> None:
    c = await Client.open(server.url)
    r = await c.login(USERS[0], signer=AGENT)
    assert r["code"] == "NOT_AUTHORISED"
    await server.submit(AgentSet(server.next_req_id(), addr(USERS[0]), addr(AGENT), True))
    r = await c.login(USERS[0], signer=AGENT)
    assert r["ok"] and r["result"]["signer"] == addr(AGENT)
    # revoking the agent on-chain ends the session's rights
    await server.submit(AgentSet(server.next_req_id(), addr(USERS[0]), addr(AGENT), False))
    r = await c.request("cancel_all")
    assert r["code"] == "NOT_AUTHORISED"
    await c.close()
