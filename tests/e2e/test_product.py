"""The product, end to end (issue 6): "the stack starts in the background, the example market
maker and a taker trade, fills settle on-chain, a price crash makes the keeper liquidate, the
dashboard shows it, and everything shuts down cleanly."

One test, in that order, on the real supervisor (`crossbook up`: anvil, deploy, matcher, relayer,
watcher, keeper, mm1, mm2, dashboard as child processes, free ports, a temp CROSSBOOK_HOME):

1. wait until `up` is ready and both demo bots (`crossbook mm`, examples/market_maker.py) quote;
2. a taker (a fresh key, funded with `crossbook deposit --to`) lifts the bots' ETH asks with IOC
   orders (SDK Client) up to ~15x leverage, close to its 20x initial-margin limit;
3. the fills settle on-chain: the contract's position and quote balance equal the matcher's,
   BatchSettled events cover every fill's seq;
4. `crossbook oracle set ETH <price>` crashes ETH just below the taker's liquidation price; the
   keeper liquidates it on-chain (a Liquidated event) within LIQUIDATION_DEADLINE_S and the
   matcher tells the taker;
5. the dashboard (headless Chromium) lists the liquidation, its account lookup shows the reduced
   position and health, and its screenshot is not blank;
6. SIGINT to the supervisor: exit code 0, every child gone (no orphan pids), stack.json removed,
   anvil's state file written at shutdown.

Determinism: the stack runs with ``--without feeder``. The feeder's random walk would move ETH
under the taker (and re-anchors on `oracle set`, so the crash would stick but the margins around
it would not be exact); without it the oracle stays at the deployment's listing price until the
test moves it (feeds have a one-hour heartbeat, so nothing goes stale in the test's minute).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from crossbook.chain.clearinghouse import ClearinghouseClient
from settlement.events import ChainLiquidated
from crossbook.chain.deploy import Deployment
from crossbook.chain.devkeys import KEEPER, dev_address
from crossbook.chain.local_exchange import user_signer
from crossbook.config import DEFAULT_SPEC, PRICE, SIZE
from crossbook.paths import REPO_ROOT
from crossbook.sdk import Client, Rejected
from tests.browser import chrome_driver, screenshot_not_blank, wait_http
from tests.supervised import Up, alive

pytestmark = pytest.mark.timeout(180)

ETH = DEFAULT_SPEC.market_id("ETH-PERP")
ETH_FEED = DEFAULT_SPEC.feed_by_symbol["ETH"].feed_id
QUOTE = 10**6
DEPOSIT_USD = 200
TARGET_SIZE = SIZE  # 1 ETH (~3,000 USD) on 200 USD: ~15x, the initial-margin limit is 20x (5% IMF)
CHUNK = 3 * SIZE // 10  # per IOC: about one bot quote (1,000 USD) each
LIQUIDATION_DEADLINE_S = 30.0
SETTLE_DEADLINE_S = 30.0


def _cli(home: Path, *argv: str, timeout: float = 60) -> str:
    """Run a `crossbook` command against the stack in ``home``; its stdout (fails on rc != 0)."""
    env = {**os.environ, "CROSSBOOK_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("CROSSBOOK_DEPLOYMENT", None)
    r = subprocess.run([sys.executable, "-m", "crossbook.cli", *argv], capture_output=True, text=True,
                       env=env, cwd=REPO_ROOT, timeout=timeout)
    assert r.returncode == 0, f"crossbook {' '.join(argv)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def _wait(cond: Any, what: str, timeout: float, interval: float = 0.2) -> Any:
    """Poll ``cond`` until truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s: {what}"
        time.sleep(interval)


