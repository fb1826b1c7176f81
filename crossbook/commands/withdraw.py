"""``crossbook withdraw``: a signed withdrawal through the matcher, waited for until settled.

Withdrawals are sequenced like fills (docs/protocol.md section 4): the owner signs an EIP-712
``Withdrawal``, the matcher checks it against the shadow ledger (a withdrawal must leave initial
health >= 0) and sequences it, the relayer settles it, and the contract verifies the signature
again and pays out. This command logs in over the websocket (EIP-712 login), sends the
``withdraw`` op (docs/api.md) and shows progress until the ``Withdrawn`` event is on-chain.
If the operator stops settling, the escape hatch (requestForcedWithdrawal) is the way out.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from crossbook.commands.common import (
    Progress, add_chain_args, asset_of, chain_client, default_matcher_url, env, format_units, parse_units,
    resolve_key,
)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``withdraw``."""
    p = sub.add_parser("withdraw", help="sign a withdrawal, send it to the matcher, wait until it "
                                        "settles on-chain")
    p.add_argument("amount", help="amount in whole units, e.g. 250 or 0.1")
    p.add_argument("--asset", default="USDC", help="USDC (default), WETH or WBTC")
    p.add_argument("--subaccount", type=int, default=0, help="source sub-account (default 0)")
    p.add_argument("--key", default=env("CROSSBOOK_KEY"),
                   help="owner's private key (hex or dev:N; default the first demo account) [$CROSSBOOK_KEY]")
    p.add_argument("--matcher-url", default=None,
                   help="matcher websocket URL (default: the running stack's, from <home>/stack.json, "
                        "else ws://127.0.0.1:8765) [$CROSSBOOK_MATCHER_URL]")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for settlement")
    p.add_argument("--no-wait", action="store_true", help="return once the matcher accepted it")
    add_chain_args(p)
    p.set_defaults(func=run)


async def _request(ws: Any, req: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(req))
    while True:
        f = json.loads(await ws.recv())
        if f.get("type") == "response" and f.get("id") in (req["id"], None):
            return dict(f)


async def submit_withdrawal(url: str, signer: Any, domain: Any, withdrawal: Any, sig: bytes) -> tuple[int, int]:
    """Log in as the owner, send ``withdraw``, return ``(command seq, matched_seq after it)``;
    the item's settlement seq is at most the second (the status op runs after the withdrawal
    on the same connection)."""
    from websockets.asyncio.client import connect

    from matcher.sessions import login_digest

    owner = signer.address.lower()
    async with connect(url, open_timeout=5, max_size=None) as ws:
        hello = json.loads(await ws.recv())
        ch = hello["challenge"]
        exp = int(time.time()) + 240
        lsig = signer.sign_digest(login_digest(domain, owner, owner, bytes.fromhex(ch[2:]), exp))
        r = await _request(ws, {"op": "login", "id": 1, "owner": owner, "signer": owner, "challenge": ch,
                                "expiry": exp, "signature": "0x" + lsig.hex()})
        if not r.get("ok"):
            raise SystemExit(f"login refused: {r.get('code')} {r.get('message')}")
        w = withdrawal
        r = await _request(ws, {"op": "withdraw", "id": 2, "signature": "0x" + sig.hex(), "withdrawal": {
            "owner": owner, "subaccount": w.subaccount, "asset": w.asset, "amount": w.amount,
            "nonce": w.nonce, "expiry": w.expiry}})
        if not r.get("ok"):
            raise SystemExit(f"matcher refused the withdrawal: {r.get('code')} {r.get('message')}")
        st = await _request(ws, {"op": "status", "id": 3})
        return int(r["result"]["seq"]), int(st["result"]["matched_seq"])


def run(args: argparse.Namespace) -> int:
    """Entry point of ``crossbook withdraw``."""
    from eth_account import Account

    from crossbook.chain.devkeys import FIRST_USER
    from crossbook.eip712 import Signer
    from crossbook.protocol_types import Withdrawal

    client = chain_client(args)
    asset, decimals, sym = asset_of(args.asset)
    amount = parse_units(args.amount, decimals)
    if amount <= 0:
        raise SystemExit("amount must be positive")
    key = resolve_key(args.key, FIRST_USER)
    signer = Signer(key)
    owner = Account.from_key(key).address
    start_block = client.w3.eth.block_number
    # any unused digest will do (the contract records used digests); milliseconds keep it unique
    w = Withdrawal(owner=owner, subaccount=args.subaccount, asset=asset, amount=amount,
                   nonce=time.time_ns() // 1_000_000, expiry=int(time.time()) + 3600)
    sig = signer.sign_withdrawal(client.domain, w)
    url = args.matcher_url or default_matcher_url()
    try:
        cmd_seq, upto = asyncio.run(submit_withdrawal(url, signer, client.domain, w, sig))
    except OSError as err:  # refused / unreachable: say where we looked, not a traceback
        raise SystemExit(f"cannot reach the matcher at {url}: {err}; is `crossbook up` running? "
                         "(--matcher-url or $CROSSBOOK_MATCHER_URL)") from err
    print(f"matcher accepted the withdrawal of {format_units(amount, decimals)} {sym} "
          f"(command {cmd_seq}; settles with item <= {upto})")
    if args.no_wait:
        return 0
    prog = Progress("waiting for settlement on-chain")
    deadline = time.monotonic() + args.timeout
    ev_filter = client.contract.events.Withdrawn()
    while True:
        # nextSeq before the logs: a batch mined between the two reads is then in the logs, not
        # taken for a rejection
        nxt = client.next_seq()
        logs = ev_filter.get_logs(from_block=start_block, argument_filters={"owner": owner})
        for ev in logs:
            a = ev["args"]
            if (int(a["subaccount"]), int(a["asset"]), int(a["amount"])) == (w.subaccount, asset, amount) \
                    and 0 < int(a["seq"]) <= upto:
                prog.done(f"settled as item {a['seq']} in block {ev['blockNumber']}")
                bal = int(client.token(sym).functions.balanceOf(owner).call())
                print(f"withdrew {format_units(amount, decimals)} {sym} to {owner}; wallet holds "
                      f"{format_units(bal, decimals)} {sym}")
                return 0
        if nxt > upto:
            prog.done("not paid out")
            print(f"items up to {upto} are settled but no Withdrawn event matches: the chain rejected "
                  "the withdrawal (see ItemRejected events; the matcher reverses it)")
            return 1
        if time.monotonic() > deadline:
            prog.done("timed out")
            print(f"not settled within {args.timeout:.0f}s (chain nextSeq {nxt}, need > {upto}); "
                  "is the relayer running?")
            return 1
        prog.update(f"chain at item {nxt - 1} of {upto}")
        time.sleep(0.25)
