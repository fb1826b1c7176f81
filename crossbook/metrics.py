"""Prometheus metrics for every service: one registry per process and an HTTP exporter.

Each service process calls :func:`start_exporter` once (``--metrics-port`` /
``$CROSSBOOK_METRICS_PORT``) and then one of the ``*_metrics()`` factories, which create that
service's metrics on first use (so a relayer's ``/metrics`` lists relayer metrics only, and a
test process that builds two services does not register a name twice).

The ``instrument_*`` helpers attach the metrics to an existing object *from the outside*
(wrapping a few methods on the instance) instead of threading a metrics object through the
matcher and relayer constructors: those modules are the hot path and are edited for other
reasons, and observability must not change their behaviour. Floats are fine here: metrics are
never on a state path.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector,
    disable_created_metrics, start_http_server,
)

log = logging.getLogger(__name__)

disable_created_metrics()  # `*_created` timestamps double the output and no dashboard uses them
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# latency buckets from 50 us (in-memory ack) to 2.5 s (a stalled loop)
_LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
                    1.0, 2.5)
_GAS_BUCKETS = (1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7, 2e7, 3e7)
_SCAN_BUCKETS = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0)


@functools.lru_cache(maxsize=None)
def ready_gauge() -> Gauge:
    """``crossbook_ready{service}``: 1 once the service does its job (supervisor readiness)."""
    return Gauge("crossbook_ready", "1 once the service is serving", ["service"], registry=REGISTRY)


def mark_ready(service: str, ready: bool = True) -> None:
    """Set the readiness gauge of ``service``."""
    ready_gauge().labels(service=service).set(1 if ready else 0)


def start_exporter(port: int, host: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` of this process's registry on ``host:port`` (a daemon thread; the
    asyncio services never block on it). Returns the port."""
    start_http_server(port, addr=host, registry=REGISTRY)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return port


# ============================================================================ matcher


@dataclass(frozen=True)
class MatcherMetrics:
    """The matcher's metrics."""

    orders: Counter  # requests that reach the engine, by op and outcome (orders/s = rate())
    ack_latency: Histogram  # frame received -> ack queued on the connection, by op
    sequenced: Counter  # settlement items (fills, withdrawals, ...) given a sequence number
    open_orders: Gauge
    connections: Gauge
    lag_items: Gauge
    lag_seconds: Gauge
    matched_seq: Gauge
    settled_seq: Gauge
    settle_p99: Gauge
    journal_bytes: Gauge  # the journal on disk (sealed segments + the active file)
    replay_keys: Gauge  # nonce words and digests the engine still remembers (bounded by expiry)
    fill_log_ok: Gauge  # the fills record on disk is being written (matcher/fill_log.py)


@functools.lru_cache(maxsize=None)
def matcher_metrics() -> MatcherMetrics:
    """Create (once) and return the matcher's metrics."""
    r = REGISTRY
    return MatcherMetrics(
        orders=Counter("crossbook_matcher_orders", "engine commands from clients, by op and outcome",
                       ["op", "outcome"], registry=r),
        ack_latency=Histogram("crossbook_matcher_ack_latency_seconds",
                              "time from request frame to its ack", ["op"],
                              buckets=_LATENCY_BUCKETS, registry=r),
        sequenced=Counter("crossbook_matcher_sequenced_items", "items sequenced for settlement",
                          registry=r),
        open_orders=Gauge("crossbook_matcher_open_orders", "resting orders", registry=r),
        connections=Gauge("crossbook_matcher_connections", "open websocket connections", registry=r),
        lag_items=Gauge("crossbook_matcher_settlement_lag_items", "sequenced but not yet settled items",
                        registry=r),
        lag_seconds=Gauge("crossbook_matcher_settlement_lag_seconds",
                          "age of the oldest unsettled item", registry=r),
        matched_seq=Gauge("crossbook_matcher_matched_seq", "last sequenced item", registry=r),
        settled_seq=Gauge("crossbook_matcher_settled_seq", "last item the chain confirmed", registry=r),
        settle_p99=Gauge("crossbook_matcher_settle_delay_p99_seconds",
                         "p99 of match -> on-chain confirmation delay", registry=r),
        journal_bytes=Gauge("crossbook_matcher_journal_bytes",
                            "journal on disk: sealed segments still needed + the active file",
                            registry=r),
        replay_keys=Gauge("crossbook_matcher_replay_protection_keys",
                          "order nonce words (runs of 32 nonces) and withdrawal/transfer digests "
                          "remembered until expiry",
                          registry=r),
        fill_log_ok=Gauge("crossbook_matcher_fill_log_ok",
                          "1 while the fills record is written to disk, 0 after a write failed",
                          registry=r),
    )


