"""Engine-core benchmark on exchange-core's order mix, with the risk check on.

Mix per command: 9% GTC limit, 3% IOC, 6% cancel, 82% move (re-price one of the account's own
resting orders). Books start with a few thousand resting orders each. The command list is built
before timing from a fixed seed, by driving a scratch copy (so every cancel and move names a live
order); each timed round replays it on a fresh, identically pre-filled copy, and the final state
hashes are checked against the scratch copy so a fast-but-wrong core cannot pass.

Two figures:
- ``commands_per_s``: the matching engine (matcher/engine.py) with pre-trade risk on the shadow
  ledger, on the listed markets: 200 funded accounts; a place is a signed order (the signature
  itself was checked by intake, before the engine); a move is the engine's cancel-replace into a
  new signed order (its limit changed, so it needs a new signature), as the websocket API does it.
- ``book_commands_per_s``: the bare order books (matcher/book.py) on the same mix, no risk.

    python -c "from bench.matcher_bench import run; print(run())"

``--callgrind`` counts instructions per move instead (deterministic, so unaffected by other
load; see :func:`callgrind`):

    .venv/bin/python -m bench.matcher_bench --callgrind
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from functools import partial
from typing import Any, Callable

from bench import callgrind as callgrind_run
from crossbook.protocol_types import Order as SignedOrder
from matcher.book import OrderBook
from matcher.commands import CancelOrder, ChainDeposit, Command, ModifyOrder, PlaceOrder, SetOraclePrices
from matcher.engine import Engine, EngineConfig, OrderRec
from matcher.orders import Fill, Order, Tif

MARKETS = 4
PREFILL = 3000  # resting orders per book before timing
ACCOUNTS = 200  # owners per market
COMMANDS = 300_000  # per round (all markets together)
TICK = 1_000_000  # 0.01 quote at price scale 1e8
LOT = 100_000  # 0.001 base at size scale 1e8
MID = 30_000 * 10**8
SPREAD_TICKS = 200  # resting orders sit within this many ticks of the mid
NOW = 1_700_000_000

# (market, kind, args): kind "place" args = Order constructor args; "cancel" (oid,);
# "move" (oid, price, size)
Cmd = tuple[int, str, tuple[Any, ...]]


def _order(args: tuple[Any, ...]) -> Order:
    oid, owner, is_buy, price, size, tif = args
    return Order(oid, owner, 0, is_buy, price, size, tif)


def _passive_price(rng: random.Random, is_buy: bool) -> int:
    off = rng.randint(1, SPREAD_TICKS) * TICK
    return MID - off if is_buy else MID + off


def _generate(seed: int) -> tuple[list[Cmd], list[Cmd], list[bytes]]:
    """Prefill commands, timed commands and the books' expected final state hashes."""
    rng = random.Random(seed)
    books = [OrderBook(m, TICK, LOT) for m in range(MARKETS)]
    live: list[list[int]] = [[] for _ in range(MARKETS)]  # live order ids per market
    where: list[dict[int, int]] = [{} for _ in range(MARKETS)]  # oid -> index in live
    oid = 0

    def track(m: int, events: list[Any], new: int | None) -> None:
        lv, ix, b = live[m], where[m], books[m]
        if new is not None and b.get(new) is not None and new not in ix:
            ix[new] = len(lv)
            lv.append(new)
        for e in events:
            gone = [e.maker_id, e.taker_id] if isinstance(e, Fill) else [getattr(e, "order_id", 0)]
            for g in gone:
                if g in ix and b.get(g) is None:
                    i = ix.pop(g)
                    last = lv.pop()
                    if last != g:
                        lv[i] = last
                        ix[last] = i

    def place(m: int, is_buy: bool, price: int, tif: int, out: list[Cmd], lots: int = 50) -> None:
        nonlocal oid
        oid += 1
        args = (oid, f"acct{rng.randrange(ACCOUNTS)}", is_buy, price, rng.randint(1, lots) * LOT,
                tif)
        out.append((m, "place", args))
        track(m, books[m].place(_order(args), NOW), oid)

    prefill: list[Cmd] = []
    for m in range(MARKETS):
        for i in range(PREFILL):
            is_buy = i % 2 == 0
            place(m, is_buy, _passive_price(rng, is_buy), Tif.GTC, prefill)

    cmds: list[Cmd] = []
    for _ in range(COMMANDS):
        m = rng.randrange(MARKETS)
        b = books[m]
        r = rng.random()
        if r < 0.82 and live[m]:
            target = live[m][rng.randrange(len(live[m]))]
            o = b.get(target)
            assert o is not None
            price = _passive_price(rng, o.is_buy)
            if rng.random() < 0.01:
                # a few moves cross the spread and trade
                best = b.best_ask() if o.is_buy else b.best_bid()
                if best is not None:
                    price = best
            args: tuple[Any, ...] = (target, price, o.size)
            cmds.append((m, "move", args))
            track(m, b.modify(target, price, o.size, NOW), None)
        elif r < 0.88 and live[m]:
            target = live[m][rng.randrange(len(live[m]))]
            cmds.append((m, "cancel", (target,)))
            track(m, b.cancel(target), None)
        elif r < 0.97:
            is_buy = rng.random() < 0.5
            price = _passive_price(rng, is_buy)
            if rng.random() < 0.03:
                best = b.best_ask() if is_buy else b.best_bid()
                if best is not None:
                    price = best
            place(m, is_buy, price, Tif.GTC, cmds)
        else:
            is_buy = rng.random() < 0.5
            best = b.best_ask() if is_buy else b.best_bid()
            price = MID if best is None else best + (2 * TICK if is_buy else -2 * TICK)
            place(m, is_buy, price, Tif.IOC, cmds, lots=20)
    return prefill, cmds, [b.state_hash() for b in books]


