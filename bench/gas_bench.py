"""`crossbook bench gas`: gas per settled fill on anvil, steady state and fresh takers.

Steady state: 50 market-maker and 200 taker sub-accounts that already hold positions in every
market; each fill pairs a fresh signed taker order with a maker's resting order (makers' orders
fill many times, as on a live book). Fresh: 100 takers making their first trade. Repeat accounts: one batch of 1,000 fills among
20 accounts (10 makers, 10 takers, all holding positions), a fresh order on each side filled
completely, as when the same accounts trade many times per block. Matcher flow: the settle bench's flow
(bench/settle_bench.py: 200 accounts, fills from real books, ~1.07 signed orders per fill), three warm-up
batches of 1,000 fills so accounts already hold positions, then one measured batch of 1,000 fills.
Gas per fill = the settle transaction's gasUsed (intrinsic 21k and calldata included) / fills.

`python -m bench.gas_bench breakdown [fills] [warm-up fills]` breaks one batch of the matcher flow (default 440
fills, the settle bench's batch size, after 3,000 warm-up fills) down by opcode class: an opcode trace of the
batch (debug_traceCall on anvil) with each step's actual cost, storage accesses split cold/warm/new; and the
settlement module's gas per fill by source function ([all, compute, instructions]; forge's source map, innermost
function). Instructions per fill show what a change really removes: in the legacy code generator a branch or a
memory field costs about as much as the lookup or call it replaces.
"""
from __future__ import annotations

import json
import random
import re
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from crossbook.batch_codec import encode_batch
from crossbook.chain.anvil import AnvilNode
from crossbook.chain.local_exchange import LocalExchange, user_signer
from crossbook.config import DEFAULT_SPEC, SIZE, USD
from crossbook.paths import CONTRACTS_OUT
from crossbook.eip712 import Signer
from crossbook.protocol_types import FillItem, Order

MAKERS, TAKERS, FRESH = 50, 200, 100
REPEAT_FILLS, REPEAT_ACCOUNTS = 1000, 20
MATCHER_FILLS = 1000


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Flow:
    """Generates valid fills: random taker, random maker, random market, small size."""

    def __init__(self, ex: LocalExchange, makers: list[Signer], rng: random.Random) -> None:
        self.ex, self.makers, self.rng = ex, makers, rng
        self.resting: dict[tuple[int, int, bool], tuple[Order, bytes]] = {}
        for mi, m in enumerate(makers):
            for market, spec in enumerate(DEFAULT_SPEC.markets):
                px = self.price(market)
                for is_buy in (True, False):
                    limit = px - 10 * spec.tick_size if is_buy else px + 10 * spec.tick_size
                    self.resting[(mi, market, is_buy)] = ex.order(m, market, is_buy, limit, 10**6 * SIZE)

    @staticmethod
    def price(market: int) -> int:
        feed = DEFAULT_SPEC.markets[market].feed_id
        return DEFAULT_SPEC.feeds[feed].initial_price

    def fill(self, taker: Signer, market: int | None = None, taker_buys: bool | None = None) -> FillItem:
        rng = self.rng
        market = rng.randrange(len(DEFAULT_SPEC.markets)) if market is None else market
        taker_buys = rng.random() < 0.5 if taker_buys is None else taker_buys
        mi = rng.randrange(len(self.makers))
        maker = self.resting[(mi, market, not taker_buys)]
        spec = DEFAULT_SPEC.markets[market]
        size = spec.lot_size * rng.randint(1, 20)
        price = maker[0].price
        taker_limit = price + 20 * spec.tick_size if taker_buys else price - 20 * spec.tick_size
        taker_order = self.ex.order(taker, market, taker_buys, taker_limit, size)
        return self.ex.fill(taker_order, maker, size, price)