# client commands counted as orders (the watcher's chain events arrive over the same socket)
_ORDER_OPS = {"PlaceOrder": "place", "CancelOrder": "cancel", "CancelAll": "cancel_all",
              "ModifyOrder": "modify", "RequestWithdrawal": "withdraw", "RequestTransfer": "transfer"}


def _op_name(cmd: Any) -> str:
    name = type(cmd).__name__
    return _ORDER_OPS.get(name, "chain" if name.startswith("Chain") or name == "AgentSet" else name)


def instrument_matcher(server: Any) -> MatcherMetrics:
    """Attach the matcher metrics to a :class:`matcher.server.MatcherServer` before ``start()``.

    Wraps ``_on_message`` (stamps the frame's arrival), ``_enqueue`` (remembers the stamp of
    each client request) and ``_run`` (counts the command's outcome, observes ack latency and
    sequenced items); gauges read ``status()`` at scrape time, so they cost nothing between
    scrapes. The wrappers run on the server's single loop thread, so no locking is needed.
    """
    from matcher.commands import Sequenced

    m = matcher_metrics()
    arrival: dict[tuple[int, int], float] = {}
    current = [0.0]
    on_message: Callable[..., Any] = server._on_message
    enqueue: Callable[..., Any] = server._enqueue
    run: Callable[..., Any] = server._run

    def _on_message(conn: Any, raw: Any) -> None:
        current[0] = time.perf_counter()
        on_message(conn, raw)

    def _enqueue(conn: Any, rid: int, cmd: Any) -> None:
        arrival[(id(conn), rid)] = current[0] or time.perf_counter()
        enqueue(conn, rid, cmd)

    def _run(job: Any) -> None:
        cmd, conn, rid, _fut = job
        run(job)
        if conn is None:
            return  # chain events and oracle prices are not client orders
        op = _op_name(cmd)
        t0 = arrival.pop((id(conn), rid), None)
        if t0 is not None:
            m.ack_latency.labels(op=op).observe(time.perf_counter() - t0)

    def _count(res: Any, cmd: Any, client: bool) -> None:
        if client and type(cmd).__name__ in _ORDER_OPS:
            m.orders.labels(op=_op_name(cmd), outcome="ok" if res.ack.ok else res.ack.code.name).inc()
        n = sum(1 for o in res.outputs if type(o) is Sequenced)
        if n:
            m.sequenced.inc(n)

    # the outcome is only visible to JournaledEngine.submit's caller: wrap the journaled engine
    jengine = server.jengine
    submit: Callable[..., Any] = jengine.submit
    in_client = [False]

    def _submit(cmd: Any) -> Any:
        res = submit(cmd)
        try:
            _count(res, cmd, in_client[0])
        except Exception:  # noqa: BLE001 - metrics must never break the engine
            log.debug("metrics count failed", exc_info=True)
        return res

    def _run_marked(job: Any) -> None:
        in_client[0] = job[1] is not None
        try:
            _run(job)
        finally:
            in_client[0] = False

    jengine.submit = _submit
    server._on_message = _on_message
    server._enqueue = _enqueue
    server._run = _run_marked

    def status(key: str, scale: float = 1.0) -> Callable[[], float]:
        def read() -> float:
            try:
                return float(server.status()[key]) * scale
            except Exception:  # noqa: BLE001 - a scrape during shutdown
                return 0.0
        return read

    m.open_orders.set_function(lambda: float(len(server.engine.orders)))
    m.connections.set_function(lambda: float(len(server.conns)))
    m.lag_items.set_function(status("lag_items"))
    m.lag_seconds.set_function(status("lag_ms", 0.001))
    m.matched_seq.set_function(status("matched_seq"))
    m.settled_seq.set_function(status("settled_seq"))
    m.settle_p99.set_function(status("settle_p99_ms", 0.001))
    writer = server.jengine.writer
    m.journal_bytes.set_function(lambda: float(_journal_bytes(writer)))
    eng = server.engine
    m.replay_keys.set_function(
        lambda: float(sum(len(d) for d in eng.nonces.values()) + len(eng.digests)))
    hub = server.hub
    m.fill_log_ok.set_function(
        lambda: float(hub.fill_log is not None and not hub.fill_log.broken))
    return m


