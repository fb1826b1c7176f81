"""``crossbook markets``: the listing with live oracle prices, open interest and funding."""
from __future__ import annotations

import argparse
import json
from typing import Any

from crossbook.commands.common import add_chain_args, chain_client, format_units


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``markets``."""
    p = sub.add_parser("markets", help="list markets with oracle prices, open interest and funding index")
    p.add_argument("--json", action="store_true", help="print JSON (integers in protocol units)")
    add_chain_args(p)
    p.set_defaults(func=run)


def markets_report(client: Any) -> dict[str, Any]:
    """Markets and collateral, read from the chain (integers in protocol units)."""
    from crossbook.chain.errors import ContractRevert

    spec = client.spec
    c = client.contract.functions

    def price(feed_id: int) -> int | None:
        try:
            return int(client.oracle_price(feed_id))
        except ContractRevert:
            return None  # stale or out of band: the adapter refuses it (invariant 8)

    markets = []
    for i, m in enumerate(spec.markets):
        markets.append({
            "market": i, "symbol": m.symbol, "feed": spec.feeds[m.feed_id].symbol, "oracle_price": price(m.feed_id),
            "open_interest": int(c.openInterest(i).call()), "open_interest_cap": m.open_interest_cap,
            "funding_index": int(c.cumulativeFunding(i).call()), "max_funding_ppm": m.max_funding_ppm,
            "tick_size": m.tick_size, "lot_size": m.lot_size,
            "imf_ppm": m.tiers[0].imf_ppm, "mmf_ppm": m.tiers[0].mmf_ppm,
        })
    collateral = [{"asset": 0, "symbol": spec.quote_symbol, "weight_init_ppm": 1_000_000,
                   "weight_maint_ppm": 1_000_000, "oracle_price": 10**8}]
    for i, col in enumerate(spec.collaterals):
        collateral.append({"asset": i + 1, "symbol": col.symbol, "weight_init_ppm": col.weight_init_ppm,
                           "weight_maint_ppm": col.weight_maint_ppm, "oracle_price": price(col.feed_id)})
    return {"markets": markets, "collateral": collateral, "insurance_fund": client.insurance_fund(),
            "next_seq": client.next_seq()}


def run(args: argparse.Namespace) -> int:
    """Entry point of ``crossbook markets``."""
    client = chain_client(args)
    rep = markets_report(client)
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    print(f"{'market':<10} {'oracle':>14} {'open interest':>16} {'OI cap':>12} {'funding index':>16} "
          f"{'IMF/MMF':>12}")
    for m in rep["markets"]:
        px = "stale" if m["oracle_price"] is None else format_units(m["oracle_price"], 8, 4)
        print(f"{m['symbol']:<10} {px:>14} {format_units(m['open_interest'], 8, 4):>16} "
              f"{format_units(m['open_interest_cap'], 8, 0):>12} {format_units(m['funding_index'], 8):>16} "
              f"{format_units(m['imf_ppm'], 4) + '%/' + format_units(m['mmf_ppm'], 4) + '%':>12}")
    print()
    print(f"{'collateral':<10} {'oracle':>14} {'weight init/maint':>20}")
    for col in rep["collateral"]:
        px = "stale" if col["oracle_price"] is None else format_units(col["oracle_price"], 8, 4)
        print(f"{col['symbol']:<10} {px:>14} {col['weight_init_ppm'] // 10_000:>9}% / "
              f"{col['weight_maint_ppm'] // 10_000}%")
    print()
    print(f"insurance fund {format_units(rep['insurance_fund'], 6, 2)} USDC; next settlement seq "
          f"{rep['next_seq']}")
    return 0
