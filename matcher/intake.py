"""Intake: validation and signature verification in front of the engine.

Raw requests (from the websocket layer) are checked for types and Solidity ranges
(``crossbook.protocol_types.validate``), market, tick/lot grid, expiry and fee cap, then the
EIP-712 signer is recovered once (``crossbook.eip712``, ~50 us, the dominant cost) and must be
the owner or an agent the owner approved on-chain (from ``AgentSet`` events the engine holds).
The result is an engine command, or a rejected :class:`Ack` — intake never touches engine state,
so its rejections need no journaling.

Cheap checks run before the recovery, so garbage costs microseconds, not a curve operation.
"""

from __future__ import annotations

from typing import Final

from crossbook.eip712 import (
    Domain,
    InvalidSignature,
    order_digest,
    recover_address_bytes,
    same_address,
    transfer_digest,
    withdrawal_digest,
)
from crossbook.protocol_types import (
    Order,
    ProtocolRangeError,
    Transfer,
    Withdrawal,
    validate,
)
from matcher.commands import (
    Ack,
    Code,
    ModifyOrder,
    PlaceOrder,
    RequestTransfer,
    RequestWithdrawal,
)
from matcher.engine import Engine
from matcher.orders import Stp, Tif

_TIFS = frozenset(int(t) for t in Tif if t != Tif.MARKET)
_STPS = frozenset(int(s) for s in Stp)
_U32: Final = 2**32 - 1
_U64: Final = 2**64 - 1
_OWNER_CACHE_MAX: Final = 65_536


def reject(req_id: int, code: Code, message: str) -> Ack:
    """A refused request's ack (no state changed, nothing sequenced)."""
    return Ack(req_id, False, code, message, 0, 0)


