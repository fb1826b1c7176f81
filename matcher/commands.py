"""Input commands and outputs of the matching engine (:mod:`matcher.engine`).

Every input is a tagged ``msgspec.Struct`` so the write-ahead journal can encode any of them
with one msgpack encoder and decode them back through the :data:`Command` union. Inputs carry
everything the engine needs, including ``now`` (unix seconds): the engine reads no clock.

``req_id`` is the shell's correlation id for the ack (a websocket request id, a watcher event
counter...). It is opaque to the engine and only copied into the :class:`Ack`.

Owners are 0x-prefixed hex addresses; the engine keys accounts by the lower-cased form.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Union

import msgspec

from crossbook.protocol_types import Item, Order, Transfer, Withdrawal


class Code(IntEnum):
    """Engine reject codes (machine readable, in every rejected :class:`Ack`)."""

    OK = 0
    BAD_SIGNATURE = 1
    UNKNOWN_MARKET = 2
    OFF_TICK = 3
    OFF_LOT = 4
    BAD_SIZE = 5
    BAD_PRICE = 6
    EXPIRED = 7
    POST_ONLY_WOULD_CROSS = 8
    INSUFFICIENT_MARGIN = 9
    SETTLEMENT_LAG = 10
    REPLAYED_NONCE = 11
    TOO_MANY_OPEN_ORDERS = 12
    UNKNOWN_ORDER = 13
    DUPLICATE_CLIENT_ID = 14
    NOT_AUTHORISED = 15
    FEE_TOO_HIGH = 16
    BAD_REQUEST = 17  # malformed field: type, range, enum, mismatched replacement order
    ORACLE_UNAVAILABLE = 18  # the engine has no price a risk check needs
    INSUFFICIENT_BALANCE = 19
    UNKNOWN_ASSET = 20
    REPLAYED = 21  # a withdrawal/transfer digest (or forced request id) already used
    REDUCE_ONLY = 22  # a reduce-only order had nothing to reduce
    STALE_SETTLEMENT = 23  # a settled-batch event that does not continue the settled prefix
    HALTED = 24  # trading halted by the operator (or a deep chain reorg): only cancels
    TOO_MANY_NONCES = 25  # the owner's replay protection is at its bound (EngineConfig)


class OrderStatus(IntEnum):
    """Lifecycle state carried by :class:`OrderUpdate`."""

    OPEN = 1
    PARTIALLY_FILLED = 2
    FILLED = 3
    CANCELLED = 4
    MODIFIED = 5


# ------------------------------------------------------------------------------- inputs
# array_like keeps journal records compact and fast to decode (recovery replays millions).


class PlaceOrder(msgspec.Struct, frozen=True, array_like=True, tag=1):
    """A new signed order. ``signer`` is the address intake recovered (owner or an agent).

    ``tif`` is a :class:`matcher.orders.Tif` value (POST_ONLY for post-only), ``stp`` a
    :class:`matcher.orders.Stp` value; both are off-chain fields, as is ``client_id``.
    """

    req_id: int
    order: Order
    signature: bytes
    signer: str
    tif: int
    client_id: int | None
    stp: int
    now: int


class CancelOrder(msgspec.Struct, frozen=True, array_like=True, tag=2):
    """Cancel one order of ``owner`` by exchange ``order_id`` or by ``(sub, client_id)``."""

    req_id: int
    owner: str
    order_id: int | None
    sub: int
    market: int
    client_id: int | None
    now: int
    # additive, defaulted last field: old journal records (7 fields) still decode; the
    # websocket shell's dead-man's switch sends 8 (DEAD_MAN) so owners see why
    reason: int = 1  # matcher.orders.CancelReason; only USER (1) and DEAD_MAN (8) are accepted


class CancelAll(msgspec.Struct, frozen=True, array_like=True, tag=3):
    """Cancel every live order of ``(owner, sub)`` (``sub`` None: of every sub-account of
    ``owner``), in one market or all of them."""

    req_id: int
    owner: str
    sub: int | None
    market: int | None
    now: int


class ModifyOrder(msgspec.Struct, frozen=True, array_like=True, tag=4):
    """Change a live order. Without ``new_order``: same price, smaller open ``size`` (keeps
    the signed order and queue priority). With ``new_order`` (+ its signature and signer):
    atomic cancel-replace into the new signed order, keeping the exchange order id; the new
    open size is ``new_order.size`` minus what its nonce already filled."""

    req_id: int
    owner: str
    order_id: int
    size: int
    new_order: Order | None
    new_signature: bytes | None
    new_signer: str | None
    now: int


class ExpireTick(msgspec.Struct, frozen=True, array_like=True, tag=5):
    """Clock advance: sweep expired orders of every book."""

    req_id: int
    now: int


class ChainDeposit(msgspec.Struct, frozen=True, array_like=True, tag=6):
    """A confirmed on-chain deposit (watcher)."""

    req_id: int
    owner: str
    sub: int
    asset: int
    amount: int
    # additive, defaulted trailing fields: the log's chain position. Old journal records
    # (without them) still decode; a position of (0, 0) means "unknown" and bypasses the
    # engine's exactly-once cursor (in-process tests and tools)
    block: int = 0
    log_index: int = 0


class ChainBatchSettled(msgspec.Struct, frozen=True, array_like=True, tag=7):
    """A confirmed ``BatchSettled``: items ``first_seq .. first_seq+count-1`` were processed;
    ``rejected`` lists ``(seq, on-chain RejectReason)`` of the ones the contract refused."""

    req_id: int
    first_seq: int
    count: int
    rejected: list[tuple[int, int]]
    # additive, defaulted trailing fields: the log's chain position. Old journal records
    # (without them) still decode; a position of (0, 0) means "unknown" and bypasses the
    # engine's exactly-once cursor (in-process tests and tools)
    block: int = 0
    log_index: int = 0


class ChainForcedWithdrawalRequested(msgspec.Struct, frozen=True, array_like=True, tag=8):
    """An owner asked for an escape-hatch withdrawal on-chain; the operator may execute it
    early through a FORCED item."""

    req_id: int
    request_id: int
    owner: str
    sub: int
    asset: int
    amount: int
    # additive, defaulted trailing fields: the log's chain position. Old journal records
    # (without them) still decode; a position of (0, 0) means "unknown" and bypasses the
    # engine's exactly-once cursor (in-process tests and tools)
    block: int = 0
    log_index: int = 0


class AgentSet(msgspec.Struct, frozen=True, array_like=True, tag=9):
    """``setAgent(agent, approved)`` confirmed on-chain."""

    req_id: int
    owner: str
    agent: str
    approved: bool
    # additive, defaulted trailing fields: the log's chain position. Old journal records
    # (without them) still decode; a position of (0, 0) means "unknown" and bypasses the
    # engine's exactly-once cursor (in-process tests and tools)
    block: int = 0
    log_index: int = 0


class RequestWithdrawal(msgspec.Struct, frozen=True, array_like=True, tag=10):
    """A signed withdrawal (intake verified the owner's signature; ``digest`` is its EIP-712
    digest, the contract's single-use id)."""

    req_id: int
    withdrawal: Withdrawal
    signature: bytes
    digest: bytes
    now: int


class RequestTransfer(msgspec.Struct, frozen=True, array_like=True, tag=11):
    """A signed transfer between two sub-accounts of one owner (verified by intake)."""

    req_id: int
    transfer: Transfer
    signature: bytes
    digest: bytes
    now: int


class PostFunding(msgspec.Struct, frozen=True, array_like=True, tag=12):
    """Sequence a funding update of ``market`` (rate per interval, ppm, int32)."""

    req_id: int
    market: int
    rate_ppm: int
    now: int


class SetOraclePrices(msgspec.Struct, frozen=True, array_like=True, tag=13):
    """The engine's view of oracle prices (1e8) for the risk checks: collateral assets by id
    and markets by id. Only the listed ids change; ``gone_assets`` and ``gone_markets`` lose
    their price (the adapter refuses it: a market without one is in reduce-only mode,
    docs/protocol.md §9.8). Journals written before those two fields decode with them empty."""

    req_id: int
    assets: dict[int, int]
    markets: dict[int, int]
    now: int
    gone_assets: list[int] = []
    gone_markets: list[int] = []


# Liquidation-path and escape-hatch events (docs/protocol.md sections 8 and 9). They happen on-chain
# without the matcher, so the engine applies them to its CONFIRMED state with the contract's own
# arithmetic (crossbook/liquidation.py) and rebuilds the projected state on top. Like the other chain
# commands they carry the log's position for the exactly-once cursor.


class ChainLiquidated(msgspec.Struct, frozen=True, array_like=True, tag=14):
    """``Liquidated``: ``liquidator``'s sub-account took over part of ``(owner, sub)``'s position in
    ``market`` at ``price`` (section 9.4). ``size_delta`` is the target's size change (the
    liquidator's is its negation); ``insurance_share`` went from the target's quote to the fund."""

    req_id: int
    owner: str
    sub: int
    market: int
    liquidator: str
    liquidator_sub: int
    size_delta: int
    price: int
    penalty: int
    insurance_share: int
    block: int = 0
    log_index: int = 0


class ChainCollateralLiquidated(msgspec.Struct, frozen=True, array_like=True, tag=15):
    """``CollateralLiquidated`` (section 9.5): the liquidator bought ``amount`` of ``asset`` from the
    target for ``paid`` quote atoms."""

    req_id: int
    owner: str
    sub: int
    asset: int
    liquidator: str
    liquidator_sub: int
    amount: int
    price: int
    paid: int
    block: int = 0
    log_index: int = 0


class ChainBadDebtSettled(msgspec.Struct, frozen=True, array_like=True, tag=16):
    """``BadDebtSettled`` (section 9.6): the target's negative quote was covered and set to 0."""

    req_id: int
    owner: str
    sub: int
    insurance_paid: int
    fee_pool_paid: int
    unbacked: int
    block: int = 0
    log_index: int = 0


class ChainDeleveraged(msgspec.Struct, frozen=True, array_like=True, tag=17):
    """``Deleveraged`` (section 9.7): ``|size_delta|`` of the target's position was closed against
    the counterparty at the bankruptcy ``price`` (no fee, no insurance share)."""

    req_id: int
    owner: str
    sub: int
    market: int
    counterparty: str
    counterparty_sub: int
    size_delta: int
    price: int
    block: int = 0
    log_index: int = 0


class ChainForcedWithdrawalExecuted(msgspec.Struct, frozen=True, array_like=True, tag=18):
    """The owner executed escape-hatch request ``request_id`` on-chain after the delay
    (``executeForcedWithdrawal``: ``Withdrawn`` with seq 0 + ``ForcedWithdrawalExecuted``);
    ``amount`` of ``asset`` left ``(owner, sub)``. A FORCED batch item's execution (seq != 0)
    reaches the engine through ``ChainBatchSettled`` instead."""

    req_id: int
    request_id: int
    owner: str
    sub: int
    asset: int
    amount: int
    block: int = 0
    log_index: int = 0


class ChainLiquidationParamsSet(msgspec.Struct, frozen=True, array_like=True, tag=19):
    """``LiquidationParamsSet`` (section 9.1): mirrored so the engine (and its API) quote the
    same penalty, buffer and critical ratio as the contract."""

    req_id: int
    penalty_ppm: int
    insurance_share_ppm: int
    buffer_ppm: int
    critical_ppm: int
    block: int = 0
    log_index: int = 0


class ChainFundingUpdated(msgspec.Struct, frozen=True, array_like=True, tag=20):
    """``FundingUpdated``: the contract applied a FUNDING item of ``market`` (``rate_ppm`` is the
    clamped rate) and the market's cumulative index is now ``cumulative_index``.

    The engine sequenced that item with an index delta computed at *its* oracle price, which
    can differ from the price the contract read when the batch landed; the event is how the
    confirmed index becomes the chain's exactly (docs/protocol.md section 3). The contract emits
    it before the ``BatchSettled`` of the same transaction, so the ledger holds the index until
    that batch settles (:meth:`matcher.ledger.Ledger.note_chain_funding`)."""

    req_id: int
    market: int
    rate_ppm: int
    cumulative_index: int
    block: int = 0
    log_index: int = 0


class SetHalt(msgspec.Struct, frozen=True, array_like=True, tag=21):
    """Operator: halt trading (``reason`` non-empty) or resume it (``reason`` empty). While
    halted the engine refuses new and replacement orders (``HALTED``); cancels, chain events,
    prices, funding, withdrawals and transfers go on. ``cancel_orders`` (with a halt) also
    cancels every resting order (reason ``HALT``), so that none trades at the prices of before
    the halt when trading resumes. Journals written before it decode with it false."""

    req_id: int
    reason: str
    cancel_orders: bool = False


Command = Union[
    PlaceOrder, CancelOrder, CancelAll, ModifyOrder, ExpireTick, ChainDeposit, ChainBatchSettled,
    ChainForcedWithdrawalRequested, AgentSet, RequestWithdrawal, RequestTransfer, PostFunding,
    SetOraclePrices, ChainLiquidated, ChainCollateralLiquidated, ChainBadDebtSettled,
    ChainDeleveraged, ChainForcedWithdrawalExecuted, ChainLiquidationParamsSet, ChainFundingUpdated,
    SetHalt,
]


# ------------------------------------------------------------------------------ outputs


# gc=False on the outputs every order command builds: they hold no container that could
# close a reference cycle, and an untracked struct skips the collector's bookkeeping at
# creation and release
class Ack(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="ack"):
    """Exactly one per input. ``seq`` is the engine's command sequence number of an accepted
    (journaled) command, 0 when rejected; ``order_id`` the exchange order id, if any."""

    req_id: int
    ok: bool
    code: Code
    message: str
    order_id: int
    seq: int


class OrderUpdate(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="order"):
    """An order's new state. ``filled`` is cumulative on the order's nonce, ``remaining`` its
    open size; ``reason`` is a :class:`matcher.orders.CancelReason` value when cancelled."""

    order_id: int
    owner: str
    sub: int
    market: int
    client_id: int | None
    status: OrderStatus
    price: int
    filled: int
    remaining: int
    reason: int


class FillReport(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="fill"):
    """A trade, with the sequence number of the FillItem that settles it."""

    seq: int
    market: int
    price: int
    size: int
    taker_order_id: int
    maker_order_id: int
    taker_owner: str
    taker_sub: int
    maker_owner: str
    maker_sub: int
    taker_is_buy: bool
    taker_fee: int
    maker_fee: int


class Bust(msgspec.Struct, frozen=True, array_like=True, tag="bust"):
    """A sequenced fill the contract rejected and the engine reversed; sent to both parties.
    ``reason`` is the on-chain :class:`crossbook.protocol_types.RejectReason` value."""

    seq: int
    reason: int
    taker: tuple[str, int]
    maker: tuple[str, int]


class ItemRejected(msgspec.Struct, frozen=True, array_like=True, tag="item_rejected"):
    """A sequenced non-fill item (withdrawal, transfer, funding, forced) the contract refused;
    its effect on the projected ledger was reversed."""

    seq: int
    reason: int
    kind: int
    account: tuple[str, int] | None


class Sequenced(msgspec.Struct, frozen=True, array_like=True, tag="seq"):
    """A state change the chain must apply, with its gap-free sequence number."""

    seq: int
    item: Item


class Liquidation(msgspec.Struct, frozen=True, array_like=True, tag="liquidation"):
    """A liquidation-path event the chain applied to ``target`` (sent to both sides' owners).

    ``kind`` is ``"liquidated"``, ``"collateral_liquidated"``, ``"bad_debt_settled"`` or
    ``"deleveraged"``; ``counterparty`` is the liquidator / ADL counterparty (None for bad debt).
    ``market`` or ``asset`` names what moved, ``size_delta`` (target's) / ``amount`` how much,
    ``price`` at what price; ``penalty`` and ``insurance_share`` as in the event (0 when the event
    has none), ``covered`` the bad debt paid by insurance + fee pool and ``unbacked`` the rest.
    ``cancelled`` lists the target's order ids the engine cancelled (reason LIQUIDATION)."""

    kind: str
    target: tuple[str, int]
    counterparty: tuple[str, int] | None
    market: int | None
    asset: int | None
    size_delta: int
    amount: int
    price: int
    penalty: int
    insurance_share: int
    covered: int
    unbacked: int
    cancelled: list[int]
    block: int
    log_index: int


Output = Union[OrderUpdate, FillReport, Bust, ItemRejected, Sequenced, Liquidation]


class Result(msgspec.Struct):
    """What one command produced: its ack, then the other outputs in order. ``journal`` is
    True when the command changed state (so it must be journaled before the ack is sent)."""

    ack: Ack
    outputs: list[Output]
    journal: bool


__all__ = [
    "Code", "OrderStatus", "PlaceOrder", "CancelOrder", "CancelAll", "ModifyOrder", "ExpireTick",
    "ChainDeposit", "ChainBatchSettled", "ChainForcedWithdrawalRequested", "AgentSet",
    "RequestWithdrawal", "RequestTransfer", "PostFunding", "SetOraclePrices", "Command", "Ack",
    "OrderUpdate", "FillReport", "Bust", "ItemRejected", "Sequenced", "Output", "Result",
    "ChainLiquidated", "ChainCollateralLiquidated", "ChainBadDebtSettled", "ChainDeleveraged",
    "ChainForcedWithdrawalExecuted", "ChainLiquidationParamsSet", "Liquidation",
    "ChainFundingUpdated", "SetHalt",
]