class Taker:
    """The taker's SDK connection and what its private channels said (latest position and
    health, every fill and liquidation message)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.position: dict[str, Any] | None = None
        self.health: dict[str, Any] | None = None
        self.fills: list[dict[str, Any]] = []
        self.liquidations: list[dict[str, Any]] = []

    def size(self) -> int:
        """The matcher's projected ETH position."""
        if self.position is None:
            return 0
        return sum(int(p["size"]) for p in self.position["positions"] if int(p["market"]) == ETH)

    def on_position(self, msg: dict[str, Any]) -> None:
        if msg.get("sub") == 0:
            self.position = msg

    def on_health(self, msg: dict[str, Any]) -> None:
        if msg.get("sub") == 0:
            self.health = msg

    def on_fill(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "fill":
            self.fills.append(msg)
        elif msg.get("type") == "liquidated":
            self.liquidations.append(msg)


async def _book_quoted(url: str, timeout: float) -> tuple[int, int]:
    """Wait until the ETH book has bids and asks from both bots (two price levels or a size
    beyond one bot's quote on each side); the best bid and ask."""
    c = await Client.connect(url)
    try:
        await c.subscribe([f"book.{ETH}"])
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            book = c.books.get(ETH)
            if book is not None and book.valid:
                bids, asks = book.top(4)
                if bids and asks and sum(s for _, s in bids) > CHUNK and sum(s for _, s in asks) > CHUNK:
                    return bids[0][0], asks[0][0]
            assert asyncio.get_running_loop().time() < deadline, "the bots never quoted both sides"
            await asyncio.sleep(0.2)
    finally:
        await c.close()


async def _open_taker(url: str, key_index: int) -> Taker:
    c = await Client.connect(url)
    await c.login(user_signer(key_index))
    t = Taker(c)
    await c.subscribe(["positions"], callback=t.on_position)
    await c.subscribe(["health"], callback=t.on_health)
    await c.subscribe(["fills"], callback=t.on_fill)
    return t


async def _take(t: Taker, oracle: int, timeout: float) -> None:
    """Lift the bots' asks with IOC buys until the taker holds TARGET_SIZE (the bots re-quote
    after each fill) or the matcher refuses on margin."""
    tick = DEFAULT_SPEC.markets[ETH].tick_size
    limit = oracle * 101 // 100 // tick * tick  # 1% through: the bots quote 0.1% around oracle
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while t.size() < TARGET_SIZE and loop.time() < deadline:
        size = min(CHUNK, TARGET_SIZE - t.size())
        before = len(t.fills)
        try:
            await t.client.place(ETH, True, limit, size, tif="IOC")
        except Rejected as exc:
            if exc.code == "INSUFFICIENT_MARGIN":
                break  # at the limit: as leveraged as the matcher allows
            raise
        # the position message follows the fills; give the bots a moment to re-quote
        end = loop.time() + 2.0
        while len(t.fills) == before and loop.time() < end:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)


