"""The dashboard on a real stack (anvil + contracts + matcher/relayer/watcher subprocesses),
opened in headless Chromium (Debian's chromium + chromium-driver through selenium): the page
shows live markets, a trade, the settlement lag and a sub-account's risk with a liquidation
price, and its screenshot is not blank."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from crossbook.chain.anvil import free_port
from crossbook.chain.local_exchange import user_signer
from crossbook.config import PRICE, SIZE, USD
from crossbook.sdk import Client, NonceManager
from tests.browser import chrome_driver, screenshot_not_blank, wait_http
from tests.e2e.stack import Stack


async def _trade(stack: Stack) -> tuple[str, int]:
    """A maker rests a sell, a taker lifts part of it: one trade, two positions."""
    maker, taker = user_signer(300), user_signer(301)
    mc = await Client.connect(stack.url, nonces=NonceManager(start=1))
    tc = await Client.connect(stack.url, nonces=NonceManager(start=1))
    try:
        await mc.login(maker)
        await tc.login(taker)
        await mc.place(0, False, 3_000 * PRICE, 2 * SIZE)
        await mc.place(0, True, 2_990 * PRICE, SIZE)
        await tc.place(0, True, 3_000 * PRICE, SIZE, tif="IOC")
    finally:
        await mc.close()
        await tc.close()
    return taker.address, 0


def test_dashboard_renders_live_data(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    stack = Stack(tmp_path)
    driver = None
    try:
        stack.interval_mining()  # the watcher waits for 1 confirmation: keep blocks coming
        stack.start_matcher()
        stack.start_watcher()
        stack.start_relayer()
        # the taker is thinly margined (1,000 USD for 1 ETH): its long has a liquidation price
        stack.ex.fund_each("USDC", [(user_signer(300).address, 0, 100_000 * USD),
                                    (user_signer(301).address, 0, 1_000 * USD)])
        deadline = time.monotonic() + 30
        while asyncio.run(stack.status())["cmd_seq"] < 3:  # prices + two deposits
            assert time.monotonic() < deadline, "matcher never saw the deposits"
            time.sleep(0.2)
        port = free_port()
        stack._spawn("dashboard", ["--port", str(port), "--log-format", "text", "--metrics-port", "0"])
        url = f"http://127.0.0.1:{port}/"
        wait_http(url)
        time.sleep(1.0)  # the dashboard subscribes; trades are live only (no trade history)
        owner, sub = asyncio.run(_trade(stack))

        driver = chrome_driver()
        driver.get(url)
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#markets tr.market-row")) >= 3)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#trades tr.trade-row"))
        wait.until(lambda d: "items" in d.find_element(By.ID, "lag").text)
        wait.until(lambda d: d.find_element(By.ID, "insurance").text not in ("", "-"))
        wait.until(lambda d: d.find_element(By.ID, "conn").text == "live")
        rows = driver.find_elements(By.CSS_SELECTOR, "#markets tr.market-row")
        assert "ETH-PERP" in rows[0].text and "3000" in rows[0].text
        trade = driver.find_elements(By.CSS_SELECTOR, "#trades tr.trade-row")[0].text
        assert "ETH-PERP" in trade and "buy" in trade and "3000.00" in trade
        assert "2990.00" in driver.find_element(By.ID, "books").text  # the resting bid

        # sub-account lookup of the taker (long 1 ETH): needs the fill settled on-chain
        driver.find_element(By.ID, "owner").send_keys(owner)
        deadline = time.monotonic() + 30
        while True:
            driver.find_element(By.ID, "lookup").click()
            time.sleep(0.3)
            pos = driver.find_elements(By.CSS_SELECTOR, "#account-positions tr.position-row")
            if pos:
                break
            assert time.monotonic() < deadline, driver.find_element(By.ID, "account").text
        cells = pos[0].find_elements(By.TAG_NAME, "td")
        assert cells[0].text == "ETH-PERP" and cells[1].text == "1"
        liq = cells[5].text
        assert liq != "-" and 0 < float(liq) < 3000  # display check only; math is tested in Python
        summary = driver.find_element(By.ID, "account-summary").text
        assert "Equity" in summary and "Maintenance health" in summary and "Leverage" in summary

        screenshot_not_blank(driver, tmp_path / "dashboard.png", Path("/tmp/crossbook-dashboard.png"))
    finally:
        if driver is not None:
            driver.quit()
        stack.close()