def _journal_bytes(writer: Any) -> int:
    """Bytes of the journal on disk: its sealed segments and what the writer has appended."""
    from matcher.journal import sealed_segments

    total = writer.offset
    for _, p in sealed_segments(writer.path):
        try:
            total += p.stat().st_size
        except OSError:  # deleted by a prune between the listing and the stat
            pass
    return total


# ============================================================================ relayer


@dataclass(frozen=True)
class RelayerMetrics:
    """The relayer's metrics."""

    batches: Counter  # mined settle transactions, by outcome
    batch_gas: Histogram
    batch_items: Histogram
    rejected: Counter  # items the contract recorded as rejected, by reason
    settled_seq: Gauge
    bumps: Counter
    lag_p99: Gauge


@functools.lru_cache(maxsize=None)
def relayer_metrics() -> RelayerMetrics:
    """Create (once) and return the relayer's metrics."""
    r = REGISTRY
    return RelayerMetrics(
        batches=Counter("crossbook_relayer_batches", "settle transactions mined, by outcome", ["outcome"],
                        registry=r),
        batch_gas=Histogram("crossbook_relayer_batch_gas", "gas used per settled batch",
                            buckets=_GAS_BUCKETS, registry=r),
        batch_items=Histogram("crossbook_relayer_batch_items", "items per settled batch",
                              buckets=(1, 5, 10, 25, 50, 100, 200, 500, 1000), registry=r),
        rejected=Counter("crossbook_relayer_rejected_items", "items rejected on-chain, by reason",
                         ["reason"], registry=r),
        settled_seq=Gauge("crossbook_relayer_settled_seq", "last item this relayer saw settled",
                          registry=r),
        bumps=Counter("crossbook_relayer_fee_bumps", "same-nonce fee bumps of stuck batches",
                      registry=r),
        lag_p99=Gauge("crossbook_relayer_settle_delay_p99_seconds",
                      "p99 of stream -> confirmation delay", registry=r),
    )


def instrument_relayer(relayer: Any) -> RelayerMetrics:
    """Attach the relayer metrics to a :class:`settlement.relayer.Relayer` (wraps its
    ``_resolved(tx, receipt)``, the one place that sees every mined receipt, and ``_bump``)."""
    from crossbook.protocol_types import RejectReason
    from settlement.events import ChainBatchSettled

    m = relayer_metrics()
    resolved: Callable[..., Any] = relayer._resolved
    bump: Callable[..., Any] = relayer._bump

    async def _resolved(tx: Any, receipt: Any) -> bool:
        ok: bool = await resolved(tx, receipt)
        try:
            if receipt["status"] == 1:
                m.batches.labels(outcome="ok").inc()
                m.batch_gas.observe(int(receipt["gasUsed"]))
                for ev in relayer.events.decode_logs(receipt["logs"]):
                    if isinstance(ev, ChainBatchSettled):
                        m.batch_items.observe(ev.count)
                        m.settled_seq.set(ev.first_seq + ev.count - 1)
                        for _seq, reason in ev.rejected:
                            try:
                                name = RejectReason(int(reason)).name
                            except ValueError:
                                name = str(reason)
                            m.rejected.labels(reason=name).inc()
            else:
                m.batches.labels(outcome="reverted").inc()
        except Exception:  # noqa: BLE001 - metrics must never break settlement
            log.debug("relayer metrics failed", exc_info=True)
        return ok

    async def _bump(tx: Any) -> None:
        m.bumps.inc()
        await bump(tx)

    relayer._resolved = _resolved
    relayer._bump = _bump
    m.lag_p99.set_function(lambda: relayer.lag.snapshot(time.time()).p99_s)
    return m


# ============================================================================ watcher


@dataclass(frozen=True)
class WatcherMetrics:
    """The watcher's metrics."""

    events: Counter  # chain events forwarded to the matcher, by kind
    cursor_block: Gauge
    sessions: Counter


@functools.lru_cache(maxsize=None)
def watcher_metrics() -> WatcherMetrics:
    """Create (once) and return the watcher's metrics."""
    r = REGISTRY
    return WatcherMetrics(
        events=Counter("crossbook_watcher_events", "chain events forwarded to the matcher", ["kind"],
                       registry=r),
        cursor_block=Gauge("crossbook_watcher_cursor_block", "last block whose events were forwarded",
                           registry=r),
        sessions=Counter("crossbook_watcher_sessions", "matcher connections opened", registry=r),
    )


