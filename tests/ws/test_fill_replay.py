"""Fills never vanish with a connection: every frame of an owner's ``fills`` channel is recorded
(matcher/fill_history.py) and ``subscribe`` with ``fills_after`` replays what was sent after the
last fill the client saw, saying whether that is provably everything (docs/api.md). Real server
over loopback; the record itself is tested sans-I/O first."""
from __future__ import annotations

import time

from crossbook.protocol_types import Order
from matcher.commands import ChainBatchSettled, PlaceOrder
from matcher.fill_history import NOT_A_FILL, FillHistory
from matcher.orders import Stp, Tif
from tests.ws.helpers import (
    ETH,
    ETH_PX,
    LOT,
    USERS,
    Client,
    addr,
    fill_frames,
    logged_in,
    make_engine,
    signed_order,
    start_server,
)


def test_record_replays_after_the_named_fill_in_order() -> None:
    h = FillHistory(first_seq=1, per_owner=10)
    for seq, frame in ((3, b"f3"), (NOT_A_FILL, b"bust3"), (5, b"f5"), (8, b"f8")):
        h.record("a", seq, frame)
    h.record("b", 4, b"other owner")
    assert h.after("a", 3) == ([b"bust3", b"f5", b"f8"], True)
    assert h.after("a", 8) == ([], True)
    assert h.after("a", 0) == ([b"f3", b"bust3", b"f5", b"f8"], True)  # whole history
    # a seq the owner never had: the later frames, not provably complete
    assert h.after("a", 4) == ([b"f5", b"f8"], False)
    assert h.after("a", 9) == ([], False)
    assert h.after("nobody", 0) == ([], True)


def test_trimmed_or_restarted_record_says_so() -> None:
    h = FillHistory(first_seq=1, per_owner=2)
    for seq in (1, 2, 3):
        h.record("a", seq, b"f%d" % seq)
    assert h.frames("a") == 2
    assert h.after("a", 1) == ([b"f2", b"f3"], False)  # fill 1 was trimmed
    assert h.after("a", 2) == ([b"f3"], True)
    assert h.after("a", 0) == ([b"f2", b"f3"], False)
    later = FillHistory(first_seq=7, per_owner=10)  # a process started after 6 items
    later.record("a", 9, b"f9")
    assert later.after("a", 0) == ([b"f9"], False)
    assert later.after("a", 9) == ([], True)


def test_the_window_over_all_owners_bounds_memory() -> None:
    """A frame also leaves once `total` newer frames were recorded for anyone, so memory stays
    bounded however many owners trade; frames the per-owner bound dropped leave the window too."""
    h = FillHistory(first_seq=1, per_owner=2, total=4)
    h.record("quiet", 1, b"q1")
    for seq in range(2, 6):  # a busy owner: its per-owner bound and then the window drop frames
        h.record("busy", seq, b"b%d" % seq)
    assert h.after("quiet", 0) == ([], False)  # four newer frames: gone, and said so
    assert h.frames("quiet") == 0 and h.frames("busy") == 2 and h.frames() == 2
    assert h.after("busy", 3) == ([b"b4", b"b5"], False)
    assert h.after("busy", 4) == ([b"b5"], True)
    for seq in range(6, 1006):
        h.record("busy", seq, b"x")
        assert h.frames() <= 2 and len(h._arrivals) <= 4  # noqa: SLF001 - the bound under test
    h.record("new", 2000, b"n")
    assert h.after("new", 0) == ([b"n"], True)


async def _trade(taker: Client, size: int = LOT) -> None:
    r = await taker.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX, size))
    assert r["ok"], r




async def test_fills_missed_while_away_are_replayed_once_in_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path))
    try:
        maker = await logged_in(srv.url, 0)
        assert (await maker.request("subscribe", channels=["fills"]))["ok"]
        rest = await maker.request("place", tif="GTC", **signed_order(USERS[0], False, ETH_PX, 10 * LOT))
        assert rest["ok"]
        taker = await logged_in(srv.url, 1)
        await _trade(taker)
        seen = await maker.wait_for(lambda f: f.get("type") == "fill")
        await maker.close()
        for _ in range(2):  # filled twice more while the maker is away
            await _trade(taker)

        back = await logged_in(srv.url, 0)
        r = await back.request("subscribe", channels=["orders", "fills"], fills_after=seen["seq"])
        assert r["result"]["fills"] == {"after": seen["seq"], "replayed": 2, "complete": True}
        replayed = [await back.wait_for(lambda f: f.get("type") == "fill") for _ in range(2)]
        assert [f["seq"] for f in replayed] == sorted(f["seq"] for f in replayed)
        assert all(f["seq"] > seen["seq"] and f["order_id"] == rest["result"]["order_id"]
                   and (f["size"], f["price"], f["liquidity"]) == (LOT, ETH_PX, "maker")
                   for f in replayed)
        # after the response and the orders snapshot (the resting order, 3 lots filled)
        kinds = [f.get("type") for f in back.all]
        assert kinds.index("response") < kinds.index("order") < kinds.index("fill")
        # live again: the next fill arrives once, not replayed twice
        await _trade(taker)
        live = await back.wait_for(lambda f: f.get("type") == "fill")
        assert live["seq"] > replayed[-1]["seq"]
        assert len(fill_frames(back)) == 3

        # asking from the newest fill replays nothing; from 0 (fresh engine) all four, complete
        r2 = await back.request("subscribe", channels=["fills"], fills_after=live["seq"])
        assert r2["result"]["fills"] == {"after": live["seq"], "replayed": 0, "complete": True}
        other = await logged_in(srv.url, 0)
        r3 = await other.request("subscribe", channels=["fills"], fills_after=0)
        assert r3["result"]["fills"] == {"after": 0, "replayed": 4, "complete": True}
        await other.wait_for(lambda f: f.get("type") == "fill" and f["seq"] == live["seq"])
        assert [f["seq"] for f in fill_frames(other)] == [seen["seq"], *(f["seq"] for f in replayed),
                                                    live["seq"]]
        # the taker's own record is separate: its side of the same four fills
        t = await taker.request("subscribe", channels=["fills"], fills_after=0)
        assert t["result"]["fills"]["replayed"] == 4
        await taker.wait_for(lambda f: f.get("type") == "fill" and f["seq"] == live["seq"])
        assert {f["liquidity"] for f in fill_frames(taker)} == {"taker"}
    finally:
        await srv.close()


