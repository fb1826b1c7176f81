"""Local price feeder for SettableFeed contracts.

The price paths are sans-I/O and integer-only: ``price_at(t_ms)`` is a pure function of time,
so a run is reproducible from its seed / file / scenario and tests need no clock.

* :class:`RandomWalk` — geometric random walk with jumps: each step multiplies the price by
  ``(PPM + step_ppm) / PPM`` where ``step_ppm`` is a sum of uniform integers from a seeded RNG
  (approximately normal, Irwin-Hall) plus an occasional jump.
* :class:`ReplayPath` — a price file ``t_ms,price`` (1e8 scale), step-held between rows.
* :class:`ScenarioPath` — "move by X% over D seconds starting at S", linear in integer math.

:class:`OracleFeeder` is the thin async shell that pushes changed prices on-chain.
"""
from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3

from crossbook.fixedpoint import PPM

log = logging.getLogger(__name__)

_SET_ANSWER = keccak(text="setAnswer(int256)")[:4]


class PricePath(Protocol):
    """A deterministic price as a function of milliseconds since the feeder started."""

    def price_at(self, t_ms: int) -> int:
        """The 1e8-scaled price at ``t_ms``."""


@dataclass
class RandomWalk:
    """Geometric random walk with jumps, one step every ``step_ms``.

    ``vol_ppm`` is the half-width of each of the 4 uniform terms of a step (so a step's
    standard deviation is about ``vol_ppm * 1.15``); with probability ``jump_ppm / PPM`` a
    step adds a jump of ``+-jump_size_ppm``. Prices never go below ``floor``.
    """

    start: int
    seed: int
    step_ms: int = 1_000
    vol_ppm: int = 1_000
    jump_ppm: int = 1_000
    jump_size_ppm: int = 50_000
    floor: int = 1
    _rng: random.Random = field(init=False, repr=False)
    _prices: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._prices = [self.start]

    def _step(self, price: int) -> int:
        rng = self._rng
        step = sum(rng.randint(-self.vol_ppm, self.vol_ppm) for _ in range(4))
        if rng.randrange(PPM) < self.jump_ppm:
            step += self.jump_size_ppm if rng.randrange(2) else -self.jump_size_ppm
        step = max(step, -PPM + 1)  # a step can never take the price to zero or below
        return max(self.floor, price * (PPM + step) // PPM)

    def price_at(self, t_ms: int) -> int:
        """Price after ``t_ms // step_ms`` steps (steps are generated once and cached)."""
        n = max(0, t_ms) // self.step_ms
        while len(self._prices) <= n:
            self._prices.append(self._step(self._prices[-1]))
        return self._prices[n]


@dataclass
class ReplayPath:
    """Replays ``(t_ms, price)`` rows, holding each price until the next row's time."""

    rows: list[tuple[int, int]]

    @classmethod
    def load(cls, path: Path | str) -> "ReplayPath":
        """Read a file of ``t_ms,price`` lines (``#`` comments and blank lines ignored)."""
        rows = []
        for line in Path(path).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                t, p = line.split(",")
                rows.append((int(t), int(p)))
        if not rows:
            raise ValueError(f"{path}: no price rows")
        rows.sort()
        return cls(rows)

    def price_at(self, t_ms: int) -> int:
        """The last row at or before ``t_ms`` (the first row before it starts)."""
        price = self.rows[0][1]
        for t, p in self.rows:
            if t > t_ms:
                break
            price = p
        return price


@dataclass
class ScenarioPath:
    """From ``start``, move linearly by ``change_ppm`` (e.g. -400_000 = -40%) over
    ``duration_ms`` beginning at ``begin_ms``; holds the target afterwards."""

    start: int
    change_ppm: int
    duration_ms: int
    begin_ms: int = 0

    @property
    def target(self) -> int:
        """The price reached at ``begin_ms + duration_ms``."""
        return self.start * (PPM + self.change_ppm) // PPM

    def price_at(self, t_ms: int) -> int:
        """Linear interpolation in integers; exactly ``target`` from the scheduled end on."""
        elapsed = min(max(t_ms - self.begin_ms, 0), self.duration_ms)
        # integer floor keeps the path monotone, and elapsed == duration gives exactly target
        return self.start + (self.target - self.start) * elapsed // self.duration_ms \
            if self.duration_ms else self.target

    _SPEC = re.compile(r"^\s*([+-]?\d+(?:\.\d{1,4})?)%\s+in\s+(\d+)\s*(s|m|min|h)\s*(?:after\s+(\d+)\s*(s|m|min|h))?\s*$")

    @classmethod
    def parse(cls, start: int, spec: str) -> "ScenarioPath":
        """``"-40% in 10m"``, ``"+15.5% in 90s after 30s"`` -> a scenario from ``start``."""
        m = cls._SPEC.match(spec)
        if not m:
            raise ValueError(f"bad scenario {spec!r}; expected like '-40% in 10m'")
        pct, dur, unit, after, after_unit = m.groups()
        whole, _, frac = pct.lstrip("+-").partition(".")
        ppm = int(whole) * 10_000 + int((frac + "0000")[:4])  # percent -> ppm without floats
        if pct.startswith("-"):
            ppm = -ppm
        return cls(start, ppm, _ms(int(dur), unit), _ms(int(after), after_unit) if after else 0)


def _ms(n: int, unit: str) -> int:
    return n * {"s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000}[unit]


def feed_answer(price: int, decimals: int = 8) -> int:
    """A 1e8 price in the feed's own decimals (the adapter scales back, truncating)."""
    return price * 10**decimals // 10**8


def set_answer_calldata(answer: int) -> bytes:
    """ABI calldata of ``SettableFeed.setAnswer(int256)``."""
    return _SET_ANSWER + abi_encode(["int256"], [answer])


class OracleFeeder:
    """Pushes each path's price to its SettableFeed whenever it changes (one tx per change).

    ``feeds`` maps a symbol to ``(feed address, decimals)``; ``clock`` returns milliseconds and
    is injectable so tests can step time.
    """

    def __init__(self, w3: AsyncWeb3, key: str | bytes, feeds: Mapping[str, tuple[str, int]],
                 paths: Mapping[str, PricePath], interval_s: float = 1.0,
                 clock: Callable[[], int] | None = None) -> None:
        self.w3 = w3
        self.account = Account.from_key(key)
        self.feeds = {s: (to_checksum_address(a), d) for s, (a, d) in feeds.items()}
        self.paths = dict(paths)
        self.interval_s = interval_s
        self.clock = clock or (lambda: time.monotonic_ns() // 1_000_000)
        self.t0 = self.clock()
        self.last: dict[str, int] = {}
        self._nonce: int | None = None
        self._stop = asyncio.Event()

    async def _send(self, to: str, data: bytes) -> bytes:
        if self._nonce is None:
            self._nonce = await self.w3.eth.get_transaction_count(self.account.address, "pending")
        blk = await self.w3.eth.get_block("latest")
        base = int(blk.get("baseFeePerGas", 0) or 0)
        tx = {"type": 2, "chainId": await self.w3.eth.chain_id, "nonce": self._nonce, "to": to, "data": data,
              "gas": 120_000, "maxFeePerGas": 2 * base + 10**9, "maxPriorityFeePerGas": 10**9, "value": 0}
        signed = self.account.sign_transaction(tx)
        try:
            h = bytes(await self.w3.eth.send_raw_transaction(signed.raw_transaction))
        except Exception:
            self._nonce = None  # resync: the nonce was not consumed
            raise
        self._nonce += 1
        return h

    async def step(self, wait: bool = True) -> dict[str, int]:
        """Push every price that changed since the last step; returns what was pushed."""
        t = self.clock() - self.t0
        pushed: dict[str, int] = {}
        hashes = []
        for sym, path in self.paths.items():
            price = path.price_at(t)
            if self.last.get(sym) == price:
                continue
            addr, dec = self.feeds[sym]
            hashes.append(await self._send(addr, set_answer_calldata(feed_answer(price, dec))))
            self.last[sym] = pushed[sym] = price
        if wait:
            for h in hashes:
                await self.w3.eth.wait_for_transaction_receipt(h, timeout=60, poll_latency=0.01)  # type: ignore[arg-type]
        return pushed

    async def run(self) -> None:
        """Step every ``interval_s`` until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                pushed = await self.step(wait=False)
                if pushed:
                    log.info("prices %s", pushed)
            except Exception as err:  # noqa: BLE001 - a node hiccup must not end the feeder
                log.warning("feeder step failed: %s", err)
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        """Make :meth:`run` return."""
        self._stop.set()


async def set_price(rpc_url: str, key: str | bytes, feed_address: str, price: int, decimals: int = 8) -> int:
    """Move one price by hand (the CLI's ``price set``): push ``price`` (1e8) to a SettableFeed
    and wait for it to be mined. Returns the answer written (feed decimals)."""
    from settlement.relayer import connect

    w3 = connect(rpc_url)
    feeder = OracleFeeder(w3, key, {"x": (feed_address, decimals)}, {"x": ReplayPath([(0, price)])})
    await feeder.step(wait=True)
    return feed_answer(price, decimals)