# ============================================================================ keeper


@dataclass(frozen=True)
class KeeperMetrics:
    """The liquidation keeper's metrics."""

    scan_time: Histogram
    accounts: Gauge
    candidates: Counter
    sent: Counter  # liquidation transactions sent, by kind
    won: Counter  # mined successfully
    lost: Counter  # lost races (someone else was first)
    errors: Counter
    block: Gauge


@functools.lru_cache(maxsize=None)
def keeper_metrics() -> KeeperMetrics:
    """Create (once) and return the keeper's metrics."""
    r = REGISTRY
    return KeeperMetrics(
        scan_time=Histogram("crossbook_keeper_scan_seconds", "health scan of every sub-account",
                            buckets=_SCAN_BUCKETS, registry=r),
        accounts=Gauge("crossbook_keeper_accounts", "sub-accounts in the health index", registry=r),
        candidates=Counter("crossbook_keeper_candidates", "liquidatable accounts planned", registry=r),
        sent=Counter("crossbook_keeper_liquidations_sent", "keeper transactions sent", ["kind"],
                     registry=r),
        won=Counter("crossbook_keeper_liquidations_won", "keeper transactions mined ok", registry=r),
        lost=Counter("crossbook_keeper_liquidations_lost", "races lost to another liquidator",
                     registry=r),
        errors=Counter("crossbook_keeper_errors", "failed keeper steps and reverts", registry=r),
        block=Gauge("crossbook_keeper_block", "last block the keeper scanned", registry=r),
    )


class StatsDelta:
    """Turns a monotonically growing stats field into Counter increments."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def inc(self, counter: Any, key: str, value: int) -> None:
        """Increment ``counter`` by how much ``value`` grew since the last call for ``key``."""
        d = value - self.last.get(key, 0)
        if d > 0:
            counter.inc(d)
        self.last[key] = value


def instrument_keeper(liq: Any) -> KeeperMetrics:
    """Attach the keeper metrics to a :class:`keeper.liquidator.Liquidator` by wrapping its
    public ``tick`` and ``check_in_flight`` and copying :class:`LiquidatorStats` deltas."""
    m = keeper_metrics()
    delta = StatsDelta()
    tick: Callable[..., Any] = liq.tick
    check: Callable[..., Any] = liq.check_in_flight

    def sync() -> None:
        s = liq.stats
        delta.inc(m.candidates, "candidates", s.candidates)
        delta.inc(m.won, "mined_ok", s.mined_ok)
        delta.inc(m.lost, "lost_races", s.lost_races)
        delta.inc(m.errors, "errors", s.errors)
        for kind, n in dict(s.sent_kinds).items():
            delta.inc(m.sent.labels(kind=kind), f"sent:{kind}", n)

    async def _tick() -> Any:
        scans = liq.stats.scans
        out = await tick()
        if liq.stats.scans > scans:
            m.scan_time.observe(liq.stats.last_scan_ms / 1000)
        m.block.set(liq.last_block)
        sync()
        return out

    async def _check() -> None:
        await check()
        sync()

    liq.tick = _tick
    liq.check_in_flight = _check
    m.accounts.set_function(lambda: float(len(liq.index.book)))
    return m


# ============================================================================ feeder


@dataclass(frozen=True)
class FeederMetrics:
    """The oracle feeder's metrics."""

    updates: Counter
    price: Gauge
    failures: Counter


@functools.lru_cache(maxsize=None)
def feeder_metrics() -> FeederMetrics:
    """Create (once) and return the feeder's metrics."""
    r = REGISTRY
    return FeederMetrics(
        updates=Counter("crossbook_feeder_updates", "prices pushed on-chain", ["symbol"], registry=r),
        price=Gauge("crossbook_feeder_price", "last price pushed (USD)", ["symbol"], registry=r),
        failures=Counter("crossbook_feeder_failures", "feeder steps that failed", registry=r),
    )


__all__ = [
    "FeederMetrics", "KeeperMetrics", "MatcherMetrics", "REGISTRY", "RelayerMetrics", "StatsDelta",
    "WatcherMetrics", "feeder_metrics", "instrument_keeper", "instrument_matcher", "instrument_relayer",
    "keeper_metrics", "mark_ready", "matcher_metrics", "ready_gauge", "relayer_metrics",
    "start_exporter", "watcher_metrics",
]
