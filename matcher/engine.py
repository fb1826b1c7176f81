"""The multi-market matching engine: books + shadow ledger + pre-trade risk + sequencing.

Sans-I/O and deterministic: :meth:`Engine.apply` takes one command (see
:mod:`matcher.commands`), changes in-memory state and returns a :class:`Result` (exactly one
ack plus order updates, fills, busts and newly sequenced items). No clock, no sockets, no
randomness; ``now`` arrives inside each command. Equal command streams give equal
:meth:`Engine.state_hash`.

Journaling contract: a command whose result has ``journal=False`` changed nothing (every
rejection happens before any mutation), so the journal only needs the ``journal=True`` ones and
replaying them reproduces the state. ``Result.ack.seq`` is the command's position in that
journaled stream (``Engine.cmd_seq``).

Every fill, withdrawal, transfer, funding update and forced withdrawal the engine accepts gets
the next gap-free sequence number from the ledger (invariant 3) and stays retrievable through
:meth:`Engine.items_from` until its batch settles.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from typing import Any, Callable, Final

from msgspec.structs import astuple

from crossbook.config import DEFAULT_SPEC, ExchangeSpec, risk_params
from crossbook.liquidation import LiquidationParams, LiquidationQuote, apply_liquidation
from crossbook.margin import SubAccount, fee_amount, fill_cash
from crossbook.protocol_types import (
    FillItem,
    ForcedItem,
    FundingItem,
    Item,
    ItemKind,
    Order as SignedOrder,
    TransferItem,
    WithdrawItem,
)
from matcher.book import OrderBook
from matcher.commands import (
    Ack,
    AgentSet,
    Bust,
    CancelAll,
    CancelOrder,
    ChainBadDebtSettled,
    ChainBatchSettled,
    ChainCollateralLiquidated,
    ChainDeleveraged,
    ChainDeposit,
    ChainForcedWithdrawalExecuted,
    ChainForcedWithdrawalRequested,
    ChainFundingUpdated,
    ChainLiquidated,
    ChainLiquidationParamsSet,
    Code,
    Command,
    ExpireTick,
    FillReport,
    ItemRejected,
    Liquidation,
    ModifyOrder,
    OrderStatus,
    OrderUpdate,
    Output,
    PlaceOrder,
    PostFunding,
    RequestTransfer,
    RequestWithdrawal,
    Result,
    Sequenced,
    SetHalt,
    SetOraclePrices,
)
from matcher.ledger import Acct, Entry, Ledger, LedgerSnapshot, add_asset, funding_delta
from matcher.native import use_source_if_stale
from matcher.orders import (
    Accepted,
    CancelReason,
    Cancelled,
    CommandRejected,
    Event,
    Fill,
    Modified,
    Order as BookOrder,
    Rejected,
    RejectReason,
    STP_VALUES,
    TIF_VALUES,
    Tif,
)
from matcher.risk import Exposure, RiskModel, at_generation, div_notional, new_exposure
from matcher.structs import EngineSnapshot, RecRow

_U64: Final = 2**64 - 1
# nonces and withdrawal/transfer digests are forgotten in buckets of 2**_FORGET_SHIFT seconds
# of expiry (Forgets): a key is kept up to ~4 minutes longer than needed, and the accept path
# pays one list append instead of a heap push per key
_FORGET_SHIFT: Final = 8
# the bucket of a key restored from a snapshot written before expiry buckets existed: its
# expiry is unknown, so it is never forgotten (beyond any real bucket: expiry < 2**64)
_NEVER: Final = 2**64
_NEVER_BUCKET: Final = [_NEVER]  # never in Forgets: its keys are never dropped
# An owner's nonces are remembered in words of 2**_NONCE_SHIFT consecutive nonces, one bit
# each, with the latest expiry bucket of the orders signed with any of them: clients number
# their orders in sequence (the SDK does, and the contract packs consecutive nonces), so one
# record holds a whole run where one per nonce cost ~108 bytes. A nonce is then remembered
# until its word's latest order expires: possibly longer than its own orders live, never
# shorter (a reuse meanwhile is refused as a replay). A word is one int, the bucket id above
# _WORD_BITS bits: no container per word for the cyclic GC to track, and a native (tagged) int
# in the compiled engine for any expiry below 2**37 s
_NONCE_SHIFT: Final = 5
_NONCE_MASK: Final = 31
_WORD_BITS: Final = 32
_BITS_MASK: Final = 2**32 - 1
# the bucket id a snapshot writes for a word never forgotten (_NEVER does not fit a uint64)
_NEVER_ID: Final = -1
_MISSING: Final = object()  # a dict.get default where None is a value
_HALT_REASON_MAX: Final = 200  # characters of a SetHalt reason (it is in every refusal's message)
# owner spellings remembered by Engine._owner_key before the cache starts afresh
_OWNER_CACHE: Final = 100_000
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_POST_ONLY: Final = int(Tif.POST_ONLY)
_MARKET: Final = int(Tif.MARKET)
_STP_MAX: Final = max(STP_VALUES)
# _validate_order tests tif and stp as ranges: both enums run from 0 without gaps, MARKET last
assert TIF_VALUES == set(range(_MARKET + 1)) and STP_VALUES == set(range(_STP_MAX + 1))
# enum members as module constants: a class attribute lookup on an enum costs a Python-level
# __getattr__ round trip from compiled code
_OK: Final = Code.OK
_OPEN: Final = OrderStatus.OPEN
_PARTIALLY_FILLED: Final = OrderStatus.PARTIALLY_FILLED
_FILLED: Final = OrderStatus.FILLED
_CANCELLED: Final = OrderStatus.CANCELLED
_MODIFIED: Final = OrderStatus.MODIFIED
_FILL_KIND: Final = int(ItemKind.FILL)
_CANCEL_REASONS: Final = frozenset((int(CancelReason.USER), int(CancelReason.DEAD_MAN)))
_CANCEL_USER: Final = CancelReason.USER
_USER: Final = int(CancelReason.USER)
# journaled cancel reasons -> the book's reason (replay passes it without an enum call)
_REPLAY_CANCEL: Final = {int(r): r for r in (CancelReason.USER, CancelReason.DEAD_MAN)}
# commands that carry a chain log position (block, log_index): exactly-once via the chain cursor
_CHAIN_CMDS: Final = frozenset((ChainDeposit, ChainBatchSettled, ChainForcedWithdrawalRequested,
                                AgentSet, ChainLiquidated, ChainCollateralLiquidated, ChainBadDebtSettled,
                                ChainDeleveraged, ChainForcedWithdrawalExecuted,
                                ChainLiquidationParamsSet, ChainFundingUpdated))

# the command types and astuple as module statics (a plain module name is a dict lookup from
# compiled code)
_PLACE: Final = PlaceOrder
_CANCEL: Final = CancelOrder
_MODIFY: Final = ModifyOrder
_astuple: Final = astuple
# likewise the output structs the order paths build
_Ack: Final = Ack
_Result: Final = Result
_OrderUpdate: Final = OrderUpdate
_FillReport: Final = FillReport
_Sequenced: Final = Sequenced
_FillItem: Final = FillItem

# commands that carry the intake's wall clock: a journaled one advances Engine.clock
_CLOCKED: Final = frozenset((PlaceOrder, CancelOrder, CancelAll, ModifyOrder, ExpireTick,
                             RequestWithdrawal, RequestTransfer, PostFunding, SetOraclePrices))

# commands that change the ledger only through fills (see Engine._base_health)
_ORDER_CMDS: Final = frozenset((PlaceOrder, CancelOrder, CancelAll, ModifyOrder, ExpireTick))

# book reject reasons -> engine codes
_BOOK_CODES: dict[int, Code] = {
    RejectReason.BAD_TYPE: Code.BAD_REQUEST,
    RejectReason.OUT_OF_RANGE: Code.BAD_REQUEST,
    RejectReason.BAD_SIZE: Code.BAD_SIZE,
    RejectReason.BAD_PRICE: Code.BAD_PRICE,
    RejectReason.OFF_TICK: Code.OFF_TICK,
    RejectReason.OFF_LOT: Code.OFF_LOT,
    RejectReason.DUPLICATE_ORDER_ID: Code.BAD_REQUEST,
    RejectReason.DUPLICATE_CLIENT_ID: Code.DUPLICATE_CLIENT_ID,
    RejectReason.UNKNOWN_ORDER: Code.UNKNOWN_ORDER,
    RejectReason.EXPIRED: Code.EXPIRED,
    RejectReason.POST_ONLY_WOULD_CROSS: Code.POST_ONLY_WOULD_CROSS,
    RejectReason.BAD_ENUM: Code.BAD_REQUEST,
}
_MAX_WAITING_FORCED: Final = 1_000
# refusals of a forced-withdrawal request that a deposit into the account can lift
_WAITS_FOR_DEPOSIT: Final = frozenset((Code.INSUFFICIENT_BALANCE, Code.INSUFFICIENT_MARGIN))
# the human half of a book's refusal (the code is the machine-readable half, _BOOK_CODES)
_BOOK_MESSAGES: dict[int, str] = {
    RejectReason.BAD_TYPE: "a numeric field is not an integer",
    RejectReason.OUT_OF_RANGE: "a field is out of range",
    RejectReason.BAD_SIZE: "size must be positive",
    RejectReason.BAD_PRICE: "price must be positive",
    RejectReason.OFF_TICK: "price not on the market's tick",
    RejectReason.OFF_LOT: "size not a multiple of the market's lot",
    RejectReason.DUPLICATE_ORDER_ID: "order id already used in this book",
    RejectReason.DUPLICATE_CLIENT_ID: "client id in use",
    RejectReason.UNKNOWN_ORDER: "unknown order",
    RejectReason.EXPIRED: "order expired before it reached the book",
    RejectReason.POST_ONLY_WOULD_CROSS: "post-only order would trade against the book",
    RejectReason.BAD_ENUM: "unknown tif or stp",
}


@dataclass(frozen=True)
class EngineConfig:
    """Limits of one engine. ``expiry_margin_s`` retires an order that many seconds before its
    signed expiry, so a fill still settles before the contract would call it EXPIRED."""

    spec: ExchangeSpec = DEFAULT_SPEC
    max_unsettled_per_account: int = 10_000
    max_unsettled_global: int = 1_000_000
    max_open_orders_per_account: int = 1_000
    expiry_margin_s: int = 0
    # replay protection remembered per owner, in words of 32 consecutive nonces (~100 bytes a
    # word): 32M sequential nonces, or ~120 MB for an owner who scatters one nonce per word
    # with far expiries. Orders that would need one more word are refused TOO_MANY_NONCES
    max_nonce_words_per_owner: int = 1_000_000


class OrderRec:
    """The engine's record of a live order: the signed order the chain will see, plus the
    book order and the running fill count of its nonce."""

    __slots__ = ("oid", "market", "acct", "owner", "sub", "spelled", "nonce", "signed", "sig", "bo",
                 "filled", "price", "remaining", "is_buy", "cid", "x", "notional")

    def __init__(self, oid: Any, market: int, acct: Any, owner: Any, sub: Any, spelled: Any,
                 nonce: Any, price: Any, signed: SignedOrder, sig: bytes, bo: BookOrder,
                 filled: int, cid: int | None) -> None:
        # id and price boxed (Any): they go into every output and dict as objects, and a
        # native int attribute would be boxed anew (a new int object) for each
        self.oid: Any = oid
        self.market = market
        # the (owner, sub) tuple object itself: a tuple[str, int] attribute is stored unboxed
        # by the compiled build and rebuilt as a new tuple (hashed anew) for every dict it
        # keys (open_count, exposure, the ledger's entries, the maker checks)
        self.acct: Any = acct
        # acct's two parts, the signed order's spelling of the owner, its nonce and price,
        # as objects: the move path reads them for every command (an item of an Any tuple or
        # an attribute of the signed struct is a generic lookup each time)
        self.owner: Any = owner
        self.sub: Any = sub
        self.spelled: Any = spelled
        self.nonce: Any = nonce
        self.signed = signed
        self.sig = sig
        self.bo = bo
        self.filled = filled  # cumulative on (owner, nonce), what the contract's budget sees
        # the book order's price too and, native, its side
        self.price: Any = price
        self.remaining = 0  # open size counted in the exposure
        # remaining * price, kept so that removing the order (a cancel, a replacement, its
        # last fill) takes no wide multiplication
        self.notional: Any = 0
        self.is_buy = bo.is_buy
        self.cid = cid
        # its account's exposure list in its market, once _expose has found it (the lists
        # are never replaced, so each later update skips two dict lookups)
        self.x: list[int] | None = None


class Forgets:
    """Keys to forget once the engine clock has passed their expiry, grouped in buckets of
    coarse expiry (``expiry >> _FORGET_SHIFT``) with a min-heap of the bucket ids: the clock
    passing a bucket drops it whole.

    A bucket is a list ``[bucket id, key, key, ...]`` (a nonce key is two entries, owner and
    nonce) in the order the keys were added. The owner of the keys maps each key to the
    bucket list that will forget it (an existing object: no int is boxed per key); a key
    whose expiry grew also sits in an earlier bucket, which skips it as its map no longer
    names that bucket."""

    __slots__ = ("buckets", "heap", "_last_id", "_last")

    def __init__(self) -> None:
        self.buckets: dict[int, list[Any]] = {}
        self.heap: list[int] = []
        # the bucket of the previous add: keys mostly arrive with one expiry
        self._last_id = -1
        self._last: list[Any] = []

    def bucket(self, b: int) -> list[Any]:
        """The list of bucket ``b`` (created if new), to append keys to."""
        if b == self._last_id:
            return self._last
        lst = self.buckets.get(b)
        if lst is None:
            lst = self.buckets[b] = [b]
            heapq.heappush(self.heap, b)
        self._last_id = b
        self._last = lst
        return lst

    def due(self, clock: int) -> bool:
        """True when the clock has passed every expiry of the first bucket."""
        return bool(self.heap) and self.heap[0] < clock >> _FORGET_SHIFT

    def pop_due(self, clock: int) -> list[list[Any]]:
        """Remove and return, oldest first, the buckets whose every expiry is below ``clock``."""
        limit = clock >> _FORGET_SHIFT
        h = self.heap
        out: list[list[Any]] = []
        while h and h[0] < limit:
            out.append(self.buckets.pop(heapq.heappop(h)))
        self._last_id = -1
        return out

    def load(self, buckets: dict[int, list[Any]]) -> None:
        """Take the buckets of a snapshot."""
        self.buckets = buckets
        self.heap = sorted(buckets)  # a sorted list is a heap
        self._last_id = -1


def _add_open(x: list[int], is_buy: bool, q: Any, n: Any) -> None:
    """Add size ``q`` (possibly 0) of notional ``n`` to one side of exposure list ``x``:
    that side's cached leg cost (RiskModel.floor_cached) goes."""
    # the sums as objects: an int item would be unboxed, added and boxed again
    xs: list[Any] = x
    if is_buy:
        if q:
            xs[0] += q
        xs[1] += n
        x[4] = -1
    else:
        if q:
            xs[2] += q
        xs[3] += n
        x[5] = -1