def test_product_end_to_end(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    t_start = time.monotonic()
    timings: dict[str, float] = {}
    home = tmp_path / "home"
    home.mkdir()
    up = Up(home, ["--without", "feeder"])
    driver = None
    # the SDK connections live on a loop in a thread, so their channel callbacks keep running
    # while the test polls the chain and drives the browser
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="sdk-loop", daemon=True)
    loop_thread.start()

    def run(coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    taker: Taker | None = None
    try:
        # ---------------------------------------------------------------- 1. up, bots quoting
        st = up.wait_up(timeout=120)
        timings["up"] = time.monotonic() - t_start
        assert "feeder     skipped (--without)" in up.text()
        for name in ("anvil", "matcher", "relayer", "watcher", "keeper", "mm1", "mm2", "dashboard"):
            assert name in st["services"] and st["services"][name]["pid"], name
            assert alive(st["services"][name]["pid"]), name
        for name in ("mm1", "mm2", "dashboard"):  # their own ready gauges, not a time-alive guess
            body = _wait(lambda n=name: _metrics(st["services"][n]["urls"]["metrics"]), f"{name} /metrics", 10)
            label = "mm" if name.startswith("mm") else name
            assert f'crossbook_ready{{service="{label}"}} 1.0' in body, name
        url = st["services"]["matcher"]["urls"]["ws"]
        dep = Deployment.load(home / "deployment.json")
        chain = ClearinghouseClient(Web3(Web3.HTTPProvider(st["rpc_url"], request_kwargs={"timeout": 30})), dep)
        oracle = chain.oracle_price(ETH_FEED)
        best_bid, best_ask = run(_book_quoted(url, 20))
        assert best_bid < oracle < best_ask and (best_ask - best_bid) * 100 < oracle  # a tight two-sided quote

        # ---------------------------------------------------------------- 2. a leveraged taker
        signer = user_signer(6_006)
        owner = signer.address
        start_block = int(chain.w3.eth.block_number)
        out = _cli(home, "deposit", str(DEPOSIT_USD), "--mint", "--to", owner, "--key", "dev:8")
        assert f"deposited {DEPOSIT_USD} USDC into {owner}/0" in out
        taker = run(_open_taker(url, 6_006))
        t = taker
        _wait(lambda: t.position is not None and int(t.position["quote"]) >= DEPOSIT_USD * QUOTE,
              "the matcher credits the deposit", 20)
        run(_take(taker, oracle, 30))
        size = taker.size()
        assert size >= TARGET_SIZE * 9 // 10, f"only {size} filled: {taker.fills}"
        buys = [f for f in taker.fills if f["market"] == ETH and f["side"] == "buy"]
        assert sum(int(f["size"]) for f in buys) == size
        assert len({f["seq"] for f in buys}) >= 2  # against the bots' re-quoted asks, not one order
        timings["traded"] = time.monotonic() - t_start

        # ---------------------------------------------------------------- 3. settled on-chain
        _wait(lambda: chain.position(owner, 0, ETH).size == size, "the fills settle on-chain", SETTLE_DEADLINE_S)
        last_fill_seq = max(int(f["seq"]) for f in buys)
        assert chain.next_seq() > last_fill_seq
        settled = chain.contract.events.BatchSettled().get_logs(from_block=start_block)
        covered = {s for ev in settled for s in range(ev["args"]["firstSeq"],
                                                      ev["args"]["firstSeq"] + ev["args"]["count"])}
        assert {int(f["seq"]) for f in buys} <= covered
        assert all(ev["args"]["rejected"] == 0 for ev in settled)  # no busts
        _wait(lambda: t.position is not None and chain.quote_balance(owner, 0) == int(t.position["quote"]),
              "chain quote balance equals the matcher's (fees and all)", SETTLE_DEADLINE_S)
        h = chain.health(owner, 0)
        # near the limit: more than 10x leveraged, most of the equity used as initial margin
        assert 0 < h.initial_health and h.initial_health * 3 < h.equity, h
        assert size * oracle // 10**10 > 10 * h.equity, h
        timings["settled"] = time.monotonic() - t_start

        # ---------------------------------------------------------------- 4. crash -> keeper
        # below the liquidation price, well above bankruptcy: lose all maintenance headroom plus a
        # quarter of the requirement. Equity stays above half the requirement (docs/protocol.md
        # 9.3: below that the account is critical and the whole position goes), so the keeper's
        # liquidation is partial and leaves a reduced position
        loss = h.maintenance_health + h.maintenance_requirement // 4
        drop = loss * 10**10 // size
        crash = (oracle - drop) // (PRICE // 100) * (PRICE // 100)
        crash_text = f"{crash // PRICE}.{crash % PRICE // (PRICE // 100):02d}"
        t_crash = time.monotonic()
        out = _cli(home, "oracle", "set", "ETH", crash_text)
        assert "oracle ETH = " in out
        assert chain.oracle_price(ETH_FEED) == crash

        def liquidated() -> list[ChainLiquidated]:
            return [e for e in chain.liquidated_events(start_block) if e.owner.lower() == owner.lower()]

        evs = _wait(liquidated, "the keeper liquidates the taker", LIQUIDATION_DEADLINE_S, 0.25)
        timings["liquidated_after_crash"] = time.monotonic() - t_crash
        ev = evs[0]
        assert ev.liquidator == dev_address(KEEPER) and ev.market == ETH and ev.size_delta < 0 and ev.penalty > 0
        after = chain.position(owner, 0, ETH).size
        assert 0 <= after < size
        assert after == size + sum(e.size_delta for e in evs)
        h_after = chain.health(owner, 0)
        assert h_after.maintenance_health >= 0, h_after  # the liquidation restored health
        _wait(lambda: t.liquidations, "the matcher tells the taker it was liquidated", 20)
        assert taker.liquidations[0]["role"] == "target"
        _wait(lambda: t.size() == after, "the matcher's position matches the chain after liquidation", 20)

        # ---------------------------------------------------------------- 5. the dashboard
        dash = st["services"]["dashboard"]["urls"]["http"]
        wait_http(dash)
        state = _wait(lambda: _liqs_in_api(dash, owner), "the dashboard's /api/state lists the liquidation", 15)
        assert state["market"] == "ETH-PERP"
        driver = chrome_driver()
        driver.get(dash)
        wait = WebDriverWait(driver, 20, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "conn").text == "live")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#markets tr.market-row")) >= 3)
        rows = wait.until(lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "#liquidations tr.liquidation-row")
                                     if (r.get_attribute("title") or "").lower().startswith(owner.lower())])
        cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
        assert cells[0] == str(ev.block_number) and cells[1].lower().startswith(owner[:10].lower())
        assert cells[2] == "ETH-PERP" and Decimal(cells[3]) == Decimal(ev.size_delta) / SIZE
        assert "ETH-PERP" in driver.find_element(By.ID, "markets").text
        assert f"{crash // PRICE}." in driver.find_element(By.ID, "markets").text  # the crashed oracle
        driver.find_element(By.ID, "owner").send_keys(owner)
        driver.find_element(By.ID, "lookup").click()
        try:
            pos = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#account-positions tr.position-row"))
        except Exception as exc:
            raise AssertionError(f"no position in the account lookup (chain size {after}): "
                                 f"{driver.find_element(By.ID, 'account').text!r}") from exc
        pcells = [c.text for c in pos[0].find_elements(By.TAG_NAME, "td")]
        assert pcells[0] == "ETH-PERP"
        assert Decimal(pcells[1]) == Decimal(after) / SIZE < Decimal(size) / SIZE  # reduced position
        summary = driver.find_element(By.ID, "account-summary").text
        assert "Maintenance health" in summary and "Liquidatable no" in summary, summary
        assert pcells[5] != "-" and Decimal(pcells[5]) < Decimal(crash) / PRICE  # a new, lower liq. price
        screenshot_not_blank(driver, tmp_path / "product.png", Path("/tmp/crossbook-product.png"))
        timings["dashboard"] = time.monotonic() - t_start
    finally:
        if driver is not None:
            driver.quit()
        if taker is not None:
            run(taker.client.close())
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(5)
        if up.proc.poll() is not None or "Crossbook is up" not in up.text():
            up.kill_if_running()

    # -------------------------------------------------------------------- 6. clean shutdown
    st = up.refresh()
    pids = {n: s["pid"] for n, s in st["services"].items() if s["pid"]}
    assert set(pids) >= {"anvil", "matcher", "relayer", "watcher", "keeper", "mm1", "mm2", "dashboard"}
    state_file = home / "anvil-state.json"
    t_stop = time.time()
    t0 = time.monotonic()
    assert up.stop(timeout=60) == 0, up.text()[-3000:]
    timings["shutdown"] = time.monotonic() - t0
    orphans = [n for n, pid in pids.items() if alive(pid)]
    assert not orphans, f"orphans after SIGINT: {orphans}"
    assert not (home / "stack.json").exists()
    text = up.text()
    assert "stopped (chain state saved)" in text
    assert "did not stop" not in text  # nobody needed SIGKILL
    assert text.index("stopping matcher") < text.index("stopping anvil")
    # anvil dumped the chain on SIGINT (not only on its 5 s timer), liquidation included
    assert state_file.stat().st_mtime >= t_stop - 1
    saved = json.loads(state_file.read_text())
    assert int(str(saved["block"]["number"]), 0) >= ev.block_number
    timings["total"] = time.monotonic() - t_start
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()})


def _metrics(url: str) -> str | None:
    """A /metrics body, or None while it does not answer."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return None


def _liqs_in_api(dash: str, owner: str) -> dict[str, Any] | None:
    """The dashboard's /api/state row for ``owner``'s liquidation, if it lists one."""
    import urllib.request

    with urllib.request.urlopen(dash + "api/state", timeout=5) as r:
        state = json.loads(r.read())
    rows = [x for x in state["liquidations"] if str(x["owner"]).lower() == owner.lower()]
    return rows[0] if rows else None