def _repeat_fills(ex: LocalExchange, makers: list[Signer], takers: list[Signer], rng: random.Random,
                  n: int) -> list[FillItem]:
    """`n` fills among the given accounts, a fresh order on both sides filled completely."""
    items = []
    for _ in range(n):
        market = rng.randrange(len(DEFAULT_SPEC.markets))
        spec = DEFAULT_SPEC.markets[market]
        px = _Flow.price(market)
        size = spec.lot_size * rng.randint(1, 20)
        taker_buys = rng.random() < 0.5
        taker = ex.order(rng.choice(takers), market, taker_buys, px, size)
        maker = ex.order(rng.choice(makers), market, not taker_buys, px, size)
        items.append(ex.fill(taker, maker, size, px))
    return items


def _settle_all(ex: LocalExchange, items: list[FillItem]) -> int:
    res = ex.settle(items, gas=59_000_000)
    if res.rejected:
        raise RuntimeError(f"benchmark fills were rejected: {res.rejected}")
    return res.gas_used


def _matcher_flow(node: AnvilNode) -> int:
    """Gas per fill of one 1,000-fill batch of the settle bench's flow, after three warm-up batches."""
    from bench.settle_bench import matcher_flow_fills  # the flow generator; imported late (it pulls in the matcher)

    ex = LocalExchange(node)
    items, _, owners = matcher_flow_fills(ex, 4 * MATCHER_FILLS)
    ex.fund_many(owners, "USDC", 10_000_000 * USD)
    for i in range(0, 3 * MATCHER_FILLS, MATCHER_FILLS):
        _settle_all(ex, items[i:i + MATCHER_FILLS])
    return _settle_all(ex, items[3 * MATCHER_FILLS:]) // MATCHER_FILLS


def run() -> dict[str, Any]:
    """Measure and return the figures (keys documented in docs/performance.md)."""
    rng = random.Random(7)
    with AnvilNode(gas_limit=60_000_000) as node:
        _progress("deploying ...")
        ex = LocalExchange(node)
        makers = [user_signer(1000 + i) for i in range(MAKERS)]
        takers = [user_signer(2000 + i) for i in range(TAKERS)]
        fresh = [user_signer(3000 + i) for i in range(FRESH)]
        _progress(f"funding {MAKERS + TAKERS + FRESH} sub-accounts ...")
        ex.fund_many([m.address for m in makers], "USDC", 50_000_000 * USD)
        ex.fund_many([t.address for t in takers + fresh], "USDC", 1_000_000 * USD)
        flow = _Flow(ex, makers, rng)
        _progress("opening positions in every market for every account ...")
        warmup = [flow.fill(t, market) for t in takers for market in range(len(DEFAULT_SPEC.markets))]
        warmup += [flow.fill(takers[i % TAKERS], market=None) for i in range(MAKERS * 3)]
        for i in range(0, len(warmup), 100):
            _settle_all(ex, warmup[i:i + 100])
        figures: dict[str, Any] = {}
        for n in (1, 10, 100):
            runs = [_settle_all(ex, [flow.fill(rng.choice(takers)) for _ in range(n)]) for _ in range(3)]
            figures[f"gas_per_fill_{n}"] = sorted(runs)[1] // n  # median of three batches
            _progress(f"steady state, batch {n}: {figures[f'gas_per_fill_{n}']} gas/fill")
        figures["fresh_gas_per_fill_100"] = _settle_all(ex, [flow.fill(t) for t in fresh]) // FRESH
        _progress(f"fresh takers, batch 100: {figures['fresh_gas_per_fill_100']} gas/fill")
        half = REPEAT_ACCOUNTS // 2
        repeat = _repeat_fills(ex, makers[:half], takers[:half], rng, REPEAT_FILLS)
        figures["gas_per_fill_1000_20acct"] = _settle_all(ex, repeat) // REPEAT_FILLS
        _progress(f"{REPEAT_FILLS} fills among {REPEAT_ACCOUNTS} accounts: "
                  f"{figures['gas_per_fill_1000_20acct']} gas/fill")
    with AnvilNode(gas_limit=60_000_000) as node:
        _progress("matcher flow: signing, funding, three warm-up batches ...")
        figures["gas_per_fill_matcher_flow_1000"] = _matcher_flow(node)
        _progress(f"matcher flow, batch {MATCHER_FILLS}: {figures['gas_per_fill_matcher_flow_1000']} gas/fill")
    figures.update(markets=len(DEFAULT_SPEC.markets), makers=MAKERS, takers=TAKERS)
    return figures