def _remove_open(x: list[int], is_buy: bool, q: int, n: Any) -> None:
    """Take size ``q`` of notional ``n`` (an order's whole open share) off one side of
    exposure list ``x``: that side's cached leg cost goes."""
    xs: list[Any] = x
    if is_buy:
        x[0] -= q
        xs[1] -= n
        x[4] = -1
    else:
        x[2] -= q
        xs[3] -= n
        x[5] = -1


def _ack(req_id: int, code: Code, message: str) -> Result:
    return _Result(_Ack(req_id, False, code, message, 0, 0), [], False)


class Engine:
    """Books of every listed market, the shadow ledger, risk and the sequencer."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = cfg = config or EngineConfig()
        # the limits the order path reads, as plain ints (config is a frozen dataclass)
        self._expiry_margin = cfg.expiry_margin_s
        self._max_open = cfg.max_open_orders_per_account
        self._max_words = cfg.max_nonce_words_per_owner
        self._max_pending = cfg.max_unsettled_per_account
        self._max_unsettled = cfg.max_unsettled_global
        spec = cfg.spec
        self.params = risk_params(spec)
        self.risk = RiskModel(self.params, spec.fee_ppm_taker, spec.fee_ppm_maker)
        self.taker_fee = spec.fee_ppm_taker
        self.maker_fee = spec.fee_ppm_maker
        self._max_fee = max(self.taker_fee, self.maker_fee)
        self._max_fee_obj: Any = self._max_fee
        self._maker_fee_obj: Any = self.maker_fee
        # market -> (tick, lot) for the order checks
        self._grid: dict[int, tuple[int, int]] = {
            m: (mc.tick_size, mc.lot_size) for m, mc in self.params.markets.items()}
        self.ledger = Ledger()
        for m in self.params.markets:
            self.ledger.conf_funding[m] = 0
            self.ledger.proj_funding[m] = 0
        self.books: dict[int, OrderBook] = {}
        for m, mc in self.params.markets.items():
            self.books[m] = OrderBook(m, mc.tick_size, mc.lot_size,
                                      position_of=self._position_of(m),
                                      maker_check=self._maker_check)
        self.orders: dict[int, OrderRec] = {}
        self.open_count: dict[Acct, int] = {}
        self.exposure: dict[Acct, Exposure] = {}
        # owner -> its sub-accounts that ever had an order (every key of ``exposure``), for
        # cancel_all over all of them; kept where exposure entries are created
        self._subs_of: dict[str, set[int]] = {}
        # owner -> nonce >> _NONCE_SHIFT -> the word: the Forgets bucket id of the largest
        # effective expiry of the orders accepted with its nonces (_NEVER: never forgotten)
        # << _WORD_BITS | its bits (bit nonce & _NONCE_MASK: used). A word is forgotten once
        # the clock passes that bucket: every order signed with its nonces is EXPIRED by then,
        # so memory stays bounded by the orders that could still be accepted
        self.nonces: dict[str, dict[int, int]] = {}
        self._nonce_forgets = Forgets()
        # withdrawal/transfer digest -> the bucket list of its signed expiry (a digest covers
        # its expiry, and the request is EXPIRED once the clock is past it)
        self.digests: dict[bytes, list[Any]] = {}
        self._digest_forgets = Forgets()
        # the high-water mark of the ``now`` of journaled commands: expiry checks use it (not
        # the command's own ``now``, which may step back), so a forgotten nonce or digest
        # stays refused as EXPIRED
        self.clock = 0
        # why trading is halted (SetHalt), or None: new and replacement orders are refused
        self.halt_reason: str | None = None
        self.forced: set[int] = set()
        # forced-withdrawal requests refused for the balance or health they found, by request id:
        # a deposit into the account tries them again (the owner should not wait out the escape
        # delay for a top-up); at most _MAX_WAITING_FORCED, the rest can still be executed on-chain
        self.forced_waiting: dict[int, ChainForcedWithdrawalRequested] = {}
        self.agents: set[tuple[str, str]] = set()
        # live orders an agent key signed -> that agent (lowercase): a revocation cancels them,
        # since the contract checks the approval when it settles a fill. Entries of orders that
        # ended are dropped lazily (_note_agent), so the map stays within twice the live orders
        self.agent_of: dict[int, str] = {}
        self._agent_of_cap = 1024
        self.next_oid = 1
        self.cmd_seq = 0
        # (block_number, log_index) of the last chain event applied: the watcher resumes from
        # here and anything at or before it is a duplicate delivery (at-least-once -> once)
        self.chain_cursor: tuple[int, int] = (0, 0)
        # the clearinghouse's liquidation parameters (LiquidationParamsSet events), for callers
        # that quote liquidations; applying a liquidation event never needs them (it carries
        # every amount)
        self.liquidation_params = LiquidationParams()
        # True while replaying the journal: accepted orders passed the pre-trade check when
        # they were first processed, and the check is a pure function of journaled state, so it
        # is skipped (maker re-checks still run: they decide what trades)
        self.replaying = False
        # spelling -> shared lower-cased owner string (replay only; bounded by _OWNER_CACHE)
        self._owners: dict[str, str] = {}
        # (owner, sub) -> the shared key tuple of that account (_acct; bounded by _OWNER_CACHE)
        self._accts: dict[Any, Any] = {}
        # maker accounts after the fills the current command already vetted (several makers of
        # one account can trade against one taker)
        self._scratch: dict[Acct, SubAccount] = {}
        # maker fills of the current command accepted on the pre-trade floor, per account not
        # in _scratch (the account after them is built only if needed; see _maker_check)
        self._fast_makers: dict[Acct, list[tuple[int, bool, int, int]]] = {}
        # RiskModel.base_health per account, the base of the pre-trade floor (None: the floor
        # does not apply). Valid while the account's projected state, the prices and the
        # funding indices stay as they were: a fill drops its two accounts
        # (_sequence_fill), any command other than an order command drops all (apply)
        self._base_health: dict[Acct, int | None] = {}
        # the generation of the leg costs cached in the exposure lists (RiskModel.floor_cached):
        # moved wherever _base_health is cleared (prices, funding indices)
        self._leg_gen = 0
        # the new order's leg cost from the last _risk_gate (-1: none), stored into its
        # exposure list by _submit when the book takes the order with no other change
        self._leg = -1
        # the clock of the order command _done accepted (-1: none); see apply
        self._done_now = -1
        self._handlers: dict[type, Callable[[Any], Result]] = {
            PlaceOrder: self._place, CancelOrder: self._cancel, CancelAll: self._cancel_all,
            ModifyOrder: self._modify, ExpireTick: self._expire, ChainDeposit: self._deposit,
            ChainBatchSettled: self._settled,
            ChainForcedWithdrawalRequested: self._forced_request, AgentSet: self._agent_set,
            RequestWithdrawal: self._withdraw, RequestTransfer: self._transfer,
            PostFunding: self._funding, SetOraclePrices: self._prices,
            ChainLiquidated: self._liquidated, ChainCollateralLiquidated: self._coll_liquidated,
            ChainBadDebtSettled: self._bad_debt, ChainDeleveraged: self._deleveraged,
            ChainForcedWithdrawalExecuted: self._forced_executed,
            ChainLiquidationParamsSet: self._liq_params,
            ChainFundingUpdated: self._funding_updated, SetHalt: self._set_halt,
        }

    # ================================================================ public API

    def apply(self, cmd: Command) -> Result:
        """Process one command; returns exactly one ack plus outputs. See the module docstring
        for the journaling contract."""
        t = type(cmd)
        if t is _MODIFY or t is _PLACE or t is _CANCEL:
            # the order commands (most of the traffic): none carries a chain position, all
            # are order commands and clocked (see the generic path below). An accepted one
            # ends in _done, which leaves its clock in _done_now and builds the ack with the
            # next sequence number: no attribute of the Result struct is read back
            self._done_now = -1
            if t is _MODIFY:
                res = self._modify(cmd)  # type: ignore[arg-type]
            elif t is _PLACE:
                res = self._place(cmd)  # type: ignore[arg-type]
            else:
                res = self._cancel(cmd)  # type: ignore[arg-type]
            if self._scratch:
                self._scratch.clear()
            if self._fast_makers:
                self._fast_makers.clear()
            now = self._done_now
            if now >= 0:
                self.cmd_seq += 1
                if now > self.clock:
                    self._tick(now)
            elif res.journal:
                # a replacement the book refused after its old order's cancel
                self.cmd_seq += 1
                now = cmd.now  # type: ignore[union-attr]
                if now > self.clock:
                    self._tick(now)
                a = res.ack
                res.ack = _Ack(a.req_id, a.ok, a.code, a.message, a.order_id, self.cmd_seq)
            return res
        pos: tuple[int, int] | None = None
        if t in _CHAIN_CMDS and cmd.block:  # type: ignore[union-attr]
            pos = (cmd.block, cmd.log_index)  # type: ignore[union-attr]
            if pos <= self.chain_cursor:
                return _Result(_Ack(cmd.req_id, True, _OK, "already applied", 0, 0), [], False)
        # the order commands called directly: through the handler table the compiled build
        # calls a bound method object via its generic argument-parsing entry point
        if isinstance(cmd, ModifyOrder):
            res = self._modify(cmd)
        elif isinstance(cmd, PlaceOrder):
            res = self._place(cmd)
        elif isinstance(cmd, CancelOrder):
            res = self._cancel(cmd)
        else:
            res = self._handlers[t](cmd)
        # filled only by maker checks (a command that trades)
        if self._scratch:
            self._scratch.clear()
        if self._fast_makers:
            self._fast_makers.clear()
        if t not in _ORDER_CMDS:
            # deposits, settlements, chain events, withdrawals, funding and prices move
            # projected states, prices or indices: no cached base health survives them
            self._base_health.clear()
            self._leg_gen += 1
        if pos is not None:
            # the cursor moves even when the event changed nothing else (a rejected forced
            # request, an already-settled batch), so that command is journaled too: replay must
            # reach the same cursor
            self.chain_cursor = pos
            res.journal = True
        if res.journal:
            self.cmd_seq += 1
            if t in _CLOCKED:
                now = cmd.now  # type: ignore[union-attr]
                if now > self.clock:
                    self._tick(now)
            a = res.ack
            if a.seq != self.cmd_seq:
                # the order paths build their ack with the next seq already (_done)
                res.ack = _Ack(a.req_id, a.ok, a.code, a.message, a.order_id, self.cmd_seq)
        return res

    def items_from(self, seq: int) -> list[tuple[int, Item]]:
        """Sequenced items not yet settled, from ``seq`` on (the relayer's replay)."""
        return self.ledger.items_from(seq)

    def is_agent(self, owner: str, agent: str) -> bool:
        """True when ``agent`` may sign orders for ``owner`` (from AgentSet chain events)."""
        return (owner.lower(), agent.lower()) in self.agents

    def account(self, owner: str, sub: int) -> SubAccount:
        """Projected state of a sub-account (read-only)."""
        return self.ledger.account((owner.lower(), sub))

    def confirmed_account(self, owner: str, sub: int) -> SubAccount:
        """Chain-confirmed state of a sub-account (read-only; empty if unknown)."""
        return self.ledger.confirmed.get((owner.lower(), sub)) or SubAccount()

    def open_exposure(self, owner: str, sub: int) -> Exposure:
        """Per market ``[buy size, buy size*price, sell size, sell size*price]`` of the
        sub-account's live orders."""
        ex = self.exposure.get((owner.lower(), sub))
        return {} if ex is None else {m: x[:4] for m, x in ex.items()}

    def state_hash(self) -> bytes:
        """blake2b-256 of books, live order records, ledger, sequence counters, nonces, digests,
        agents and oracle prices; deterministic across processes and restarts."""
        h = hashlib.blake2b(digest_size=32)
        h.update(repr((self.cmd_seq, self.next_oid, self.chain_cursor)).encode())
        for m in sorted(self.books):
            h.update(self.books[m].state_hash())
        for oid in sorted(self.orders):
            r = self.orders[oid]
            h.update(repr((oid, r.market, r.acct, r.filled, r.remaining, r.price,
                           r.signed.nonce, r.sig)).encode())
        self.ledger.hash_into(h)
        h.update(repr((self.clock, sorted((o, k, w) for o, d in self.nonces.items()
                                          for k, w in d.items()))).encode())
        h.update(repr(sorted((k, b[0]) for k, b in self.digests.items())).encode())
        h.update(repr((sorted(self._nonce_forgets.buckets.items()),
                       sorted(self._digest_forgets.buckets.items()))).encode())
        h.update(repr(self._live_agent_orders()).encode())
        if self.halt_reason is not None:  # (absent while trading: hashes of older builds hold)
            h.update(repr(("halt", self.halt_reason)).encode())
        h.update(repr(sorted((r, c.owner, c.sub, c.asset, c.amount) for r, c in self.forced_waiting.items())).encode())
        h.update(repr((sorted(self.forced), sorted(self.agents),
                       sorted(self.risk.asset_prices.items()),
                       sorted(self.risk.market_prices.items()))).encode())
        ex = {a: {m: tuple(v[:4]) for m, v in x.items() if any(v[:4])}
              for a, x in self.exposure.items()}
        h.update(repr(sorted((a, sorted(x.items())) for a, x in ex.items() if x)).encode())
        h.update(repr(self._liq_params_tuple()).encode())
        return h.digest()

    def _liq_params_tuple(self) -> tuple[int, int, int, int]:
        p = self.liquidation_params
        return (p.penalty_ppm, p.insurance_share_ppm, p.buffer_ppm, p.critical_ppm)

    def snapshot(self) -> EngineSnapshot:
        """The engine's complete state as a serializable value."""
        books = []
        for m in sorted(self.books):
            b = self.books[m]
            oids = [o.oid for o in b.iter_side(True)] + [o.oid for o in b.iter_side(False)]
            books.append((m, b._last_oid, b._fill_seq, oids))
        rows = [
            RecRow(r.oid, r.market, r.acct[0], r.acct[1], r.signed, r.sig, r.filled,
                    r.remaining, r.cid, r.bo.tif, r.bo.stp, r.bo.expiry)
            for r in self.orders.values()
        ]
        # digests of unknown expiry (restored from an old snapshot) keep the old field; the
        # rest is rebuilt from the buckets on restore. Nonces go as words (the old per-nonce
        # fields stay empty)
        never_d = sorted(k for k, b in self.digests.items() if b is _NEVER_BUCKET)
        words = sorted((o, k, w & _BITS_MASK, _NEVER_ID if w >> _WORD_BITS == _NEVER else w >> _WORD_BITS)
                       for o, d in self.nonces.items() for k, w in d.items())
        nb = [(b, lst[1::2], lst[2::2]) for b, lst in sorted(self._nonce_forgets.buckets.items())]
        db = [(b, lst[1:]) for b, lst in sorted(self._digest_forgets.buckets.items())]
        return EngineSnapshot(
            self.cmd_seq, self.next_oid, books, rows, self.ledger.dump(), [],
            never_d, sorted(self.forced), sorted(self.agents),
            dict(self.risk.asset_prices), dict(self.risk.market_prices), self.chain_cursor,
            self._liq_params_tuple(), self.clock, [], db, self._live_agent_orders(),
            [c for _, c in sorted(self.forced_waiting.items())], words, nb, self.halt_reason,
        )

    @classmethod
    def restore(cls, snap: EngineSnapshot, config: EngineConfig | None = None) -> Engine:
        """An engine equal (same state hash) to the one :meth:`snapshot` was taken from."""
        eng = cls(config)
        eng.cmd_seq = snap.cmd_seq
        eng.next_oid = snap.next_oid
        eng.chain_cursor = (snap.chain_cursor[0], snap.chain_cursor[1])
        eng.liquidation_params = LiquidationParams(*snap.liquidation_params)
        eng.ledger = Ledger.load(snap.ledger)
        by_oid: dict[int, BookOrder] = {}
        for row in snap.orders:
            s = row.signed
            acct = (row.owner, row.sub)
            bo = BookOrder(row.oid, row.owner, row.sub, s.is_buy, s.price, row.remaining,
                           row.tif, cid=row.cid, stp=row.stp, reduce_only=s.reduce_only,
                           expiry=row.expiry)
            rec = OrderRec(row.oid, row.market, acct, row.owner, row.sub, s.owner, s.nonce,
                           s.price, s, row.sig, bo, row.filled, row.cid)
            eng.orders[row.oid] = rec
            eng.open_count[acct] = eng.open_count.get(acct, 0) + 1
            eng._expose(rec, row.remaining)
            by_oid[row.oid] = bo
        for m, last_oid, fill_seq, oids in snap.books:
            eng.books[m].load_resting([by_oid[o] for o in oids], last_oid, fill_seq)
        eng.clock = snap.clock
        # the bucket lists are kept as they were (stale entries too), so the restored engine
        # forgets exactly what the snapshotted one would have
        nonce_buckets: dict[int, list[Any]] = {}
        for b, owners, words in snap.nonce_word_buckets:
            flat: list[Any] = [b]
            for o, wk in zip(owners, words):
                flat.append(o)
                flat.append(wk)
            nonce_buckets[b] = flat
        eng._nonce_forgets.load(nonce_buckets)
        for o, wk, bits, b in snap.nonce_words:
            eng.nonces.setdefault(o, {})[wk] = (_NEVER if b == _NEVER_ID else b) << _WORD_BITS | bits
        # a snapshot written before the words lists nonces one by one: each joins its word,
        # in its bucket (ascending, so a word ends in its latest), or never forgotten
        for b, owners, nonces in snap.nonce_buckets:
            for o, n in zip(owners, nonces):
                eng._use_nonce(o, n, b << _FORGET_SHIFT, not eng._nonce_used(o, n))
        for o, n in snap.nonces:
            d = eng.nonces.setdefault(o, {})
            w = d.get(n >> _NONCE_SHIFT, 0)
            d[n >> _NONCE_SHIFT] = _NEVER << _WORD_BITS | (w & _BITS_MASK) | 1 << (n & _NONCE_MASK)
        digest_buckets: dict[int, list[Any]] = {}
        for b, keys in snap.digest_buckets:
            lst: list[Any] = [b]
            for k in keys:
                lst.append(k)
                eng.digests[k] = lst
            digest_buckets[b] = lst
        eng._digest_forgets.load(digest_buckets)
        for k in snap.digests:
            eng.digests[k] = _NEVER_BUCKET
        eng.forced = set(snap.forced)
        eng.agents = {(o, a) for o, a in snap.agents}
        eng.agent_of = {oid: a for oid, a in snap.agent_orders}
        eng.forced_waiting = {c.request_id: c for c in snap.forced_waiting}
        eng.halt_reason = snap.halt_reason
        eng.risk.asset_prices.update(snap.asset_prices)
        eng.risk.market_prices.update(snap.market_prices)
        return eng

    # ================================================================ book hooks

    def _position_of(self, market: int) -> Callable[[Any, int], int]:
        def position_of(owner: Any, sub: int) -> int:
            # read the ledger through self: restore() replaces it
            return self.ledger.position((owner, sub), market)

        return position_of

    def _maker_check(self, m: BookOrder, size: int, price: int) -> bool:
        rec = self.orders[m.oid]
        acct = rec.acct
        risk = self.risk
        funding = self.ledger.proj_funding
        st = self._scratch.get(acct)
        if st is None:
            st = self.ledger.account(acct)
            fast = self._fast_makers.get(acct)
            if fast is None:
                base = self._base(acct, st)
                if base is not None:
                    floor = risk.health_floor(base, {}, rec.market, rec.is_buy, size, price,
                                              self.maker_fee, funding)
                    if floor is not None and floor >= 0:
                        # check_fill's health after this fill is >= floor >= 0: it accepts.
                        # The account after it is only built if another of its makers trades
                        # in this command
                        self._fast_makers[acct] = [(rec.market, rec.is_buy, size, price)]
                        return True
            else:
                # an earlier maker of this account passed on the floor: replay its fills
                for fm, fb, fq, fp in fast:
                    nxt = risk.check_fill(st, fm, fb, fq, fp, self.maker_fee, funding)
                    assert nxt is not None  # the floor proved it acceptable
                    st = nxt
                del self._fast_makers[acct]
                # later makers of the account start from here even if this one is refused
                self._scratch[acct] = st
        after = risk.check_fill(st, rec.market, rec.is_buy, size, price, self.maker_fee, funding)
        if after is None:
            return False
        self._scratch[acct] = after
        return True

    def _base(self, acct: Any, st: SubAccount) -> int | None:
        """``RiskModel.base_health`` of ``acct`` (projected state ``st``), cached in
        ``_base_health``."""
        bases = self._base_health
        if acct in bases:
            return bases[acct]
        base = bases[acct] = self.risk.base_health(st, self.ledger.proj_funding)
        return base

    # ================================================================ nonces, digests, clock

    # nonce arguments are Any: they arrive boxed (astuple) and stay so, where an int
    # parameter would unbox them and box them again for every dict operation

    def _nonce_used(self, owner: str, nonce: Any) -> bool:
        d = self.nonces.get(owner)
        if d is None:
            return False
        n: int = nonce
        w = d.get(n >> _NONCE_SHIFT)
        return w is not None and (w >> (n & _NONCE_MASK)) & 1 == 1

    def _nonce_refusal(self, owner: str, nonce: Any) -> tuple[Code, str] | None:
        """Why a new order cannot take ``nonce`` (used, or no room for one more word of the
        owner's replay protection), or None."""
        d = self.nonces.get(owner)
        if d is None:
            return None
        n: int = nonce
        key = n >> _NONCE_SHIFT
        w = d.get(key)
        if w is None:
            if len(d) >= self._max_words:
                return (Code.TOO_MANY_NONCES,
                        f"{len(d)} words of 32 nonces remembered for this owner until their orders "
                        "expire: use the next nonces in sequence or shorter expiries")
            return None
        if (w >> (n & _NONCE_MASK)) & 1 == 1:
            return Code.REPLAYED_NONCE, f"nonce {nonce} already used"
        return None

    def _use_nonce(self, owner: str, nonce: Any, expiry: int, fresh: bool) -> None:
        """Remember (owner, nonce) of an accepted order until the clock passes ``expiry`` (its
        effective expiry) and every other expiry of its word. ``fresh``: the caller checked
        that the nonce is not in use (only a same-nonce replacement finds its bit set)."""
        b = expiry >> _FORGET_SHIFT
        d = self.nonces.get(owner)
        if d is None:
            d = self.nonces[owner] = {}
        n: int = nonce
        key: Any = n >> _NONCE_SHIFT  # boxed once for the lookup and the bucket entry
        bit = 1 << (n & _NONCE_MASK)
        w = d.get(key)
        if w is None:
            d[key] = b << _WORD_BITS | bit
        elif w >> _WORD_BITS >= b:
            # the word's bucket already covers this expiry
            if fresh:
                d[key] = w | bit
            return
        else:
            d[key] = b << _WORD_BITS | (w & _BITS_MASK) | bit
        lst = self._nonce_forgets.bucket(b)
        lst.append(owner)
        lst.append(key)

    def _use_digest(self, digest: bytes, expiry: int) -> None:
        lst = self._digest_forgets.bucket(expiry >> _FORGET_SHIFT)
        self.digests[digest] = lst
        lst.append(digest)

    def _tick(self, now: int) -> None:
        """Advance the clock to ``now`` (above it) and forget what expired before it."""
        self.clock = now
        nf = self._nonce_forgets
        if nf.due(now):
            nonces = self.nonces
            for lst in nf.pop_due(now):
                b: int = lst[0]
                for i in range(1, len(lst), 2):
                    owner: str = lst[i]
                    d = nonces.get(owner)
                    if d is None:
                        continue
                    # the word may have moved to a later bucket (a later expiry among its
                    # nonces) or been forgotten by an earlier entry of this one. Bucket ids
                    # are never reused: an accepted expiry is not below the clock's bucket
                    w = d.get(lst[i + 1])
                    if w is not None and w >> _WORD_BITS == b:
                        del d[lst[i + 1]]
                        if not d:
                            del nonces[owner]
        df = self._digest_forgets
        if df.due(now):
            digests = self.digests
            for lst in df.pop_due(now):
                for i in range(1, len(lst)):
                    if digests.get(lst[i]) is lst:
                        del digests[lst[i]]

    def _forgets_due(self, now: int) -> bool:
        return self._nonce_forgets.due(now) or self._digest_forgets.due(now)

    # ================================================================ exposure bookkeeping

    def _exposure_list(self, rec: OrderRec) -> list[int]:
        """The exposure list of ``rec``'s account in its market (created if new), kept on
        the record (the lists are never replaced, so later updates skip two dict lookups)."""
        ex = self.exposure.get(rec.acct)
        if ex is None:
            ex = self.exposure[rec.acct] = {}
            owner, sub = rec.acct
            subs = self._subs_of.get(owner)
            if subs is None:
                subs = self._subs_of[owner] = set()
            subs.add(sub)
        x = ex.get(rec.market)
        if x is None:
            x = ex[rec.market] = new_exposure()
        rec.x = x
        return x

    def _expose(self, rec: OrderRec, size: int) -> None:
        """Add ``size`` (negative: remove) of ``rec`` at its limit to its account's exposure."""
        x = rec.x
        if x is None:
            x = self._exposure_list(rec)
        # a side's sums change: its cached leg cost (RiskModel.floor_cached) goes
        if size == -rec.remaining:
            # the whole open size leaves (a cancel, the last fill): its kept notional too
            _remove_open(x, rec.is_buy, rec.remaining, rec.notional)
            rec.remaining = 0
            rec.notional = 0
            return
        n: Any = size * rec.price
        _add_open(x, rec.is_buy, size, n)
        rec.remaining += size
        rec.notional += n

    def _expose_new(self, rec: OrderRec, x: list[int] | None, q: Any, n: Any,
                    gone_q: int = 0, gone_n: Any = 0) -> list[int]:
        """``_expose(rec, q)`` of a record just made (nothing exposed yet), on boxed ints
        (``n`` = ``q`` * its price mostly exceeds the 62-bit native int, whose multiply then
        takes a slower overflow path). ``x``: its exposure list when the caller has it;
        ``gone_q`` and ``gone_n``: a replaced order's share to take off the same side at once
        (its size is mostly the same: the size sum stays). Returns the list."""
        if x is None:
            x = self._exposure_list(rec)
        else:
            rec.x = x
        if gone_q:
            _add_open(x, rec.is_buy, q - gone_q, n - gone_n)
        else:
            _add_open(x, rec.is_buy, q, n)
        rec.remaining = q
        rec.notional = n
        return x

    def _forget(self, rec: OrderRec) -> None:
        """A live order ended: drop it from the records (its exposure is already zero)."""
        # the book order's id object is the key _replay_submit stored (no int to box)
        del self.orders[rec.bo.id_key]
        self._uncount(rec.acct)

    def _uncount(self, acct: Any) -> None:
        """One live order of ``acct`` fewer."""
        n = self.open_count[acct] - 1
        if n:
            self.open_count[acct] = n
        else:
            del self.open_count[acct]

    def _done(self, req_id: Any, oid: Any, out: list[Output], now: int) -> Result:
        """The result of an accepted, journaled order command: its ack already carries the
        command sequence number ``apply`` is about to assign; ``now`` (the command's clock,
        at least the engine's) is left for ``apply``."""
        self._done_now = now
        return _Result(_Ack(req_id, True, _OK, "", oid, self.cmd_seq + 1), out, True)

    def _update(self, rec: OrderRec, status: OrderStatus, reason: int = 0) -> OrderUpdate:
        return _OrderUpdate(rec.oid, rec.owner, rec.sub, rec.market, rec.cid, status,
                           rec.price, rec.filled, rec.remaining, reason)

    def _sequence_fill(self, tk: OrderRec, mk: OrderRec, q: int, px: int) -> tuple[FillItem, int, int, int]:
        """A book fill's state change, shared by ``apply`` and replay: sequence the settlement
        item and take the size off both records and their exposure. Returns the item, its
        sequence number and the taker and maker fees."""
        item = _FillItem(tk.signed, tk.sig, mk.signed, mk.sig, q, px, self.taker_fee,
                         self.maker_fee)
        cash = div_notional(q * px)
        fee_t = fee_amount(cash, self.taker_fee)
        fee_m = fee_amount(cash, self.maker_fee)
        seq = self.ledger.sequence(Entry(0, _FILL_KIND, item, tk.acct, mk.acct, tk.market, 0, q, px,
                                         tk.is_buy, fee_t, fee_m))
        bases = self._base_health
        if bases:
            bases.pop(tk.acct, None)
            bases.pop(mk.acct, None)
        tk.filled += q
        mk.filled += q
        self._expose(tk, -q)
        self._expose(mk, -q)
        return item, seq, fee_t, fee_m

    def _events(self, events: list[Event], out: list[Output], start: int) -> None:
        """Apply book events (from index ``start``) to records, exposure and the ledger."""
        orders = self.orders
        for i in range(start, len(events)):
            ev = events[i]
            t = type(ev)
            if t is Fill:
                assert isinstance(ev, Fill)
                tk = orders[ev.taker_id]
                mk = orders[ev.maker_id]
                q = ev.size
                px = ev.price
                item, seq, fee_t, fee_m = self._sequence_fill(tk, mk, q, px)
                out.append(_Sequenced(seq, item))
                out.append(_FillReport(seq, tk.market, px, q, tk.oid, mk.oid, tk.owner,
                                      tk.sub, mk.owner, mk.sub, tk.is_buy, fee_t,
                                      fee_m))
                for r in (mk, tk):
                    if r.remaining == 0:
                        out.append(self._update(r, _FILLED))
                        self._forget(r)
                    else:
                        out.append(self._update(r, _PARTIALLY_FILLED))
            elif t is Cancelled:
                assert isinstance(ev, Cancelled)
                rec = orders.get(ev.order_id)
                if rec is None:  # pragma: no cover - the book only cancels live orders
                    continue
                self._expose(rec, -rec.remaining)
                out.append(self._update(rec, _CANCELLED, int(ev.reason)))
                self._forget(rec)
            elif t is Modified:
                assert isinstance(ev, Modified)
                rec = orders[ev.order_id]
                self._expose(rec, ev.size - rec.remaining)
                out.append(self._update(rec, _MODIFIED))

    # ================================================================ orders

    def _authorised(self, owner: str, signer: str) -> bool:
        s = signer.lower()
        return s == owner or (owner, s) in self.agents

    def _validate_order(self, o_owner: Any, market: Any, price: Any, size: Any, expiry: Any,
                        max_fee: Any, owner: str, signer: str, tif: int, stp: int,
                        now: int) -> tuple[Code, str] | None:
        """Checks shared by new and replacement orders, on the signed order's fields (as
        ``astuple`` gives them: unchecked; ``owner`` is ``o_owner`` lower-cased); None when
        fine."""
        if self.halt_reason is not None:
            return Code.HALTED, f"trading halted: {self.halt_reason}"
        grid = self._grid.get(market)
        if grid is None:
            return Code.UNKNOWN_MARKET, f"unknown market {market}"
        tick, lot = grid
        # the owner signing (the same spelling) needs no lower-casing
        if signer != o_owner and not self._authorised(owner, signer):
            return Code.NOT_AUTHORISED, "signer is neither the owner nor an approved agent"
        # tif in TIF_VALUES less MARKET, stp in STP_VALUES, as ranges (asserted at import)
        if not (0 <= tif < _MARKET and 0 <= stp <= _STP_MAX):
            return Code.BAD_REQUEST, "bad tif or stp"
        # x >> 64 instead of x <= _U64: no compare against a boxed wide constant. Once the
        # type is checked, the native copies (q, p) take the native int operations instead
        # of the generic ones on objects
        if type(size) is not int:
            return Code.BAD_SIZE, "size must be in 1..2**64-1"
        q: int = size
        if q <= 0 or q >> 64:
            return Code.BAD_SIZE, "size must be in 1..2**64-1"
        if type(price) is not int:
            return Code.BAD_PRICE, "price must be in 1..2**64-1"
        p: int = price
        if p <= 0 or p >> 64:
            return Code.BAD_PRICE, "price must be in 1..2**64-1"
        if p % tick:
            return Code.OFF_TICK, f"price not a multiple of tick {tick}"
        if q % lot:
            return Code.OFF_LOT, f"size not a multiple of lot {lot}"
        if self._expiry_margin:
            expiry = expiry - self._expiry_margin
        if type(expiry) is int:
            # native, as size and price above (the compare would box ``now``)
            e: int = expiry
            late = e < (now if now > 1 else 1)
        else:
            late = expiry < (now if now > 1 else 1)
        if late:
            return Code.EXPIRED, "order expired (or expires within the settlement margin)"
        # the fees as objects: an int compared with an object is boxed (allocated) first
        need: Any = self._maker_fee_obj if tif == _POST_ONLY else self._max_fee_obj
        if max_fee < need:
            return Code.FEE_TOO_HIGH, f"max_fee_ppm below the exchange fee {need}"
        return None

    def _risk_gate(self, acct: Any, market: int, is_buy: bool, size: int, price: int, n: Any,
                   reduce_only: bool, removed: OrderRec | None = None) -> tuple[Code, str] | None:
        """Settlement-lag bound and worst-case margin check of a new order (``n``: its size *
        price); None when fine. ``removed`` is an order being replaced (its exposure does not
        count)."""
        self._leg = -1
        if self.replaying:
            return None
        led = self.ledger
        ex = self.exposure.get(acct)
        # the replaced order keeps market and side (_modify checks), so its share (rs size,
        # rp notional) comes off that side's exposure in that market; ``gone`` is that share
        # as the exact passes take it, built only when one runs
        gone: tuple[int, int, int] | None = None
        rs = rp = 0
        if removed is not None and ex is not None:
            # (its list, once known, is ex's entry: the lists are never replaced)
            if removed.x is None and removed.market not in ex:  # pragma: no cover
                raise KeyError(removed.market)  # a live order is always exposed
            rs = removed.remaining
            rp = removed.notional
        risk = self.risk
        # the lag bound first: whether the order reduces risk only matters once it is hit
        if (not reduce_only
                and (led.pending.get(acct, 0) >= self._max_pending
                     or len(led.unsettled) >= self._max_unsettled)):
            st = led.account(acct)
            if rs:
                gone = (market, rs, rp)
            if not risk.reduces(st, ex, market, is_buy, size, gone):
                return Code.SETTLEMENT_LAG, "settlement lags; only risk-reducing orders accepted"
        if reduce_only:
            # a reduce-only order is capped to the position by the book and refused on-chain if
            # it would grow it, so it can never add risk; in reduce-only mode it must still
            # leave the account solvent at its limit
            if market not in risk.market_prices:
                return self._unpriced_gate(acct, ex, market, is_buy, size, price, True, None)
            return None
        funding = led.proj_funding
        # _base, inlined with one lookup (the projected state only on a miss)
        bases = self._base_health
        cached: Any = bases.get(acct, _MISSING)
        if cached is _MISSING:
            base = bases[acct] = risk.base_health(led.account(acct), funding)
        else:
            base = cached
        if base is not None:
            # health_floor at the taker fee, with the leg costs cached in the exposure lists
            floor = risk.floor_cached(base, ex if ex is not None else {}, market, is_buy, size,
                                      n, funding, rs, rp, self._leg_gen)
            if floor is not None:
                self._leg = risk.last_leg
                if floor >= 0:
                    # a provable lower bound of the exact check's health is >= 0: it accepts
                    return None
        if rs:
            gone = (market, rs, rp)
        st = led.account(acct)
        try:
            ok = risk.check_order(st, ex, market, is_buy, size, price, funding, gone)
        except KeyError:
            # (the floor above never passes an order whose market has no price: its leg has
            # no cost without one, RiskModel._leg_cost)
            if market not in risk.market_prices:
                return self._unpriced_gate(acct, ex, market, is_buy, size, price, False, gone)
            return Code.ORACLE_UNAVAILABLE, "no oracle price for a market or asset held"
        if not ok:
            return Code.INSUFFICIENT_MARGIN, "initial health would fall below 0"
        return None

    def _unpriced_gate(self, acct: Any, ex: Exposure | None, market: int, is_buy: bool,
                       size: int, price: int, reduce_only: bool,
                       gone: tuple[int, int, int] | None) -> tuple[Code, str] | None:
        """Reduce-only mode (docs/protocol.md §9.8): the market has no oracle price, and the
        contract applies a fill in it only if both sides strictly reduce their positions and
        stay solvent at the fill price. So an order is accepted only if it (with its side's
        other open orders in the market) shrinks the position without flipping it, and the
        account stays solvent if it fills at its limit; makers are held to the contract's exact
        rule when they fill (RiskModel.check_fill)."""
        st = self.ledger.account(acct)
        if reduce_only:
            # the book caps it at the position; nothing to close: the book ends it unfilled
            p = st.positions.get(market)
            s = 0 if p is None else p.size
            if (s > 0) == is_buy or not s:
                return None
            size = min(size, -s if s < 0 else s)
        elif not self.risk.reduces(st, ex, market, is_buy, size, gone):
            return (Code.ORACLE_UNAVAILABLE,
                    "no oracle price for the market: reduce-only mode, only orders that "
                    "shrink the position are accepted")
        try:
            ok = self.risk.closes_solvently(st, market, is_buy, size, price,
                                            self._grid[market][1], self.ledger.proj_funding)
        except KeyError:
            return Code.ORACLE_UNAVAILABLE, "no oracle price for a market or asset held"
        if not ok:
            return (Code.INSUFFICIENT_MARGIN,
                    "reduce-only mode: the account would not stay solvent (maintenance health "
                    ">= 0) filled at this limit")
        return None

    def _acct(self, owner: str, sub: Any) -> Any:
        """The (owner, sub) key as one shared tuple object per account, so the dicts it keys
        (the ledger's, exposure, open orders, cached health) find it by identity instead of
        comparing a new tuple's strings (a cache: bounded like _owners)."""
        key = (owner, sub)
        acct = self._accts.get(key)
        if acct is None:
            if len(self._accts) >= _OWNER_CACHE:
                self._accts.clear()
            self._accts[key] = acct = key
        return acct

    def _place(self, cmd: PlaceOrder) -> Result:
        o = cmd.order
        # the signed order's fields with one C call
        o_owner, sub, market, is_buy, reduce_only, price, size, nonce, expiry, max_fee = (
            _astuple(o))
        owner = o_owner.lower()
        now = cmd.now
        if now < self.clock:
            now = self.clock
        bad = self._validate_order(o_owner, market, price, size, expiry, max_fee, owner,
                                   cmd.signer, cmd.tif, cmd.stp, now)
        if bad is not None:
            return _ack(cmd.req_id, *bad)
        acct = self._acct(owner, sub)
        why = self._nonce_refusal(owner, nonce)
        if why is not None:
            return _ack(cmd.req_id, *why)
        book = self.books[market]
        cid = cmd.client_id
        if cid is not None:
            if type(cid) is not int or not 0 <= cid <= _U64:
                return _ack(cmd.req_id, Code.BAD_REQUEST, "client id must be a uint64")
            if book.order_id_of(owner, sub, cid) is not None:
                return _ack(cmd.req_id, Code.DUPLICATE_CLIENT_ID, "client id in use")
        if self.open_count.get(acct, 0) >= self._max_open:
            return _ack(cmd.req_id, Code.TOO_MANY_OPEN_ORDERS, "too many open orders")
        # the notional on the boxed fields (a native product of this width takes the slow
        # overflow path): once, for the risk gate and the exposure
        n: Any = size * price
        bad = self._risk_gate(acct, market, is_buy, size, price, n, reduce_only)
        if bad is not None:
            return _ack(cmd.req_id, *bad)
        # the shared account key's owner string (acct[0]) keys the nonces
        res = self._submit(cmd.req_id, o, cmd.signature, cmd.tif, cmd.stp, cid, now, acct,
                           acct[0], sub, o_owner, 0, size, n, [], self._leg, None, book,
                           market, is_buy, reduce_only, price, nonce, expiry, True, 0, 0)
        signer = cmd.signer
        if signer != o_owner:
            self._note_agent(signer, owner, res.ack.order_id)
        return res

    def _submit(self, req_id: Any, o: SignedOrder, sig: bytes, tif: int, stp: int,
                cid: int | None, now: int, acct: Any, owner: Any, sub: Any, spelled: Any,
                filled: int, size: Any, n: Any, out: list[Output], leg: int,
                x: list[int] | None,
                book: OrderBook, market: int, is_buy: Any, reduce_only: Any, price: Any,
                nonce: Any, expiry: Any, fresh: bool, gone_q: int, gone_n: Any) -> Result:
        """Hand a checked order to its book and turn the events into outputs (``n``: size *
        price). ``leg`` is the
        risk gate's cost of the order's side in its market with the order in (-1: none),
        ``x`` the account's exposure list in the market when the caller has it, ``book`` the
        market's book, ``is_buy`` to ``expiry`` and ``spelled`` (the owner as signed) the
        signed order's fields; ``fresh``: the nonce is not in use (see _use_nonce).
        ``gone_q`` (> 0) and ``gone_n``: the open size and notional of the order this one
        replaces, which left its book but are still in ``x`` (they leave with this order's
        arrival, in one update of the side's sums); its open count passes to this one."""
        oid: Any = self.next_oid  # boxed once: the book order, the dict, the record, the ack
        if self._expiry_margin:
            expiry = expiry - self._expiry_margin
        bo = BookOrder(oid, owner, sub, is_buy, price, size, tif, cid=cid, stp=stp,
                       reduce_only=reduce_only, expiry=expiry, acct=acct)
        events = book.place(bo, now)
        first = events[0]
        if type(first) is Rejected:
            assert isinstance(first, Rejected)
            if gone_q:
                # the replaced order is gone, and nothing takes its place
                assert x is not None
                _remove_open(x, is_buy, gone_q, gone_n)
                self._uncount(acct)
            code = _BOOK_CODES.get(first.reason, Code.BAD_REQUEST)
            msg = _BOOK_MESSAGES.get(first.reason, first.reason.name)
            return _Result(_Ack(req_id, False, code, msg, 0, 0), out, bool(out))
        assert isinstance(first, Accepted)
        self.next_oid += 1
        self._use_nonce(owner, nonce, expiry, fresh)
        rec = OrderRec(oid, market, acct, owner, sub, spelled, nonce, price, o, sig, bo, filled,
                       cid)
        self.orders[oid] = rec
        if not gone_q:
            self.open_count[acct] = self.open_count.get(acct, 0) + 1
        # a reduce-only order may be cut to the position; any other is accepted whole
        accepted: Any = first.size if reduce_only else size
        x = self._expose_new(rec, x, accepted, n if accepted is size else accepted * price,
                             gone_q, gone_n)
        out.append(self._update(rec, _OPEN))
        if len(events) > 1:
            self._events(events, out, 1)
        elif leg >= 0 and (accepted is size or accepted == size):
            # the book took the whole order and nothing else moved: the side's sums are now
            # what the gate's leg was computed from (the replaced order is gone, this one is
            # in), so its cost is the cache's value (RiskModel.floor_cached)
            at_generation(x, self._leg_gen)
            x[4 if is_buy else 5] = leg
        return self._done(req_id, oid, out, now)

    def _owned(self, owner: str, oid: Any) -> OrderRec | Result:
        rec = self.orders.get(oid) if oid is not None else None
        if rec is None:
            return _ack(0, Code.UNKNOWN_ORDER, f"no live order {oid}")
        # the signed order's own spelling of the owner needs no lower-casing
        if owner != rec.spelled and rec.owner != owner.lower():
            return _ack(0, Code.NOT_AUTHORISED, "not your order")
        return rec

    def _cancel(self, cmd: CancelOrder) -> Result:
        oid = cmd.order_id
        if oid is None and cmd.client_id is not None:
            book = self.books.get(cmd.market)
            oid = None if book is None else book.order_id_of(cmd.owner.lower(), cmd.sub,
                                                              cmd.client_id)
        rec = self._owned(cmd.owner, oid)
        if not isinstance(rec, OrderRec):
            return _ack(cmd.req_id, rec.ack.code, rec.ack.message)
        if cmd.reason not in _CANCEL_REASONS:
            return _ack(cmd.req_id, Code.BAD_REQUEST, f"bad cancel reason {cmd.reason!r}")
        out: list[Output] = []
        self._events(self.books[rec.market].cancel(rec.oid, CancelReason(cmd.reason)), out, 0)
        return self._done(cmd.req_id, rec.oid, out, cmd.now)

    def _cancel_all(self, cmd: CancelAll) -> Result:
        owner = cmd.owner.lower()
        if cmd.market is not None and cmd.market not in self.books:
            return _ack(cmd.req_id, Code.UNKNOWN_MARKET, f"unknown market {cmd.market}")
        markets = [cmd.market] if cmd.market is not None else sorted(self.books)
        subs = [cmd.sub] if cmd.sub is not None else sorted(self._subs_of.get(owner, ()))
        out: list[Output] = []
        for sub in subs:
            for m in markets:
                self._events(self.books[m].cancel_all(owner, sub), out, 0)
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out, bool(out))

    def _modify(self, cmd: ModifyOrder) -> Result:
        # the command's and the new order's fields with one C call each (cancel-replace is
        # most of the traffic)
        req_id, cmd_owner, order_id, new_size, n, new_sig, new_signer, now = _astuple(cmd)
        if now < self.clock:
            now = self.clock
        rec = self._owned(cmd_owner, order_id)
        if not isinstance(rec, OrderRec):
            return _ack(req_id, rec.ack.code, rec.ack.message)
        book = self.books[rec.market]
        out: list[Output] = []
        if n is None:
            # the signed order stays: filled + open <= signed size still holds on-chain
            if not 0 < new_size <= rec.remaining:
                return _ack(req_id, Code.BAD_SIZE,
                            "without a new signed order only a size decrease is possible")
            if new_size % book.lot_size:
                return _ack(req_id, Code.OFF_LOT, "size off lot")
            self._events(book.modify(rec.oid, rec.price, new_size, now), out, 0)
            return self._done(req_id, rec.oid, out, now)
        (n_owner, n_sub, n_market, n_is_buy, n_reduce_only, n_price, n_size, n_nonce, n_expiry,
         n_max_fee) = _astuple(n)
        acct = rec.acct
        r_owner = rec.owner
        # the replaced order's own spelling of the owner needs no lower-casing (the same
        # object, usually: no string compare either)
        if n_owner is rec.spelled or n_owner == rec.spelled:
            owner = r_owner
        else:
            owner = n_owner.lower()
            if owner != r_owner:
                return _ack(req_id, Code.BAD_REQUEST,
                            "replacement must keep owner, sub-account, market and side")
        if ((n_sub is not rec.sub and n_sub != rec.sub)
                or n_market != rec.market or n_is_buy != rec.is_buy
                or new_sig is None or new_signer is None):
            return _ack(req_id, Code.BAD_REQUEST,
                        "replacement must keep owner, sub-account, market and side")
        bo = rec.bo
        bad = self._validate_order(n_owner, n_market, n_price, n_size, n_expiry, n_max_fee,
                                   owner, new_signer, bo.tif, bo.stp, now)
        if bad is not None:
            return _ack(req_id, *bad)
        same_nonce = n_nonce == rec.nonce
        if not same_nonce:
            why = self._nonce_refusal(r_owner, n_nonce)
            if why is not None:
                return _ack(req_id, *why)
        # on the same nonce the contract's budget already holds what the old order filled
        # (n_size > 0 passed the checks, so without fills the size needs no test)
        filled = 0
        size: Any = n_size
        if same_nonce:
            filled = rec.filled
            if filled:
                size = n_size - filled
                if size <= 0:
                    return _ack(req_id, Code.BAD_SIZE, "new size not above the amount filled")
        if bo.tif == _POST_ONLY:
            best = book.best_ask() if n_is_buy else book.best_bid()
            if best is not None and (n_price >= best if n_is_buy else n_price <= best):
                return _ack(req_id, Code.POST_ONLY_WOULD_CROSS, "post-only would cross")
        notional: Any = size * n_price  # as in _place
        bad = self._risk_gate(acct, n_market, n_is_buy, size, n_price, notional, n_reduce_only,
                              rec)
        if bad is not None:
            return _ack(req_id, *bad)
        leg = self._leg
        # the replacement keeps account, market and side: the same exposure list
        x = rec.x if rec.x is not None else self._exposure_list(rec)
        gone_q = 0
        gone_n: Any = 0
        if book.withdraw(rec.oid):
            # the usual outcome (the live order left its book whole), as _events applies a
            # Cancelled, except that its share of the exposure leaves with the replacement's
            # arrival and its open count passes to it (_submit)
            gone_q = rec.remaining
            gone_n = rec.notional
            rec.remaining = 0
            rec.notional = 0
            out.append(self._update(rec, _CANCELLED, _USER))
            del self.orders[rec.bo.id_key]
        else:  # pragma: no cover - a live order is always in its book
            self._events(book.cancel(rec.oid, _CANCEL_USER), out, 0)
        res = self._submit(req_id, n, new_sig, bo.tif, bo.stp, rec.cid, now, acct, r_owner,
                           rec.sub, n_owner, filled, size, notional, out, leg, x, book, n_market,
                           n_is_buy, n_reduce_only, n_price, n_nonce, n_expiry, not same_nonce,
                           gone_q, gone_n)
        if new_signer is not None and new_signer != n_owner:
            self._note_agent(new_signer, r_owner, res.ack.order_id)
        return res

    def _expire(self, cmd: ExpireTick) -> Result:
        now = max(cmd.now, self.clock)
        out: list[Output] = []
        for m in sorted(self.books):
            self._events(self.books[m].expire(now), out, 0)
        # journaled also when it only forgets expired nonces or digests (apply advances the
        # clock of a journaled command), so quiet periods still free them
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out,
                      bool(out) or self._forgets_due(now))

    # ================================================================ journal replay (fast path)
    # Recovery replays millions of journaled commands whose outputs (acks, order updates, fill
    # reports, Sequenced notices) nobody reads. ``replay`` applies a journaled command with the
    # same state changes as ``apply`` but builds none of those outputs, and skips the checks a
    # journaled command is known to pass: every check that refuses a command runs before any
    # mutation and is a deterministic function of the command, the config and journaled state,
    # so a command that was journaled passed them when it was first applied and passes them
    # again on replay. The nonce and owner checks are kept (cheap, and they catch a duplicated
    # or foreign record). Anything unusual falls back to ``apply``.

    def replay(self, cmd: Command) -> bool:
        """Apply one journaled command for recovery, without outputs; returns what
        ``apply(cmd).journal`` would (False: the command changed nothing, which a journaled
        command never should). The resulting state equals ``apply``'s (same state hash)."""
        # fields come out with one C call per struct (astuple) instead of an attribute lookup
        # each, and stay boxed (Any) until a native call needs them: an int-typed local would
        # be unboxed here and boxed again for every dict, list or constructor argument (``now``
        # is only compared with the clock and passed to native calls: unboxed)
        t = type(cmd)
        now: int
        if t is _PLACE:
            _, o, sig, signer, tif, cid, stp, now = _astuple(cmd)
            if now < self.clock:
                now = self.clock
            o_owner, sub, market, is_buy, reduce_only, price, size, nonce, expiry, _ = (
                _astuple(o))
            owner = self._owner_key(o_owner)
            if self._nonce_used(owner, nonce):
                return False
            acct: Any = (owner, sub)  # boxed once: it keys several dicts
            ok = self._replay_submit(o, sig, tif, stp, cid, now, acct, 0, size, True, market,
                                     is_buy, reduce_only, price, nonce, expiry, o_owner)
            if ok and signer != o_owner:
                self._note_agent(signer, owner, self.next_oid - 1)
        elif t is _CANCEL:
            _, c_owner, oid, _, _, _, now, reason = _astuple(cmd)
            ok = self._replay_cancel(cmd, c_owner, oid, reason)  # type: ignore[arg-type]
        elif t is _MODIFY:
            _, m_owner, oid, _, n, new_sig, _, now = _astuple(cmd)
            if n is None or new_sig is None:
                return self.apply(cmd).journal
            if now < self.clock:
                now = self.clock
            ok = self._replay_modify(cmd, m_owner, oid, n, new_sig, now)  # type: ignore[arg-type]
        else:
            return self.apply(cmd).journal
        if self._scratch:
            self._scratch.clear()
        if self._fast_makers:
            self._fast_makers.clear()
        if ok:
            self.cmd_seq += 1
            if now > self.clock:  # as apply does for a journaled command
                self._tick(now)
        return ok

    def replay_records(self, records: list[tuple[int, Any]]) -> tuple[int, int]:
        """Replay decoded journal records (``(seq, command)`` pairs, in journal order) with
        :meth:`replay`, in one compiled loop. Records at or below ``cmd_seq`` (covered by a
        snapshot) are skipped. Stops at the first record that does not continue ``cmd_seq``
        or that changed nothing; returns (records consumed, records replayed), so the caller
        names the error at ``records[consumed]`` when it is not the end."""
        replayed = 0
        i = 0
        n = len(records)
        while i < n:
            seq, cmd = records[i]
            if seq > self.cmd_seq:
                if seq != self.cmd_seq + 1 or not self.replay(cmd):
                    break
                replayed += 1
            i += 1
        return i, replayed

    def _owner_key(self, owner: str) -> str:
        """``owner.lower()`` as one shared string object per address, so the account keys of
        replayed commands hash with a cached hash and compare by identity."""
        key = self._owners.get(owner)
        if key is None:
            if len(self._owners) >= _OWNER_CACHE:
                self._owners.clear()
            low = owner.lower()
            key = self._owners.setdefault(low, low)
            self._owners[owner] = key
        return key

    def _replay_submit(self, o: SignedOrder, sig: Any, tif: Any, stp: Any, cid: Any, now: int,
                       acct: Any, filled: int, size: Any, fresh: bool, market: Any, is_buy: Any,
                       reduce_only: Any, price: Any, nonce: Any, expiry: Any,
                       spelled: Any) -> bool:
        """``_submit`` without outputs; False when the book refused the order. The signed
        order's fields come unpacked from the caller; ``acct`` is the (owner, sub) tuple and
        ``fresh`` says the order's nonce is not in use (see _use_nonce)."""
        oid: Any = self.next_oid  # boxed once for the book order and the dict
        owner: Any = acct[0]
        sub: Any = acct[1]
        if self._expiry_margin:
            expiry = expiry - self._expiry_margin
        bo = BookOrder(oid, owner, sub, is_buy, price, size, tif, cid=cid, stp=stp,
                       reduce_only=reduce_only, expiry=expiry)
        events = self.books[market].place(bo, now)
        first = events[0]
        if type(first) is not Accepted:
            return False
        self.next_oid += 1
        self._use_nonce(owner, nonce, expiry, fresh)
        rec = OrderRec(oid, market, acct, owner, sub, spelled, nonce, price, o, sig, bo, filled,
                       cid)
        self.orders[oid] = rec
        oc = self.open_count
        oc[acct] = oc.get(acct, 0) + 1
        q: Any = first.size  # type: ignore[union-attr]
        self._expose_new(rec, None, q, q * price)
        if len(events) > 1:
            self._replay_events(events, 1)
        return True

    def _replay_events(self, events: list[Event], start: int) -> None:
        """``_events`` without outputs: records, exposure and the ledger only."""
        # methods called through self, not bound to locals: the compiled build calls a bound
        # method object through the generic (argument-parsing) entry point
        orders = self.orders
        for i in range(start, len(events)):
            ev = events[i]
            t = type(ev)
            if t is Cancelled:
                rec = orders.get(ev.order_id)  # type: ignore[union-attr]
                if rec is None:  # pragma: no cover - the book only cancels live orders
                    continue
                self._expose(rec, -rec.remaining)
                self._forget(rec)
            elif t is Fill:
                assert isinstance(ev, Fill)
                tk = orders[ev.taker_id]
                mk = orders[ev.maker_id]
                self._sequence_fill(tk, mk, ev.size, ev.price)
                if mk.remaining == 0:
                    self._forget(mk)
                if tk.remaining == 0:
                    self._forget(tk)
            elif t is Modified:
                rec = orders[ev.order_id]  # type: ignore[union-attr]
                self._expose(rec, ev.size - rec.remaining)  # type: ignore[union-attr]

    def _replay_cancel(self, cmd: CancelOrder, owner: str, oid: Any, reason: Any) -> bool:
        """A CancelOrder of ``owner`` (unpacked by ``replay``) without outputs."""
        rec = self.orders.get(oid) if oid is not None else None
        if rec is None or reason not in _CANCEL_REASONS:
            # by client id, or a record that cannot apply: the full path decides
            return self._handlers[CancelOrder](cmd).journal
        # as in _replay_modify: the signed order's spelling first
        if owner != rec.spelled and rec.owner != self._owner_key(owner):
            return False
        events = self.books[rec.market].cancel(rec.oid, _REPLAY_CANCEL[reason])
        if len(events) == 1 and type(events[0]) is Cancelled:
            # the usual outcome, inlined: the order's exposure goes, then its record
            self._expose(rec, -rec.remaining)
            self._forget(rec)
        else:  # pragma: no cover - a live order's cancel is exactly one Cancelled
            self._replay_events(events, 0)
        return True

    def _replay_modify(self, cmd: ModifyOrder, owner: str, oid: Any, n: SignedOrder,
                       new_sig: bytes, now: int) -> bool:
        """A cancel-replace ModifyOrder (fields unpacked by ``replay``; ``now`` on the engine
        clock) without outputs."""
        rec = self.orders.get(oid)
        # the owner's spelling in the command usually equals the signed order's: a string
        # compare instead of the lower-casing lookup
        if rec is None or (owner != rec.spelled and rec.owner != self._owner_key(owner)):
            return self._handlers[ModifyOrder](cmd).journal
        bo = rec.bo
        if bo.tif == _POST_ONLY:
            return self._handlers[ModifyOrder](cmd).journal
        acct: Any = rec.acct  # boxed once: it keys several dicts
        spelled, _, market, is_buy, reduce_only, price, n_size, nonce, expiry, _ = _astuple(n)
        same_nonce = nonce == rec.nonce
        if not same_nonce and self._nonce_used(rec.owner, nonce):
            return False
        filled = rec.filled if same_nonce else 0
        size = n_size - filled
        if size <= 0:
            return False
        events = self.books[rec.market].cancel(rec.oid, _CANCEL_USER)
        if len(events) == 1 and type(events[0]) is Cancelled:
            # the usual outcome, as in _replay_cancel
            self._expose(rec, -rec.remaining)
            self._forget(rec)
        else:  # pragma: no cover - a live order's cancel is exactly one Cancelled
            self._replay_events(events, 0)
        # the cancel alone changed state, so the command counts even if the book refuses the
        # replacement (as in ``apply``)
        if self._replay_submit(n, new_sig, bo.tif, bo.stp, rec.cid, now, acct, filled, size,
                               not same_nonce, market, is_buy, reduce_only, price, nonce, expiry,
                               spelled):
            signer = cmd.new_signer
            if signer is not None and signer != spelled:
                self._note_agent(signer, acct[0], self.next_oid - 1)
        return True

    # ================================================================ chain events

    def _deposit(self, cmd: ChainDeposit) -> Result:
        if cmd.asset != 0 and cmd.asset not in self.params.collaterals:
            return _ack(cmd.req_id, Code.UNKNOWN_ASSET, f"unknown asset {cmd.asset}")
        if cmd.amount <= 0:
            return _ack(cmd.req_id, Code.BAD_SIZE, "deposit amount must be positive")
        acct = self._acct(cmd.owner.lower(), cmd.sub)
        self.ledger.deposit(acct, cmd.asset, cmd.amount)
        out: list[Output] = []
        if self.forced_waiting:
            for rid in sorted(self.forced_waiting):
                w = self.forced_waiting[rid]
                if (w.owner.lower(), w.sub) == acct:
                    # the top-up may cover it now (else it keeps waiting)
                    if self._sequence_forced(w, acct, out) is None:
                        del self.forced_waiting[rid]
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out, True)

    def _settled(self, cmd: ChainBatchSettled) -> Result:
        led = self.ledger
        last = cmd.first_seq + cmd.count - 1
        if cmd.count == 0 or last <= led.settled_seq:
            # an empty batch or one already applied (watcher replay): nothing to do
            return _Result(_Ack(cmd.req_id, True, _OK, "already settled", 0, 0), [], False)
        if cmd.first_seq != led.settled_seq + 1 or last >= led.next_seq:
            return _ack(cmd.req_id, Code.STALE_SETTLEMENT,
                        f"batch {cmd.first_seq}+{cmd.count} does not continue settled "
                        f"prefix {led.settled_seq} (next {led.next_seq})")
        res = led.settle(cmd.first_seq, cmd.count, cmd.rejected)
        out: list[Output] = []
        for e, reason in res.rejected:
            if e.kind == _FILL_KIND:
                assert e.a is not None and e.b is not None
                out.append(Bust(e.seq, reason, e.a, e.b))
            else:
                out.append(ItemRejected(e.seq, reason, e.kind, e.a))
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out, True)

    def _agent_set(self, cmd: AgentSet) -> Result:
        owner, agent = key = (cmd.owner.lower(), cmd.agent.lower())
        out: list[Output] = []
        if cmd.approved:
            self.agents.add(key)
        else:
            self.agents.discard(key)
            # the contract checks the approval when it settles a fill: the agent's live orders
            # would only be filled to be busted, so they end here (reason AGENT_REVOKED)
            orders = self.orders
            for oid in sorted(o for o, a in self.agent_of.items() if a == agent):
                rec = orders.get(oid)
                if rec is None:
                    del self.agent_of[oid]
                elif rec.owner == owner:
                    del self.agent_of[oid]
                    self._events(self.books[rec.market].cancel(oid, CancelReason.AGENT_REVOKED),
                                 out, 0)
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out, True)

    def _note_agent(self, signer: str, owner: str, oid: Any) -> None:
        """Remember that live order ``oid`` of ``owner`` was signed by ``signer`` when that is
        an agent key (not the owner's own, spelled otherwise)."""
        if oid is None or oid not in self.orders:
            return  # refused, or ended on arrival (filled, IOC remainder)
        agent = signer.lower()
        if agent == owner:
            return
        m = self.agent_of
        m[oid] = agent
        if len(m) > self._agent_of_cap:
            # drop the orders that ended since; amortized O(1) per agent order
            orders = self.orders
            for o in [o for o in m if o not in orders]:
                del m[o]
            self._agent_of_cap = max(1024, 2 * len(m))

    def _live_agent_orders(self) -> list[tuple[int, str]]:
        """(order id, agent) of the live orders an agent signed, by id (snapshots, state hash)."""
        orders = self.orders
        return sorted((o, a) for o, a in self.agent_of.items() if o in orders)

    # ================================================================ liquidation path (chain)
    # These events happen on-chain without the matcher: the engine applies them to the CONFIRMED
    # state with the contract's own arithmetic (crossbook/liquidation.py, proven equal to the
    # Solidity by the differential test), then rebuilds the projected state of the accounts they
    # touched as confirmed + the unsettled items. An unsettled item the event made invalid stays
    # sequenced (the relayer must still send it: sequence numbers are gap-free); the contract
    # rejects it and ChainBatchSettled busts it like any other rejection (invariant 4).

    def _liquidation_cancel(self, acct: Acct, out: list[Output]) -> list[int]:
        """Cancel every live order of a liquidated sub-account (reason LIQUIDATION): they were
        priced for a portfolio that no longer exists and would mostly be rejected on-chain."""
        start = len(out)
        for m in sorted(self.books):
            self._events(self.books[m].cancel_all(acct[0], acct[1], CancelReason.LIQUIDATION),
                         out, 0)
        return [o.order_id for o in out[start:] if isinstance(o, OrderUpdate)]

    def _trade_event(self, cmd: ChainLiquidated | ChainDeleveraged, counter: Acct,
                     insurance_share: int, penalty: int) -> Result:
        """Apply a Liquidated / Deleveraged trade (both are a fill of ``|size_delta|`` at the
        event price without fees, funding settled first) to the confirmed state."""
        if cmd.market not in self.params.markets:
            return _ack(cmd.req_id, Code.UNKNOWN_MARKET, f"unknown market {cmd.market}")
        if cmd.size_delta == 0 or cmd.price <= 0 or insurance_share < 0:
            return _ack(cmd.req_id, Code.BAD_REQUEST, "size_delta, price or share out of range")
        target = (cmd.owner.lower(), cmd.sub)
        if counter == target:
            return _ack(cmd.req_id, Code.BAD_REQUEST, "target and counterparty are equal")
        led = self.ledger
        size = abs(cmd.size_delta)
        # the quote the contract executed, rebuilt from the event: cash = floor(x * price / 1e10)
        # as in penalty_terms; `critical` does not affect how it is applied
        q = LiquidationQuote(size, cmd.price, cmd.size_delta, fill_cash(size, cmd.price),
                             insurance_share, penalty, False)
        apply_liquidation(led.confirmed_for_update(target), led.confirmed_for_update(counter),
                          cmd.market, q, led.conf_funding.get(cmd.market, 0))
        led.reproject({target, counter})
        out: list[Output] = []
        cancelled = self._liquidation_cancel(target, out)
        kind = "liquidated" if isinstance(cmd, ChainLiquidated) else "deleveraged"
        out.append(Liquidation(kind, target, counter, cmd.market, None, cmd.size_delta, size,
                               cmd.price, penalty, insurance_share, 0, 0, cancelled, cmd.block,
                               cmd.log_index))
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out, True)

    def _liquidated(self, cmd: ChainLiquidated) -> Result:
        return self._trade_event(cmd, (cmd.liquidator.lower(), cmd.liquidator_sub),
                                 cmd.insurance_share, cmd.penalty)

    def _deleveraged(self, cmd: ChainDeleveraged) -> Result:
        # section 9.7: the counterparty takes the other side at the bankruptcy price, no share
        return self._trade_event(cmd, (cmd.counterparty.lower(), cmd.counterparty_sub), 0, 0)

    def _coll_liquidated(self, cmd: ChainCollateralLiquidated) -> Result:
        if cmd.asset not in self.params.collaterals:
            return _ack(cmd.req_id, Code.UNKNOWN_ASSET, f"unknown asset {cmd.asset}")
        if cmd.amount <= 0 or cmd.paid < 0:
            return _ack(cmd.req_id, Code.BAD_SIZE, "amount must be positive")
        target = (cmd.owner.lower(), cmd.sub)
        liq = (cmd.liquidator.lower(), cmd.liquidator_sub)
        if liq == target:
            return _ack(cmd.req_id, Code.BAD_REQUEST, "target and liquidator are equal")
        led = self.ledger
        # section 9.5 (_moveCollateral): the target gets +paid quote and loses amount; the
        # liquidator the reverse
        t = led.confirmed_for_update(target)
        lq = led.confirmed_for_update(liq)
        add_asset(t, cmd.asset, -cmd.amount)
        add_asset(t, 0, cmd.paid)
        add_asset(lq, cmd.asset, cmd.amount)
        add_asset(lq, 0, -cmd.paid)
        led.reproject({target, liq})
        out: list[Output] = []
        cancelled = self._liquidation_cancel(target, out)
        out.append(Liquidation("collateral_liquidated", target, liq, None, cmd.asset, 0,
                               cmd.amount, cmd.price, 0, 0, 0, 0, cancelled, cmd.block,
                               cmd.log_index))
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out, True)

    def _bad_debt(self, cmd: ChainBadDebtSettled) -> Result:
        if min(cmd.insurance_paid, cmd.fee_pool_paid, cmd.unbacked) < 0:
            return _ack(cmd.req_id, Code.BAD_REQUEST, "negative amounts")
        target = (cmd.owner.lower(), cmd.sub)
        led = self.ledger
        # section 9.6: settleBadDebt sets the quote to 0 (it was -(insurance + fee pool +
        # unbacked)); setting rather than adding is what the contract does
        led.confirmed_for_update(target).quote = 0
        led.reproject({target})
        out: list[Output] = []
        cancelled = self._liquidation_cancel(target, out)
        out.append(Liquidation("bad_debt_settled", target, None, None, 0, 0,
                               cmd.insurance_paid + cmd.fee_pool_paid + cmd.unbacked, 0, 0, 0,
                               cmd.insurance_paid + cmd.fee_pool_paid, cmd.unbacked, cancelled,
                               cmd.block, cmd.log_index))
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out, True)

    def _forced_executed(self, cmd: ChainForcedWithdrawalExecuted) -> Result:
        if cmd.asset != 0 and cmd.asset not in self.params.collaterals:
            return _ack(cmd.req_id, Code.UNKNOWN_ASSET, f"unknown asset {cmd.asset}")
        if cmd.amount <= 0:
            return _ack(cmd.req_id, Code.BAD_SIZE, "amount must be positive")
        acct = (cmd.owner.lower(), cmd.sub)
        led = self.ledger
        # the owner's executeForcedWithdrawal already moved the tokens: debit the confirmed
        # state (section 8: same debit as a withdrawal)
        add_asset(led.confirmed_for_update(acct), cmd.asset, -cmd.amount)
        led.reproject({acct})
        # the request is used up: a FORCED item already sequenced for it stays in the outbox
        # (gap-free seqs) and the contract rejects it REPLAYED, which reverses it in the
        # projected state; a later duplicate request id is never sequenced again
        self.forced.add(cmd.request_id)
        self.forced_waiting.pop(cmd.request_id, None)
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), [], True)

    def _liq_params(self, cmd: ChainLiquidationParamsSet) -> Result:
        p = LiquidationParams(cmd.penalty_ppm, cmd.insurance_share_ppm, cmd.buffer_ppm,
                              cmd.critical_ppm)
        try:
            p.validate()
        except ValueError as exc:
            return _ack(cmd.req_id, Code.BAD_REQUEST, str(exc))
        self.liquidation_params = p
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), [], True)

    # ================================================================ withdrawals & co

    def _debit_check(self, acct: Acct, asset: int, amount: int,
                     now: int, expiry: int | None) -> tuple[Code, str] | None:
        """The contract's withdrawal rule on the projected state: known asset, positive amount,
        not expired, balance (quote: a positive balance; never borrowed), lag bound, and
        ``H_im >= 0`` afterwards."""
        if asset != 0 and asset not in self.params.collaterals:
            return Code.UNKNOWN_ASSET, f"unknown asset {asset}"
        if amount <= 0:
            return Code.BAD_SIZE, "amount must be positive"
        if expiry is not None and now > expiry:
            return Code.EXPIRED, "request expired"
        st = self.ledger.account(acct)
        have = st.quote if asset == 0 else st.collateral.get(asset, 0)
        if amount > have:
            return Code.INSUFFICIENT_BALANCE, f"balance {max(have, 0)} < {amount}"
        cfg = self.config
        if (self.ledger.pending.get(acct, 0) >= cfg.max_unsettled_per_account
                or len(self.ledger.unsettled) >= cfg.max_unsettled_global):
            return Code.SETTLEMENT_LAG, "settlement lags"
        after = st.copy()
        if asset == 0:
            after.quote -= amount
        else:
            after.collateral[asset] -= amount
        try:
            h = self.risk.health(after, self.ledger.proj_funding)
        except KeyError:
            return Code.ORACLE_UNAVAILABLE, "no oracle price for a holding"
        if h < 0:
            return Code.INSUFFICIENT_MARGIN, "initial health would fall below 0"
        return None

    def _withdraw(self, cmd: RequestWithdrawal) -> Result:
        w = cmd.withdrawal
        if cmd.digest in self.digests:
            return _ack(cmd.req_id, Code.REPLAYED, "withdrawal already used")
        acct = (w.owner.lower(), w.subaccount)
        bad = self._debit_check(acct, w.asset, w.amount, max(cmd.now, self.clock), w.expiry)
        if bad is not None:
            return _ack(cmd.req_id, *bad)
        self._use_digest(cmd.digest, w.expiry)
        item = WithdrawItem(w, cmd.signature)
        seq = self.ledger.sequence(Entry(0, int(ItemKind.WITHDRAW), item, acct, None,
                                         asset=w.asset, qty=w.amount))
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), [_Sequenced(seq, item)], True)

    def _transfer(self, cmd: RequestTransfer) -> Result:
        t = cmd.transfer
        if cmd.digest in self.digests:
            return _ack(cmd.req_id, Code.REPLAYED, "transfer already used")
        if t.from_subaccount == t.to_subaccount:
            return _ack(cmd.req_id, Code.BAD_REQUEST, "source and destination are equal")
        owner = t.owner.lower()
        src = (owner, t.from_subaccount)
        bad = self._debit_check(src, t.asset, t.amount, max(cmd.now, self.clock), t.expiry)
        if bad is not None:
            return _ack(cmd.req_id, *bad)
        self._use_digest(cmd.digest, t.expiry)
        item = TransferItem(t, cmd.signature)
        seq = self.ledger.sequence(Entry(0, int(ItemKind.TRANSFER), item, src,
                                         (owner, t.to_subaccount), asset=t.asset, qty=t.amount))
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), [_Sequenced(seq, item)], True)

    def _forced_request(self, cmd: ChainForcedWithdrawalRequested) -> Result:
        if cmd.request_id in self.forced:
            return _ack(cmd.req_id, Code.REPLAYED, "forced request already executed")
        acct = (cmd.owner.lower(), cmd.sub)
        out: list[Output] = []
        bad = self._sequence_forced(cmd, acct, out)
        if bad is not None:
            # the owner can still execute it on-chain after the escape delay; a deposit into the
            # account tries it again (_deposit)
            res = _ack(cmd.req_id, *bad)
            if bad[0] in _WAITS_FOR_DEPOSIT and len(self.forced_waiting) < _MAX_WAITING_FORCED:
                self.forced_waiting[cmd.request_id] = cmd
                res.journal = True  # refused, but it now waits: replay must see it
            return res
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out, True)

    def _sequence_forced(self, cmd: ChainForcedWithdrawalRequested, acct: Acct,
                         out: list[Output]) -> tuple[Code, str] | None:
        """Sequence the FORCED item of request ``cmd`` if the projected state covers it (the
        contract's withdrawal rule); else why not, and nothing changed."""
        bad = self._debit_check(acct, cmd.asset, cmd.amount, 0, None)
        if bad is not None:
            return bad
        self.forced.add(cmd.request_id)
        item = ForcedItem(cmd.request_id)
        seq = self.ledger.sequence(Entry(0, int(ItemKind.FORCED), item, acct, None,
                                         asset=cmd.asset, qty=cmd.amount))
        out.append(_Sequenced(seq, item))
        return None

    def _funding(self, cmd: PostFunding) -> Result:
        mc = self.params.markets.get(cmd.market)
        if mc is None:
            return _ack(cmd.req_id, Code.UNKNOWN_MARKET, f"unknown market {cmd.market}")
        if type(cmd.rate_ppm) is not int or not _I32_MIN <= cmd.rate_ppm <= _I32_MAX:
            return _ack(cmd.req_id, Code.BAD_REQUEST, "rate_ppm must be an int32")
        price = self.risk.market_prices.get(cmd.market)
        if price is None:
            return _ack(cmd.req_id, Code.ORACLE_UNAVAILABLE, "no oracle price for the market")
        item = FundingItem(cmd.market, cmd.rate_ppm)
        seq = self.ledger.sequence(Entry(0, int(ItemKind.FUNDING), item, market=cmd.market,
                                         delta=funding_delta(cmd.rate_ppm, mc.max_funding_ppm,
                                                             price)))
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), [_Sequenced(seq, item)], True)

    def _funding_updated(self, cmd: ChainFundingUpdated) -> Result:
        # the chain's cumulative index replaces the engine's estimate once the batch carrying
        # the item settles (the event precedes its BatchSettled in the same transaction)
        if cmd.market not in self.params.markets:
            return _ack(cmd.req_id, Code.UNKNOWN_MARKET, f"unknown market {cmd.market}")
        self.ledger.note_chain_funding(cmd.market, cmd.cumulative_index)
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), [], True)

    def _set_halt(self, cmd: SetHalt) -> Result:
        # journaled only when it changes something: a repeated halt keeps its first reason
        if type(cmd.reason) is not str or len(cmd.reason) > _HALT_REASON_MAX:
            return _ack(cmd.req_id, Code.BAD_REQUEST, f"reason must be a string of at most {_HALT_REASON_MAX} characters")
        reason = cmd.reason or None
        if type(cmd.cancel_orders) is not bool:
            return _ack(cmd.req_id, Code.BAD_REQUEST, "cancel_orders must be a boolean")
        if cmd.cancel_orders and reason is None:
            return _ack(cmd.req_id, Code.BAD_REQUEST, "cancel_orders goes with a halt (a reason)")
        out: list[Output] = []
        if cmd.cancel_orders:
            # market by market, account by account: one command, so nothing trades between
            # the halt and the last cancel
            for m, acct in sorted({(r.market, r.acct) for r in self.orders.values()}):
                self._events(self.books[m].cancel_all(acct[0], acct[1], CancelReason.HALT), out, 0)
        if (reason is None) == (self.halt_reason is None):
            msg = f"already halted: {self.halt_reason}" if reason is not None else "not halted"
            return _Result(_Ack(cmd.req_id, True, _OK, msg, 0, 0), out, bool(out))
        self.halt_reason = reason
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), out, True)

    def _prices(self, cmd: SetOraclePrices) -> Result:
        for k, v in list(cmd.assets.items()) + list(cmd.markets.items()):
            if type(v) is not int or v <= 0:
                return _ack(cmd.req_id, Code.BAD_PRICE, f"bad price {v!r} for id {k}")
        self.risk.asset_prices.update(cmd.assets)
        self.risk.market_prices.update(cmd.markets)
        # prices the oracle adapter now refuses (stale, out of band): the risk checks must not
        # go on using the last good one, which the contract no longer will
        for a in cmd.gone_assets:
            self.risk.asset_prices.pop(a, None)
        for m in cmd.gone_markets:
            self.risk.market_prices.pop(m, None)
        return _Result(_Ack(cmd.req_id, True, _OK, "", 0, 0), [], True)


__all__ = ["Engine", "EngineConfig", "EngineSnapshot", "OrderRec"]


# last: a compiled build of this file that is older than its source must not shadow it
use_source_if_stale(__name__, __file__, globals())
