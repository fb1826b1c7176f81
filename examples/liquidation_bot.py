#!/usr/bin/env python3
"""Example liquidation bot on the Crossbook SDK.

Finds sub-accounts (from the clearinghouse's ``Deposit`` events, plus any given with
``--account``), reads each one's health from the chain and, for every account the contract
finds below maintenance (``maintenance_health < 0``), calls ``liquidate`` on its largest
position with the bot's own sub-account as the taker. The exact size and price are previewed
with an ``eth_call`` first, so the transaction only goes out when it will succeed, and the price
limit allows ``--slippage`` against the previewed price.

It scans every ``--interval`` seconds and, with ``--matcher-url``, also right after every oracle
price update the matcher publishes on its ``prices`` channel (SDK subscription).

Anyone may liquidate (permissionless); the bot's sub-account must hold enough margin to take
the position over. The production keeper (``keeper/``) does the same at scale.

    python examples/liquidation_bot.py --deployment .crossbook/deployment.json --key 0x...
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from decimal import Decimal

if __package__ in (None, ""):  # run as a script from a checkout: make `crossbook` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crossbook.chain.errors import ContractRevert  # noqa: E402
from crossbook.sdk import Client, units  # noqa: E402
from crossbook.sdk.chain import ChainAccount  # noqa: E402
from web3 import Web3  # noqa: E402

log = logging.getLogger("liquidation_bot")
PPM = 1_000_000
MAX_U64 = 2**64 - 1


LOG_RANGE = 2_000  # blocks per eth_getLogs (the watcher's default range as well)


@dataclass
class LiquidationBot:
    """Scan-and-liquidate loop around a :class:`ChainAccount` (the liquidator's key)."""

    chain: ChainAccount
    liquidator_sub: int = 0
    slippage_ppm: int = 5_000
    accounts: set[tuple[str, int]] = field(default_factory=set)
    liquidations: list[str] = field(default_factory=list)  # tx hashes sent
    _scanned_block: int = -1

    def discover(self) -> None:
        """Add every (owner, sub) that ever received a deposit since the last call."""
        c = self.chain.client
        head = int(c.w3.eth.block_number)
        start = max(c.deployment.start_block, self._scanned_block + 1)
        if start > head:
            return
        # public RPC providers cap the blocks one eth_getLogs may span, so walk in steps
        for frm in range(start, head + 1, LOG_RANGE):
            to = min(head, frm + LOG_RANGE - 1)
            for ev in c.contract.events.Deposit().get_logs(from_block=frm, to_block=to):
                self.accounts.add((str(ev["args"]["owner"]), int(ev["args"]["subaccount"])))
            self._scanned_block = to

    def scan_once(self) -> int:
        """Check every known account; liquidate the unhealthy ones. Returns how many
        liquidations were sent."""
        self.discover()
        sent = 0
        me = (self.chain.address.lower(), self.liquidator_sub)
        for owner, sub in sorted(self.accounts):
            if (owner.lower(), sub) == me:
                continue
            try:
                h = self.chain.health(sub, owner)
            except ContractRevert as exc:  # e.g. OracleUnavailable: nobody can liquidate now
                log.info("health of %s/%d unavailable: %s", owner, sub, exc)
                continue
            if h.maintenance_health >= 0:
                continue
            log.info("%s/%d below maintenance by %s USD", owner, sub,
                     units.fmt(-h.maintenance_health, units.QUOTE_SCALE))
            if self.liquidate(owner, sub):
                sent += 1
        return sent

    def liquidate(self, owner: str, sub: int) -> bool:
        """Preview and send ``liquidate`` on the account's largest position."""
        c = self.chain.client
        acct = c.subaccount(owner, sub)
        prices = c.prices()
        positions = [(abs(p.size) * prices.markets[m], m, p.size)
                     for m, p in acct.positions.items() if p.size]
        if not positions:
            return False
        _, market, size = max(positions)
        try:
            # preview with no price limit: the contract computes size and price itself
            q_size, q_price = c.call_liquidate(self.chain.address, owner, sub, market, abs(size),
                                               MAX_U64 if size > 0 else 0, self.liquidator_sub)
        except ContractRevert as exc:
            log.info("liquidation of %s/%d not possible now: %s", owner, sub, exc)
            return False
        # a long target is bought (the limit is a ceiling), a short one sold (a floor)
        if size > 0:
            limit = min(MAX_U64, -((-q_price * (PPM + self.slippage_ppm)) // PPM))
        else:
            limit = q_price * (PPM - self.slippage_ppm) // PPM
        try:
            receipt = c.liquidate(self.chain.tx, owner, sub, market, q_size, limit, self.liquidator_sub)
        except ContractRevert as exc:  # lost a race to another keeper, or the price moved
            log.info("liquidate %s/%d reverted: %s", owner, sub, exc)
            return False
        tx = "0x" + receipt["transactionHash"].hex()  # HexBytes.hex() drops the prefix
        self.liquidations.append(tx)
        log.info("liquidated %s of %s/%d market %d at %s (tx %s)", units.fmt(q_size, units.SIZE_SCALE),
                 owner, sub, market, units.fmt(q_price, units.PRICE_SCALE), tx)
        return True


async def run(bot: LiquidationBot, interval_s: float, matcher_url: str | None,
              duration_s: float | None = None) -> None:
    """Scan every ``interval_s`` and on every oracle price update from the matcher."""
    wake = asyncio.Event()
    client = None
    if matcher_url:
        client = await Client.connect(matcher_url)
        await client.subscribe(["prices"], callback=lambda _msg: wake.set())
    loop = asyncio.get_running_loop()
    end = None if duration_s is None else loop.time() + duration_s
    try:
        while end is None or loop.time() < end:
            wake.clear()
            await asyncio.to_thread(bot.scan_once)  # web3 is synchronous: keep the loop free
            try:
                await asyncio.wait_for(wake.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
    finally:
        if client is not None:
            await client.close()


def parse_account(text: str) -> tuple[str, int]:
    """``OWNER[:SUB]`` -> (checksummed owner, sub): the form Deposit events carry, so an account
    given on the command line is never scanned twice."""
    owner, _, sub = text.partition(":")
    return Web3.to_checksum_address(owner), int(sub or 0)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deployment", default=os.environ.get("CROSSBOOK_DEPLOYMENT"),
                   help="deployment JSON written by `crossbook up` [$CROSSBOOK_DEPLOYMENT]")
    p.add_argument("--rpc-url", default=os.environ.get("CROSSBOOK_RPC_URL"),
                   help="JSON-RPC endpoint (default: the deployment's) [$CROSSBOOK_RPC_URL]")
    p.add_argument("--key", default=os.environ.get("CROSSBOOK_LIQUIDATOR_KEY"),
                   help="liquidator private key (pays gas, owns the taking sub-account) [$CROSSBOOK_LIQUIDATOR_KEY]")
    p.add_argument("--sub", type=int, default=0, help="the liquidator's sub-account (default 0)")
    p.add_argument("--matcher-url", help="also scan on every oracle update the matcher publishes")
    p.add_argument("--account", action="append", default=[], metavar="OWNER:SUB",
                   help="watch this sub-account too (repeatable)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scans (default 2)")
    p.add_argument("--slippage", default="0.005", help="price limit tolerance as a fraction (default 0.005)")
    p.add_argument("--once", action="store_true", help="scan once and exit")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    if not args.deployment or not args.key:
        print("--deployment and --key are required", file=sys.stderr)
        return 2
    try:
        chain = ChainAccount.from_deployment(args.deployment, args.key, args.rpc_url)
    except OSError as err:  # the deployment file is missing or unreadable
        print(f"--deployment: cannot read {args.deployment}: {err.strerror or err}", file=sys.stderr)
        return 2
    except ValueError as err:  # binascii.Error included: the key is not hex
        print(f"--key: not a private key ({err}); give it as 0x + 64 hex digits", file=sys.stderr)
        return 2
    bot = LiquidationBot(chain, args.sub, units.ppm(Decimal(args.slippage), "down"))
    bot.accounts.update(parse_account(a) for a in args.account)
    if args.once:
        print(f"liquidations sent: {bot.scan_once()}")
        return 0
    try:
        asyncio.run(run(bot, args.interval, args.matcher_url))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