# opcode classes of the breakdown; SLOAD and SSTORE are split by their actual cost
_STORAGE_COST = {"SLOAD": {2100: "SLOAD cold", 100: "SLOAD warm"},
                 "SSTORE": {22100: "SSTORE cold, fresh slot", 20000: "SSTORE fresh slot", 5000: "SSTORE cold",
                            2900: "SSTORE first write", 100: "SSTORE rewrite"}}
_CALLS = ("CALL", "STATICCALL", "DELEGATECALL")
_COMPUTE = ("stack", "jumps", "memory", "arithmetic, calldata reads, other")


def _op_class(op: str, cost: int) -> str:
    if op in _STORAGE_COST:
        return _STORAGE_COST[op].get(cost, f"{op} {cost}")
    if op == "STATICCALL" and 3000 <= cost < 4000:
        return "ecrecover"  # the only precompile the settlement calls; a call that returns at once
    if op in _CALLS:
        return "calls (entry, oracle)"
    if op == "KECCAK256":
        return "keccak"
    if op in ("MLOAD", "MSTORE", "MSTORE8", "CALLDATACOPY", "MCOPY"):
        return "memory"
    if op.startswith(("PUSH", "DUP", "SWAP")) or op == "POP":
        return "stack"
    if op in ("JUMP", "JUMPI", "JUMPDEST"):
        return "jumps"
    return "arithmetic, calldata reads, other"


_FUNCTION = re.compile(rb"function\s+(\w+)\s*\([^;{]*\{")


def _functions(path: Path) -> list[tuple[int, int, str]]:
    """(start, end, "File.name") of each function with a body in a Solidity source, by byte offset."""
    src = path.read_bytes()
    out = []
    for f in _FUNCTION.finditer(src):
        depth, j = 1, f.end()
        while depth:  # an unbalanced brace in a comment or string inside a body would miscount (these have none)
            depth += {ord("{"): 1, ord("}"): -1}.get(src[j], 0)
            j += 1
        out.append((f.start(), j, f"{path.stem}.{f.group(1).decode()}"))
    return out


