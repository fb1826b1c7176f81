"""Shared builders for the websocket API tests: a real server on an ephemeral loopback port
and a small real-``websockets`` client that matches responses to requests by id."""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from websockets.asyncio.client import ClientConnection, connect

from crossbook.config import PRICE, SIZE, USD
from crossbook.eip712 import Domain, Signer
from crossbook.protocol_types import Order
from matcher.commands import ChainDeposit, SetOraclePrices
from matcher.engine import Engine, EngineConfig
from matcher.fill_log import FillLog
from matcher.journal import FSYNC_BY_SHELL, JournaledEngine, JournalWriter
from matcher.server import MatcherServer, ServerConfig
from matcher.sessions import login_digest

CHAIN_ID = 31337
CONTRACT = "0x" + "cb" * 20
DOMAIN = Domain(CHAIN_ID, CONTRACT)
ETH = 0
ETH_PX = 3_000 * PRICE
TICK = PRICE // 100
LOT = SIZE // 1000
USERS = [Signer(bytes([i + 1]) * 32) for i in range(6)]
AGENT = Signer(bytes([0x77]) * 32)


def addr(s: Signer) -> str:
    """Lower-case address of a signer."""
    return s.address.lower()


def setup_commands(usd: int = 1_000_000) -> list[SetOraclePrices | ChainDeposit]:
    """Oracle prices, then ``usd`` deposited into sub 0 of every test user."""
    cmds: list[SetOraclePrices | ChainDeposit] = [SetOraclePrices(
        1, {1: ETH_PX, 2: 60_000 * PRICE}, {0: ETH_PX, 1: 60_000 * PRICE, 2: 150 * PRICE}, 0)]
    cmds += [ChainDeposit(10 + i, addr(u), 0, 0, usd * USD) for i, u in enumerate(USERS)]
    return cmds


def make_engine(config: EngineConfig | None = None, usd: int = 1_000_000) -> Engine:
    """An engine after :func:`setup_commands`."""
    eng = Engine(config)
    for cmd in setup_commands(usd):
        assert eng.apply(cmd).ack.ok
    return eng


async def start_server(engine: Engine | None = None, journal_dir: str | None = None,
                       **cfg: Any) -> MatcherServer:
    """A started server on 127.0.0.1:<ephemeral> around ``engine`` (default :func:`make_engine`),
    with a journal and a fill log in ``journal_dir``, as ``crossbook matcher`` runs."""
    d = journal_dir or tempfile.mkdtemp(prefix="ws-test-")
    writer = JournalWriter(Path(d) / "journal.bin", fsync=FSYNC_BY_SHELL)
    je = JournaledEngine(engine or make_engine(), writer)
    fills = FillLog(Path(d) / "fills")
    fills.resume(je.engine.cmd_seq, je.engine.ledger.next_seq, covered=False)
    cfg.setdefault("chain_id", CHAIN_ID)
    cfg.setdefault("verifying_contract", CONTRACT)
    srv = MatcherServer(je, ServerConfig(**cfg), fill_log=fills)
    await srv.start()
    return srv


_nonce = itertools.count(1)


def signed_order(user: Signer, is_buy: bool, price: int, size: int, *, nonce: int | None = None,
                 market: int = ETH, sub: int = 0, expiry: int | None = None,
                 signer: Signer | None = None, max_fee: int = 1000,
                 reduce_only: bool = False) -> dict[str, Any]:
    """The `order` + `signature` fields of a place request."""
    o = Order(addr(user), sub, market, is_buy, reduce_only, price, size,
              next(_nonce) if nonce is None else nonce,
              int(time.time()) + 3600 if expiry is None else expiry, max_fee)
    sig = (signer or user).sign_order(DOMAIN, o)
    return {"order": {"owner": o.owner, "subaccount": o.subaccount, "market": o.market,
                      "is_buy": o.is_buy, "reduce_only": o.reduce_only, "price": o.price,
                      "size": o.size, "nonce": o.nonce, "expiry": o.expiry,
                      "max_fee_ppm": o.max_fee_ppm},
            "signature": "0x" + sig.hex()}


class Client:
    """A websocket client: ``request`` waits for the response with its id; every other frame is
    kept in ``frames`` for :meth:`wait_for`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.responses: dict[Any, dict[str, Any]] = {}
        self.all: list[dict[str, Any]] = []  # every frame in arrival order
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self.closed = False
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.hello: dict[str, Any] = {}

    @classmethod
    async def open(cls, url: str, **kw: Any) -> Client:
        """Connect and wait for the hello frame."""
        c = cls(await connect(url, compression=None, max_size=None, **kw))
        c.hello = await c.wait_for(lambda f: f.get("type") == "hello")
        return c

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                f = json.loads(raw)
                self.all.append(f)
                if f.get("type") == "response":
                    self.responses[f["id"]] = f
                self.frames.append(f)
                self._changed.set()
        except Exception:
            pass
        finally:
            self.closed = True
            self._changed.set()

    async def send_raw(self, data: str | bytes) -> None:
        """Send a frame as is."""
        await self.ws.send(data)

    async def request(self, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send ``{"op": op, "id": <fresh>, **fields}`` and return its response."""
        rid = fields.pop("id", None)
        if rid is None:
            rid = next(self._ids) + 1_000_000
        await self.ws.send(json.dumps({"op": op, "id": rid, **fields}))
        return await self.response(rid, timeout)

    async def response(self, rid: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The response with id ``rid`` (waits for it)."""
        return await self.wait_for(lambda f: f.get("type") == "response" and f.get("id") == rid,
                                   timeout)

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool],
                       timeout: float = 5.0) -> dict[str, Any]:
        """The first buffered or future frame matching ``pred`` (removed from the buffer)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.frames):
                if pred(f):
                    del self.frames[i]
                    return f
            if self.closed:
                raise ConnectionError("connection closed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching frame")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def of_type(self, t: str) -> list[dict[str, Any]]:
        """Buffered frames of one type (left in the buffer)."""
        return [f for f in self.frames if f.get("type") == t]

    async def login(self, user: Signer, signer: Signer | None = None, *,
                    expiry: int | None = None, **extra: Any) -> dict[str, Any]:
        """Sign the current challenge (then fetch a fresh one for later logins)."""
        ch = self.hello["challenge"]
        s = signer or user
        exp = int(time.time()) + 60 if expiry is None else expiry
        sig = s.sign_digest(login_digest(DOMAIN, addr(user), addr(s), bytes.fromhex(ch[2:]),
                                         exp))
        r = await self.request("login", owner=addr(user), signer=addr(s), challenge=ch,
                               expiry=exp, signature="0x" + sig.hex(), **extra)
        nxt = await self.request("challenge")
        self.hello["challenge"] = nxt["result"]["challenge"]
        return r

    async def close(self) -> None:
        """Close the connection."""
        await self.ws.close()
        self._reader.cancel()


async def logged_in(url: str, user: int) -> Client:
    """A client on ``url`` logged in as ``USERS[user]``."""
    c = await Client.open(url)
    assert (await c.login(USERS[user]))["ok"]
    return c


def fill_frames(c: Client) -> list[dict[str, Any]]:
    """The ``fill`` frames ``c`` received, in arrival order."""
    return [f for f in c.all if f.get("type") == "fill"]


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``pred`` until it holds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)
