"""`crossbook bench fill-log`: what the fills channel's on-disk record (matcher/fill_log.py) costs.

- append_us: time per :meth:`matcher.fill_log.FillLog.append` of one command's two fill frames
  (maker's and taker's, encoded as the server sends them), the write the server adds to every
  command that fills.
- load_s: a matcher start at the log's bound (1,000,000 frames from 200 owners, the server's
  default ``fill_history_total``): opening the log, resuming it and rebuilding the in-memory
  record through :meth:`matcher.channels.Hub.restore_fills`, the server's own start-up path.
  ``read_s`` is the part spent opening and resuming the log.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from matcher.channels import Hub
from matcher.engine import Engine
from matcher.fill_log import FillLog
from matcher.ws_messages import FillMsg, encoder

FRAMES = 1_000_000
OWNERS = 200


def run(frames: int = FRAMES) -> dict[str, Any]:
    """Write ``frames`` fill frames through a fill log, then time a start-up that reads them."""
    d = Path(tempfile.mkdtemp(prefix="fill-log-bench-"))
    try:
        log = FillLog(d)
        log.resume(0, 1, covered=False)
        owners = [f"0x{i:040x}" for i in range(OWNERS)]
        commands = frames // 2
        spent = 0.0
        for i in range(commands):
            seq = i + 1
            maker = encoder.encode(FillMsg("fills", seq, 0, 10 * seq, 0, "sell", "maker",
                                           300_000_000_000, 100_000, 300, 1_764_000_000_000))
            taker = encoder.encode(FillMsg("fills", seq, 0, 10 * seq + 1, 0, "buy", "taker",
                                           300_000_000_000, 100_000, 600, 1_764_000_000_000))
            out = [(owners[i % OWNERS], seq, maker), (owners[(i + 7) % OWNERS], seq, taker)]
            t0 = time.perf_counter()
            log.append(seq, out)
            spent += time.perf_counter() - t0
        append_us = spent / commands * 1e6
        log.close()
        disk = sum(p.stat().st_size for p in d.iterdir())

        t0 = time.perf_counter()
        again = FillLog(d)
        again.resume(commands, commands + 1, covered=True)
        t1 = time.perf_counter()
        hub = Hub(Engine(), {0: "ETH-PERP"}, fill_history_total=FRAMES)
        hub.restore_fills(again)
        t2 = time.perf_counter()
        again.close()
        return {"frames": frames, "append_us": round(append_us, 2), "disk_mb": round(disk / 2**20, 1),
                "read_s": round(t1 - t0, 3), "load_s": round(t2 - t0, 3),
                "frames_kept": hub.fill_history.frames()}
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    print(run())
