"""`crossbook dashboard`: an aiohttp server with one static page and its data feed.

Routes: ``/`` the page, ``/static/*`` its script and style, ``/api/state`` the current view
(JSON), ``/api/account?owner=0x..&sub=0`` one sub-account's risk, ``/ws`` the view pushed live
(a JSON frame whenever it changed, at most every ``push_interval_s``).
"""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from crossbook.dashboard.feed import DashboardFeed
from crossbook.eip712 import address_bytes

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
FEED: web.AppKey[DashboardFeed] = web.AppKey("feed", DashboardFeed)


async def _index(_req: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _state(req: web.Request) -> web.Response:
    return web.json_response(req.app[FEED].state())


async def _account(req: web.Request) -> web.Response:
    owner = req.query.get("owner", "").strip()
    try:
        address_bytes(owner)
        sub = int(req.query.get("sub", "0"))
        if not 0 <= sub < 2**32:
            raise ValueError("sub out of range")
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": f"bad owner or sub: {exc}"}, status=400)
    try:
        data = await asyncio.to_thread(req.app[FEED].account, owner, sub)
    except Exception as exc:  # chain down or oracle refused: tell the page
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=502)
    return web.json_response(data)


async def _ws(req: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(req)
    feed = req.app[FEED]
    interval: float = req.app["push_interval_s"]

    async def drain() -> None:
        async for msg in ws:  # the page sends nothing; read to notice the close
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break

    reader = asyncio.create_task(drain())
    seen = -1
    try:
        while not ws.closed and not reader.done():
            if feed.version != seen:
                seen = feed.version
                await ws.send_str(json.dumps(feed.state()))
            await asyncio.sleep(interval)
    except ConnectionResetError:
        pass
    finally:
        reader.cancel()
    return ws


def make_app(feed: DashboardFeed, push_interval_s: float = 0.5) -> web.Application:
    """The aiohttp application around a (started or not) feed."""
    app = web.Application()
    app[FEED] = feed
    app["push_interval_s"] = push_interval_s
    app.router.add_get("/", _index)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/account", _account)
    app.router.add_get("/ws", _ws)
    app.router.add_static("/static", STATIC)

    async def on_startup(_app: web.Application) -> None:
        await feed.start()

    async def on_cleanup(_app: web.Application) -> None:
        await feed.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve(feed: DashboardFeed, host: str, port: int) -> None:
    """Run the dashboard until cancelled."""
    runner = web.AppRunner(make_app(feed))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    from crossbook.metrics import mark_ready

    # ready once the page is served: the supervisor's probe reads this gauge
    mark_ready("dashboard")
    log.info("dashboard on http://%s:%d/", host, port)
    print(f"dashboard on http://{host}:{port}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