def _source_ids(contract: str, source_id: int) -> dict[str, str]:
    """Source id -> path of the newest build that compiled `contract`'s source as `source_id` (a later build of a
    subset, e.g. only tests, leaves a build-info without it or with other ids)."""
    for path in sorted((CONTRACTS_OUT / "build-info").glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        ids: dict[str, str] = json.loads(path.read_text())["source_id_to_path"]
        if ids.get(str(source_id), "").endswith(f"/{contract}.sol"):
            return ids
    raise RuntimeError(f"no build-info maps source id {source_id} to {contract}.sol: run forge build")


def _pc_functions(contract: str) -> dict[int, str]:
    """Runtime pc of `contract` -> the innermost source function its instruction comes from (forge's source map;
    "(generated)" for compiler-generated code without a source)."""
    art = json.loads((CONTRACTS_OUT / f"{contract}.sol" / f"{contract}.json").read_text())
    code = bytes.fromhex(art["deployedBytecode"]["object"].removeprefix("0x"))
    info = _source_ids(contract, art["id"])
    sources: dict[int, list[tuple[int, int, str]]] = {}
    names: dict[int, str] = {}
    pc = start = source = 0
    for entry in art["deployedBytecode"]["sourceMap"].split(";"):
        if pc >= len(code):
            break
        fields = entry.split(":")
        if fields[0]:
            start = int(fields[0])
        if len(fields) > 2 and fields[2]:
            source = int(fields[2])
        path = info.get(str(source))
        if path is None:
            names[pc] = "(generated)"
        else:
            if source not in sources:
                sources[source] = _functions(CONTRACTS_OUT.parent / path)
            inner = [(b - a, n) for a, b, n in sources[source] if a <= start < b]
            names[pc] = min(inner)[1] if inner else f"{Path(path).stem} (outside functions)"
        op = code[pc]
        pc += 1 + (op - 0x5F if 0x60 <= op <= 0x7F else 0)  # PUSH1..PUSH32 carry immediates
    return names


def breakdown(fills: int = 440, warm: int = 3 * MATCHER_FILLS) -> dict[str, Any]:
    """Gas of one `fills`-item batch of the matcher flow (after `warm` fills settled) by opcode class, and the
    settlement module's share by source function (all gas, compute: stack, jumps, memory, arithmetic, and the
    number of instructions executed), each per fill."""
    from bench.settle_bench import matcher_flow_fills  # imported late, as in _matcher_flow

    with AnvilNode(gas_limit=60_000_000) as node:
        ex = LocalExchange(node)
        items, _, owners = matcher_flow_fills(ex, warm + fills)
        ex.fund_many(owners, "USDC", 10_000_000 * USD)
        for i in range(0, warm, MATCHER_FILLS):
            _settle_all(ex, items[i:min(i + MATCHER_FILLS, warm)])
        batch = items[warm:]
        data = bytes.fromhex(ex.client.contract.functions.settle(encode_batch(ex.client.next_seq(), batch))
                             ._encode_transaction_data()[2:])
        call = {"from": ex.operator.address, "to": ex.client.contract.address, "data": "0x" + data.hex(),
                "gas": hex(59_000_000)}
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "debug_traceCall", "params": [
            call, "latest", {"disableStack": True, "disableMemory": True, "disableStorage": True}]}).encode()
        req = urllib.request.Request(node.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            steps = json.loads(resp.read())["result"]["structLogs"]
        gas_used = _settle_all(ex, batch)
    by_class: Counter[str] = Counter()
    by_fn: Counter[str] = Counter()
    compute_fn: Counter[str] = Counter()
    ops_fn: Counter[str] = Counter()
    fn_of = _pc_functions("SettlementModule")
    for i, st in enumerate(steps):
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if nxt is not None and nxt["depth"] == st["depth"]:
            cost = st["gas"] - nxt["gas"]  # the step's actual cost (a precompile call included)
        else:
            cost = 0 if st["op"] in _CALLS else st["gasCost"]  # a call's cost is its callee's steps
        cls = _op_class(st["op"], cost)
        by_class[cls] += cost
        if st["depth"] == 2:  # the module's frame: Clearinghouse.settle delegatecalls it
            fn = fn_of.get(st["pc"], "?")
            by_fn[fn] += cost
            ops_fn[fn] += 1
            if cls in _COMPUTE:
                compute_fn[fn] += cost
    zeros = data.count(0)
    by_class["calldata"] = 16 * (len(data) - zeros) + 4 * zeros
    by_class["intrinsic 21,000"] = 21_000
    by_class["refund, call overheads (rest of gasUsed)"] = gas_used - sum(by_class.values())
    return {"fills": fills, "gas_per_fill": gas_used // fills, "calldata_bytes": len(data),
            "per_fill": {k: round(v / fills) for k, v in by_class.most_common()},
            "settlement_module_per_fill": {k: [round(v / fills), round(compute_fn[k] / fills), round(ops_fn[k] / fills)]
                                           for k, v in by_fn.most_common() if v >= fills * 20}}


if __name__ == "__main__":
    if sys.argv[1:2] == ["breakdown"]:
        print(json.dumps(breakdown(*(int(a) for a in sys.argv[2:4]))))
    else:
        print(json.dumps(run()))