def _bind(books: list[OrderBook], cmds: list[Cmd]) -> list[Callable[[], Any]]:
    """Turn commands into argument-less calls (``partial`` of the bound method: one C-level
    call per command, like an engine calling ``book.modify(...)`` directly, instead of the
    tuple unpacking and ``fn(*args)`` of a generic replay loop), building fresh Order objects."""
    out: list[Callable[[], Any]] = []
    for m, kind, args in cmds:
        b = books[m]
        if kind == "place":
            out.append(partial(b.place, _order(args), NOW))
        elif kind == "cancel":
            out.append(partial(b.cancel, *args))
        else:
            target, price, size = args
            out.append(partial(b.modify, target, price, size, NOW))
    return out


_cache: dict[int, tuple[list[Cmd], list[Cmd], list[bytes]]] = {}


def run_books(seconds: float = 3.0, seed: int = 1) -> dict[str, int | float]:
    """Replay the precomputed command list on fresh books until ``seconds`` of timed matching
    have accumulated; returns commands per second over all timed rounds."""
    if seed not in _cache:
        _cache[seed] = _generate(seed)
    prefill, cmds, expected = _cache[seed]
    done = 0
    elapsed = 0.0
    resting = 0
    while elapsed < seconds or done == 0:
        books = [OrderBook(m, TICK, LOT) for m in range(MARKETS)]
        for call in _bind(books, prefill):
            call()
        bound = _bind(books, cmds)
        # the precomputed command list is scaffolding, not engine state: keep the collector
        # from re-scanning it (a long-running engine freezes its start-up heap the same way)
        gc.collect()
        gc.freeze()
        t0 = time.perf_counter()
        for call in bound:
            call()
        elapsed += time.perf_counter() - t0
        gc.unfreeze()
        done += len(bound)
        if [b.state_hash() for b in books] != expected:
            raise AssertionError("replay diverged from the generator's books")
        resting = sum(len(b) for b in books)
    return {
        "commands_per_s": round(done / elapsed),
        "commands": done,
        "seconds": round(elapsed, 3),
        "orders": resting,
        "markets": MARKETS,
    }



# --- the engine with risk ---------------------------------------------------------------------

ENGINE_ACCOUNTS = 200
SIG = b"\x11" * 65  # intake checked the signature before the engine; the engine never reads it
ENGINE_CONFIG = EngineConfig(max_unsettled_per_account=10**9, max_unsettled_global=10**12)


def _owner(i: int) -> str:
    return "0x" + f"{0xC0DE0000 + i:040x}"