async def test_trimmed_record_is_reported_incomplete(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path), fill_history=2)
    try:
        maker = await logged_in(srv.url, 0)
        assert (await maker.request("subscribe", channels=["fills"]))["ok"]
        assert (await maker.request("place", tif="GTC",
                                    **signed_order(USERS[0], False, ETH_PX, 10 * LOT)))["ok"]
        taker = await logged_in(srv.url, 1)
        await _trade(taker)
        first = await maker.wait_for(lambda f: f.get("type") == "fill")
        await maker.close()
        for _ in range(3):
            await _trade(taker)
        back = await logged_in(srv.url, 0)
        r = await back.request("subscribe", channels=["fills"], fills_after=first["seq"])
        # one of the three fills since was trimmed: the two kept, flagged incomplete
        assert r["result"]["fills"] == {"after": first["seq"], "replayed": 2, "complete": False}
    finally:
        await srv.close()


async def test_fills_before_this_process_are_not_claimed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A matcher that starts on an engine that already sequenced fills (a restart) cannot
    replay them: a replay from 0 is flagged incomplete."""
    eng = make_engine()
    now = int(time.time())
    for user, is_buy, tif in ((USERS[0], False, Tif.GTC), (USERS[1], True, Tif.IOC)):
        o = Order(addr(user), 0, ETH, is_buy, False, ETH_PX, LOT, 1, now + 3600, 1000)
        assert eng.apply(PlaceOrder(1, o, b"", addr(user), int(tif), None, int(Stp.EXPIRE_TAKER),
                                    now)).ack.ok
    assert eng.ledger.next_seq > 1
    srv = await start_server(eng, journal_dir=str(tmp_path))
    try:
        c = await logged_in(srv.url, 0)
        r = await c.request("subscribe", channels=["fills"], fills_after=0)
        assert r["result"]["fills"] == {"after": 0, "replayed": 0, "complete": False}
    finally:
        await srv.close()


async def test_fills_after_needs_the_fills_channel(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = await start_server(journal_dir=str(tmp_path))
    try:
        c = await logged_in(srv.url, 0)
        r = await c.request("subscribe", channels=["orders"], fills_after=3)
        assert (r["ok"], r["code"]) == (False, "BAD_REQUEST")
        assert "fills" not in (await c.request("subscribe", channels=["orders"]))["result"]
        for bad in (-1, 2**64, "3", 1.5):
            r = await c.request("subscribe", channels=["fills"], fills_after=bad)
            assert (r["ok"], r["code"]) == (False, "BAD_REQUEST"), bad
        anon = await Client.open(srv.url)
        r = await anon.request("subscribe", channels=["fills"], fills_after=0)
        assert (r["ok"], r["code"]) == (False, "NOT_LOGGED_IN")
    finally:
        await srv.close()


async def test_a_bust_of_an_older_fill_is_replayed_by_arrival(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A bust names the fill it reverses (an older seq) but arrives later: a client that saw
    every fill before its link dropped still gets the bust that came while it was away."""
    srv = await start_server(journal_dir=str(tmp_path))
    try:
        maker = await logged_in(srv.url, 0)
        assert (await maker.request("subscribe", channels=["fills"]))["ok"]
        assert (await maker.request("place", tif="GTC",
                                    **signed_order(USERS[0], False, ETH_PX, 10 * LOT)))["ok"]
        taker = await logged_in(srv.url, 1)
        for _ in range(2):
            await _trade(taker)
        seen = [await maker.wait_for(lambda f: f.get("type") == "fill") for _ in range(2)]
        await maker.close()
        # the chain settles both fills and rejects the first (reason 7): busted while away
        first, last = seen[0]["seq"], seen[1]["seq"]
        res = await srv.submit(ChainBatchSettled(srv.next_req_id(), first, last - first + 1,
                                                 [(first, 7)]))
        assert res.ack.ok
        back = await logged_in(srv.url, 0)
        r = await back.request("subscribe", channels=["fills"], fills_after=last)
        assert r["result"]["fills"] == {"after": last, "replayed": 1, "complete": True}
        bust = await back.wait_for(lambda f: f.get("type") == "bust")
        assert (bust["seq"], bust["sub"], bust["reason"]) == (first, 0, 7)
        assert not fill_frames(back)  # the fills it had seen are not sent again
    finally:
        await srv.close()