class Intake:
    """Turns raw signed requests into engine commands. Reads (never writes) the engine's agent
    approvals and market grid."""

    def __init__(self, engine: Engine, domain: Domain) -> None:
        self.engine = engine
        self.domain = domain
        self._markets = engine.params.markets
        self._fee_any = max(engine.taker_fee, engine.maker_fee)
        self._fee_post = engine.maker_fee
        self._margin = engine.config.expiry_margin_s
        # owner strings validate() accepted: the address check is the costly part of it
        self._good_owners: set[str] = set()

    def _check_order(self, req_id: int, o: Order, sig: bytes, tif: int,
                     now: int) -> tuple[str, None] | tuple[None, Ack]:
        """Validate and recover the signer of one signed order: (signer, None) or (None, ack)."""
        sub, market, price, size = o.subaccount, o.market, o.price, o.size
        nonce, expiry, fee = o.nonce, o.expiry, o.max_fee_ppm
        # the common case in one expression; anything unusual goes through validate(), the
        # single owner of the range rules and their messages
        if not (type(sub) is int and type(market) is int and type(price) is int
                and type(size) is int and type(nonce) is int and type(expiry) is int
                and type(fee) is int and type(o.is_buy) is bool
                and type(o.reduce_only) is bool and 0 <= sub <= _U32 and 0 <= market <= _U32
                and 0 <= price <= _U64 and 0 <= size <= _U64 and 0 <= nonce <= _U64
                and 0 <= expiry <= _U64 and 0 <= fee <= _U32
                and o.owner in self._good_owners):
            try:
                validate(o)
            except ProtocolRangeError as exc:
                return None, reject(req_id, Code.BAD_REQUEST, str(exc))
            if len(self._good_owners) >= _OWNER_CACHE_MAX:
                self._good_owners.clear()
            self._good_owners.add(o.owner)
        if type(sig) is not bytes or len(sig) != 65:
            return None, reject(req_id, Code.BAD_SIGNATURE, "signature must be 65 bytes")
        mc = self._markets.get(market)
        if mc is None:
            return None, reject(req_id, Code.UNKNOWN_MARKET, f"unknown market {market}")
        if size == 0:
            return None, reject(req_id, Code.BAD_SIZE, "size must be positive")
        if price == 0:
            return None, reject(req_id, Code.BAD_PRICE, "price must be positive")
        if price % mc.tick_size:
            return None, reject(req_id, Code.OFF_TICK, f"price not on tick {mc.tick_size}")
        if size % mc.lot_size:
            return None, reject(req_id, Code.OFF_LOT, f"size not on lot {mc.lot_size}")
        if expiry - self._margin < max(now, 1):
            return None, reject(req_id, Code.EXPIRED, "order expired")
        if fee < (self._fee_post if tif == Tif.POST_ONLY else self._fee_any):
            return None, reject(req_id, Code.FEE_TOO_HIGH, "exchange fee above max_fee_ppm")
        try:
            signer = recover_address_bytes(order_digest(self.domain, o), sig)
        except (InvalidSignature, ProtocolRangeError) as exc:
            return None, reject(req_id, Code.BAD_SIGNATURE, str(exc))
        signer_hex = "0x" + signer.hex()
        owner = o.owner.lower()
        if signer_hex != owner and not self.engine.is_agent(owner, signer_hex):
            return None, reject(req_id, Code.BAD_SIGNATURE,
                                 "signer is neither the owner nor an approved agent")
        return signer_hex, None

    def place(self, req_id: int, order: Order, signature: bytes, *, tif: int = Tif.GTC,
              client_id: int | None = None, stp: int = Stp.EXPIRE_TAKER,
              now: int) -> PlaceOrder | Ack:
        """A verified :class:`PlaceOrder`, or the rejection ack."""
        if type(tif) is not int and not isinstance(tif, Tif) or int(tif) not in _TIFS:
            return reject(req_id, Code.BAD_REQUEST, "unknown tif")
        if int(stp) not in _STPS:
            return reject(req_id, Code.BAD_REQUEST, "unknown stp")
        if client_id is not None and (type(client_id) is not int
                                      or not 0 <= client_id < 2**64):
            return reject(req_id, Code.BAD_REQUEST, "client id must be a uint64")
        signer, err = self._check_order(req_id, order, signature, int(tif), now)
        if err is not None:
            return err
        assert signer is not None
        return PlaceOrder(req_id, order, signature, signer, int(tif), client_id, int(stp), now)

    def replace(self, req_id: int, owner: str, order_id: int, new_order: Order,
                signature: bytes, *, now: int) -> ModifyOrder | Ack:
        """A verified cancel-replace of ``order_id`` into ``new_order``."""
        # the fee bound depends on the replaced order's tif (a POST_ONLY order pays the maker
        # fee), which is the engine's to read when the command runs: requests queued before it
        # (a batch's earlier items) may create or end that order. Intake checks the lower bound,
        # the engine the exact one, so the outcome never depends on when the frame arrived.
        signer, err = self._check_order(req_id, new_order, signature, int(Tif.POST_ONLY), now)
        if err is not None:
            return err
        return ModifyOrder(req_id, owner, order_id, new_order.size, new_order, signature, signer,
                           now)

    def _owner_digest(self, req_id: int, msg: Withdrawal | Transfer, signature: bytes,
                      what: str) -> bytes | Ack:
        """The EIP-712 digest of a withdrawal or transfer signed by its owner itself (agents
        cannot move funds), or the rejection."""
        try:
            validate(msg)
            digest = (withdrawal_digest(self.domain, msg) if isinstance(msg, Withdrawal)
                      else transfer_digest(self.domain, msg))
            signer = recover_address_bytes(digest, signature)
        except ProtocolRangeError as exc:
            return reject(req_id, Code.BAD_REQUEST, str(exc))
        except InvalidSignature as exc:
            return reject(req_id, Code.BAD_SIGNATURE, str(exc))
        if not same_address(signer, msg.owner):
            return reject(req_id, Code.BAD_SIGNATURE, f"{what} must be signed by the owner")
        return digest

    def withdrawal(self, req_id: int, w: Withdrawal, signature: bytes, *,
                   now: int) -> RequestWithdrawal | Ack:
        """A verified :class:`RequestWithdrawal` (must be signed by the owner itself)."""
        digest = self._owner_digest(req_id, w, signature, "withdrawals")
        if isinstance(digest, Ack):
            return digest
        return RequestWithdrawal(req_id, w, signature, digest, now)

    def transfer(self, req_id: int, t: Transfer, signature: bytes, *,
                 now: int) -> RequestTransfer | Ack:
        """A verified :class:`RequestTransfer` (must be signed by the owner itself)."""
        digest = self._owner_digest(req_id, t, signature, "transfers")
        if isinstance(digest, Ack):
            return digest
        return RequestTransfer(req_id, t, signature, digest, now)


__all__ = ["Intake"]
