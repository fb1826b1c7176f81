"""Fills survive a matcher restart (matcher/fill_log.py): a market maker that reconnects to a
restarted matcher gets the fills of before the restart from ``fills_after``, complete, including
those the log missed because the process died between journaling a command and logging its
frames (rebuilt from the journal). Real server over loopback, restarted the way ``crossbook
matcher`` restarts: fill log, recovery with ``outputs_after``, resume, server."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from crossbook.sdk import Client as SdkClient
from crossbook.sdk import NonceManager

from matcher.engine import Engine
from matcher.fill_log import FillLog, decode_all
from matcher.journal import (
    FSYNC_BY_SHELL,
    JournaledEngine,
    JournalWriter,
    recover,
    write_snapshot,
)
from matcher.server import MatcherServer, ServerConfig
from tests.ws.helpers import (
    CHAIN_ID,
    CONTRACT,
    ETH_PX,
    LOT,
    USERS,
    fill_frames,
    logged_in,
    setup_commands,
    signed_order,
    until,
)


async def _start(d: Path, port: int = 0) -> tuple[MatcherServer, FillLog, int]:
    """Start (or restart) the matcher whose state is in ``d``; also returns how many commands
    recovery had to publish again."""
    fills = FillLog(d / "fills")
    rec = recover(d / "journal.bin", d / "snapshots", outputs_after=fills.last_cmd_seq)
    je = JournaledEngine(rec.engine, JournalWriter(d / "journal.bin", fsync=FSYNC_BY_SHELL))
    fills.resume_after(rec)
    srv = MatcherServer(je, ServerConfig(port=port, chain_id=CHAIN_ID, verifying_contract=CONTRACT),
                        fill_log=fills, unpublished=rec.unpublished)
    await srv.start()
    return srv, fills, len(rec.unpublished)


async def _stop(srv: MatcherServer, fills: FillLog) -> None:
    """Stop without the shutdown's mark: as after a kill -9 once everything was written."""
    await srv.close()
    srv.jengine.writer.close()
    fills.close()




def _new_exchange(d: Path) -> None:
    """A journal holding the test setup (prices, deposits), as a matcher would have written it."""
    (d / "snapshots").mkdir()
    je = JournaledEngine(Engine(), JournalWriter(d / "journal.bin", fsync=FSYNC_BY_SHELL))
    for cmd in setup_commands():
        assert je.submit(cmd).ack.ok
    je.writer.close()


async def test_fills_of_before_a_restart_are_replayed_complete(tmp_path: Path) -> None:
    _new_exchange(tmp_path)

    srv, fills, republished = await _start(tmp_path)
    assert republished == 0
    try:
        maker = await logged_in(srv.url, 0)
        assert (await maker.request("subscribe", channels=["fills"]))["ok"]
        assert (await maker.request("place", tif="GTC",
                                    **signed_order(USERS[0], False, ETH_PX, 10 * LOT)))["ok"]
        taker = await logged_in(srv.url, 1)
        for i in range(3):
            r = await taker.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX, LOT))
            assert r["ok"], r
            await maker.wait_for(lambda f: f.get("type") == "fill" and len(fill_frames(maker)) > i)
            if i == 0:  # a snapshot as the matcher takes them: the log's mark first
                fills.mark(srv.engine.cmd_seq)
                write_snapshot(tmp_path / "snapshots", srv.engine, srv.jengine.writer.offset,
                               srv.jengine.writer.segment)
        before = fill_frames(maker)
        assert len(before) == 3
    finally:
        await _stop(srv, fills)

    # the process died after journaling the last trade and before logging its frames
    seg = tmp_path / "fills" / "fills-0.bin"
    recs, _ = decode_all(seg.read_bytes())
    last, at = recs[-1]
    assert [s for _, s, _ in last.frames] == [before[-1]["seq"]] * 2  # maker's and taker's
    with open(seg, "r+b") as f:
        f.truncate(at)

    srv, fills, republished = await _start(tmp_path)
    try:
        assert republished >= 1
        back = await logged_in(srv.url, 0)
        r = await back.request("subscribe", channels=["fills"], fills_after=0)
        assert r["result"]["fills"] == {"after": 0, "replayed": 3, "complete": True}
        await back.wait_for(lambda f: len(fill_frames(back)) == 3)
        after = fill_frames(back)
        assert after[:2] == before[:2]  # as sent, byte for byte (the same ts_ms)
        # the rebuilt one: the same fill, stamped when it was rebuilt
        assert {k: v for k, v in after[2].items() if k != "ts_ms"} == \
            {k: v for k, v in before[2].items() if k != "ts_ms"}
        r = await back.request("subscribe", channels=["fills"], fills_after=before[0]["seq"])
        assert r["result"]["fills"] == {"after": before[0]["seq"], "replayed": 2, "complete": True}
        taker = await logged_in(srv.url, 1)
        r = await taker.request("subscribe", channels=["fills"], fills_after=0)
        assert r["result"]["fills"] == {"after": 0, "replayed": 3, "complete": True}
    finally:
        await _stop(srv, fills)

    # the rebuilt frames are on disk now: the next start republishes nothing
    srv, fills, republished = await _start(tmp_path)
    try:
        assert republished == 0 and srv.hub.fill_history.frames() == 6
    finally:
        await _stop(srv, fills)

    # without its log the matcher claims no history it cannot show
    shutil.rmtree(tmp_path / "fills")
    srv, fills, republished = await _start(tmp_path)
    try:
        assert republished == 0
        back = await logged_in(srv.url, 0)
        r = await back.request("subscribe", channels=["fills"], fills_after=0)
        assert r["result"]["fills"] == {"after": 0, "replayed": 0, "complete": False}
    finally:
        await _stop(srv, fills)