class _EngineFlow:
    """Builds engine commands for the mix; ``engine`` is the scratch copy that tracks live orders."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.spec = ENGINE_CONFIG.spec
        self.mids = [self.spec.feeds[m.feed_id].initial_price for m in self.spec.markets]
        self.owners = [_owner(i) for i in range(ENGINE_ACCOUNTS)]
        self.engine = Engine(ENGINE_CONFIG)
        self.live: list[list[int]] = [[] for _ in self.spec.markets]
        # per owner, in sequence, as the SDK's NonceManager hands them out (and the settle
        # benchmark's signer)
        self.nonces: dict[str, int] = {}
        self.req = 0

    def setup(self) -> list[Command]:
        """Oracle prices and a deposit per account (applied untimed before every round)."""
        spec = self.spec
        assets = {i + 1: spec.feeds[c.feed_id].initial_price for i, c in enumerate(spec.collaterals)}
        cmds: list[Command] = [SetOraclePrices(0, assets, dict(enumerate(self.mids)), NOW)]
        cmds += [ChainDeposit(0, w, 0, 0, 100_000_000 * 10**6) for w in self.owners]
        return cmds

    def _price(self, m: int, is_buy: bool) -> int:
        off = self.rng.randint(1, SPREAD_TICKS) * self.spec.markets[m].tick_size
        return self.mids[m] - off if is_buy else self.mids[m] + off

    def _order(self, m: int, owner: str, is_buy: bool, price: int, lots: int) -> SignedOrder:
        nonce = self.nonces[owner] = self.nonces.get(owner, 0) + 1
        return SignedOrder(owner, 0, m, is_buy, False, price, lots * self.spec.markets[m].lot_size, nonce,
                     NOW + 86_400, 1_000)

    def _run(self, cmd: Command, m: int) -> None:
        res = self.engine.apply(cmd)
        oid = res.ack.order_id
        if oid is not None and cmd.__class__ is not CancelOrder and oid in self.engine.orders:
            self.live[m].append(oid)  # a move is a cancel-replace: the new order has a new id

    def _pick(self, m: int) -> OrderRec | None:
        """A random live order of market ``m`` (orders that filled or expired are dropped lazily)."""
        lv, orders = self.live[m], self.engine.orders
        while lv:
            i = self.rng.randrange(len(lv))
            rec = orders.get(lv[i])
            if rec is not None:
                return rec
            lv[i] = lv[-1]
            lv.pop()
        return None

    def place(self, m: int, tif: int, price: int, is_buy: bool, lots: int) -> Command:
        self.req += 1
        owner = self.rng.choice(self.owners)
        return PlaceOrder(self.req, self._order(m, owner, is_buy, price, lots), SIG, owner, tif, None, 0, NOW)

    def move(self, m: int, rec: OrderRec) -> Command:
        """A move of ``rec`` (market ``m``): a signed cancel-replace at a new passive price
        (1% at the other side's best, so they trade), same size."""
        price = self._price(m, rec.is_buy)
        if self.rng.random() < 0.01:
            book = self.engine.books[m]
            best = book.best_ask() if rec.is_buy else book.best_bid()
            price = price if best is None else best
        self.req += 1
        s = rec.signed
        new = self._order(m, s.owner, s.is_buy, price,
                          max(1, rec.remaining // self.spec.markets[m].lot_size))
        return ModifyOrder(self.req, s.owner, rec.oid, new.size, new, SIG, s.owner, NOW)

    def generate(self, prefill: int, commands: int) -> tuple[list[Command], list[Command], bytes]:
        rng, eng = self.rng, self.engine
        setup = self.setup()
        for cmd in setup:
            eng.apply(cmd)
        pre: list[Command] = []
        for m in range(len(self.spec.markets)):
            for i in range(prefill):
                is_buy = i % 2 == 0
                c = self.place(m, int(Tif.GTC), self._price(m, is_buy), is_buy, rng.randint(1, 50))
                pre.append(c)
                self._run(c, m)
        cmds: list[Command] = []
        n_markets = len(self.spec.markets)
        for _ in range(commands):
            m = rng.randrange(n_markets)
            book = eng.books[m]
            r = rng.random()
            rec = self._pick(m) if r < 0.88 else None
            if r < 0.82 and rec is not None:
                c = self.move(m, rec)
            elif r < 0.88 and rec is not None:
                self.req += 1
                c = CancelOrder(self.req, rec.signed.owner, rec.oid, 0, m, None, NOW)
            elif r < 0.97:
                is_buy = rng.random() < 0.5
                price = self._price(m, is_buy)
                if rng.random() < 0.03:
                    best = book.best_ask() if is_buy else book.best_bid()
                    price = price if best is None else best
                c = self.place(m, int(Tif.GTC), price, is_buy, rng.randint(1, 50))
            else:
                is_buy = rng.random() < 0.5
                best = book.best_ask() if is_buy else book.best_bid()
                tick = self.spec.markets[m].tick_size
                price = self.mids[m] if best is None else best + (2 * tick if is_buy else -2 * tick)
                c = self.place(m, int(Tif.IOC), price, is_buy, rng.randint(1, 20))
            cmds.append(c)
            self._run(c, m)
        return setup + pre, cmds, eng.state_hash()


_engine_cache: dict[int, tuple[list[Command], list[Command], bytes]] = {}


def run_engine(seconds: float = 3.0, seed: int = 1, commands: int = 200_000) -> dict[str, int | float]:
    """The engine with risk on the mix: commands per second over timed rounds on fresh engines."""
    if seed not in _engine_cache:
        _engine_cache[seed] = _EngineFlow(random.Random(seed)).generate(PREFILL, commands)
    setup, cmds, expected = _engine_cache[seed]
    done, elapsed, accepted = 0, 0.0, 0
    while elapsed < seconds or done == 0:
        eng = Engine(ENGINE_CONFIG)
        for c in setup:
            eng.apply(c)
        apply = eng.apply
        gc.collect()
        gc.freeze()
        t0 = time.perf_counter()
        for c in cmds:
            apply(c)
        elapsed += time.perf_counter() - t0
        gc.unfreeze()
        done += len(cmds)
        if eng.state_hash() != expected:
            raise AssertionError("engine replay diverged from the generator's engine")
        accepted = len(eng.orders)
    return {"commands_per_s": round(done / elapsed), "engine_commands": done, "engine_seconds": round(elapsed, 3),
            "engine_markets": len(ENGINE_CONFIG.spec.markets), "engine_accounts": ENGINE_ACCOUNTS,
            "engine_resting": accepted}


def _moves(seed: int, n: int) -> tuple[list[Command], list[Command]]:
    """The engine's set-up (prices, deposits, prefill) and ``n`` moves only, built like the
    mix's moves (1% cross the spread) on a scratch engine."""
    flow = _EngineFlow(random.Random(seed))
    setup, _, _ = flow.generate(PREFILL, 0)
    moves: list[Command] = []
    while len(moves) < n:
        m = flow.rng.randrange(len(flow.spec.markets))
        rec = flow._pick(m)
        if rec is not None:
            c = flow.move(m, rec)
            moves.append(c)
            flow._run(c, m)
    return setup, moves


def _count_moves(apply_n: int, built: int, seed: int = 1) -> None:
    """The driver ``callgrind`` runs: build ``built`` moves, then apply the first ``apply_n``
    of them to a fresh engine with the collector off."""
    setup, moves = _moves(seed, built)
    eng = Engine(ENGINE_CONFIG)
    for c in setup:
        eng.apply(c)
    gc.collect()
    gc.disable()
    apply = eng.apply
    for c in moves[:apply_n]:
        apply(c)


def callgrind(moves: int = 3000) -> dict[str, Any]:
    """Instructions per move (the engine's signed cancel-replace, with risk) from ``valgrind
    --tool=callgrind``: two runs of ``--count-moves`` that build the same ``moves`` moves and
    apply none or all of them; the difference of their totals over ``moves`` cancels start-up,
    imports, the set-up and the moves' generation. GC off, as a frozen matcher heap runs."""
    # both at once (they are independent); a fixed hash seed keeps dict layouts equal
    runs = [callgrind_run.start(["bench.matcher_bench", "--count-moves", str(n), "--built", str(moves)],
                                {"PYTHONHASHSEED": "0"}) for n in (0, moves)]
    totals = [callgrind_run.total(p) for p in runs]
    return {"instructions_per_move": round((totals[1] - totals[0]) / moves), "moves": moves}


def run(seconds: float = 3.0, seed: int = 1) -> dict[str, int | float]:
    """Both figures: the engine with risk (``commands_per_s``) and the bare books."""
    books = run_books(seconds, seed)
    out: dict[str, int | float] = {"book_" + k: v for k, v in books.items()}
    out.update(run_engine(seconds, seed))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--callgrind", action="store_true",
                    help="instructions per move (two runs under valgrind, a few minutes)")
    ap.add_argument("--count-moves", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--built", type=int, default=3000, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.count_moves is not None:
        _count_moves(a.count_moves, a.built)
    else:
        print(json.dumps(callgrind() if a.callgrind else run(), sort_keys=True))