async def test_an_sdk_bot_misses_no_fill_across_a_matcher_restart(tmp_path: Path) -> None:
    """The SDK reconnects to the restarted matcher, logs in, resubscribes with the last fill it
    processed and gets the fills that were in flight when the matcher went down: no gap."""
    _new_exchange(tmp_path)
    srv, fills, _ = await _start(tmp_path)
    port = srv.port
    got: list[dict[str, Any]] = []
    bot = await SdkClient.connect(srv.url, nonces=NonceManager(start=1), max_backoff_s=0.2)
    try:
        await bot.login(USERS[0])
        await bot.subscribe(["fills"], callback=got.append)
        await bot.place(0, False, ETH_PX, 10 * LOT)
        taker = await logged_in(srv.url, 1)
        assert (await taker.request("place", tif="IOC",
                                    **signed_order(USERS[1], True, ETH_PX, LOT)))["ok"]
        await until(lambda: len(got) == 1)
        # two more fills reach the wire but not the bot: the matcher goes down with them
        bot.frame_filter = lambda m: m.get("type") != "fill"
        for _ in range(2):
            assert (await taker.request("place", tif="IOC",
                                        **signed_order(USERS[1], True, ETH_PX, LOT)))["ok"]
        await until(lambda: srv.hub.fill_history.frames(USERS[0].address.lower()) == 3)
        await _stop(srv, fills)
        bot.frame_filter = None

        srv, fills, _ = await _start(tmp_path, port)
        try:
            await until(lambda: bot.stats.reconnects >= 1 and len(got) == 3, 10)
            assert [f["seq"] for f in got] == sorted({f["seq"] for f in got})
            assert (bot.stats.fills_replayed, bot.stats.fill_gaps) == (2, 0)
        finally:
            await _stop(srv, fills)
    finally:
        await bot.close()



async def test_a_failing_fill_log_is_reported_and_trading_goes_on(tmp_path: Path) -> None:
    _new_exchange(tmp_path)
    srv, fills, _ = await _start(tmp_path)
    try:
        maker = await logged_in(srv.url, 0)
        assert (await maker.request("status"))["result"]["fill_log"] == "ok"
        assert (await maker.request("subscribe", channels=["fills"]))["ok"]
        assert (await maker.request("place", tif="GTC",
                                    **signed_order(USERS[0], False, ETH_PX, 10 * LOT)))["ok"]
        os.close(fills.fileno())  # the disk goes away under the log
        fills._fd = os.open(tmp_path / "fills" / "fills-0.bin", os.O_RDONLY)  # noqa: SLF001
        taker = await logged_in(srv.url, 1)
        r = await taker.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX, LOT))
        assert r["ok"], r
        live = await maker.wait_for(lambda f: f.get("type") == "fill")  # still sent
        assert live["size"] == LOT
        assert (await maker.request("status"))["result"]["fill_log"] == "failed"
        # a snapshot after the failure (its mark cannot be written either)
        fills.mark(srv.engine.cmd_seq)
        write_snapshot(tmp_path / "snapshots", srv.engine, srv.jengine.writer.offset,
                       srv.jengine.writer.segment)
        # one more fill after the snapshot, and a command without fills after it
        r = await taker.request("place", tif="IOC", **signed_order(USERS[1], True, ETH_PX, LOT))
        assert r["ok"], r
        after_snap = await maker.wait_for(lambda f: f.get("type") == "fill")
        assert (await maker.request("place", tif="GTC",
                                    **signed_order(USERS[0], False, ETH_PX + 100 * LOT, LOT)))["ok"]
    finally:
        await _stop(srv, fills)
    # the first fill lies before the snapshot and after the log's end: beyond rebuilding, so the
    # log starts over at the snapshot and claims nothing older (without the snapshot it would be
    # rebuilt from the journal); the fill after the snapshot is rebuilt
    srv, fills, _ = await _start(tmp_path)
    try:
        back = await logged_in(srv.url, 0)
        r = await back.request("subscribe", channels=["fills"], fills_after=0)
        assert r["result"]["fills"] == {"after": 0, "replayed": 1, "complete": False}
        rebuilt = await back.wait_for(lambda f: f.get("type") == "fill")
        assert rebuilt["seq"] == after_snap["seq"]
        assert (await back.request("status"))["result"]["fill_log"] == "ok"
    finally:
        await _stop(srv, fills)
    # the log's records are in command order (the fresh start sits before the rebuilt fill)
    recs, _ = decode_all((tmp_path / "fills" / "fills-0.bin").read_bytes())
    seqs = [r.cmd_seq for r, _ in recs]
    assert seqs == sorted(seqs) and len(recs) == 2
    srv, fills, _ = await _start(tmp_path)  # the last command (no fills) is applied again
    try:
        assert srv.hub.fill_history.frames() == 2  # nothing twice
    finally:
        await _stop(srv, fills)
