"""Revoking an agent cancels the live orders it signed (reason AGENT_REVOKED): the contract
checks the approval when it settles a fill, so those orders could only be filled to be busted
(API audit). Orders the owner signed, or another agent, stay; the same holds after a cancel-replace
by the agent, after a snapshot restore and on journal replay."""
from __future__ import annotations

import msgspec
from engine_helpers import ETH_PX, LOT, NOW, SIG, TICK, A, C, D, funded, order, req
from matcher.commands import AgentSet, ModifyOrder, OrderStatus, OrderUpdate, PlaceOrder
from matcher.engine import Engine
from matcher.journal import encode_record, iter_records
from matcher.orders import CancelReason, Tif
from matcher.structs import EngineSnapshot

AGENT, OTHER = C, D  # C and D sign for A (C and D also own funded accounts of their own)


def _place(eng: Engine, signer: str, nonce: int, px: int, log: list[bytes], owner: str = A) -> int:
    cmd = PlaceOrder(req(), order(owner, True, px, 10 * LOT, nonce), SIG, signer, int(Tif.GTC), None, 0, NOW)
    res = eng.apply(cmd)
    assert res.ack.ok, res.ack
    log.append(encode_record(res.ack.seq, cmd))
    assert res.ack.order_id is not None
    return res.ack.order_id


def _apply(eng: Engine, cmd: object, log: list[bytes]) -> object:
    res = eng.apply(cmd)  # type: ignore[arg-type]
    assert res.ack.ok, res.ack
    log.append(encode_record(res.ack.seq, cmd))  # type: ignore[arg-type]
    return res


def test_a_revocation_cancels_exactly_the_agents_orders() -> None:
    eng = funded()
    log: list[bytes] = []
    _apply(eng, AgentSet(req(), A, AGENT, True), log)
    _apply(eng, AgentSet(req(), A, OTHER, True), log)
    by_agent = _place(eng, AGENT.upper().replace("0X", "0x"), 1, ETH_PX - 10 * TICK, log)  # any spelling
    by_owner = _place(eng, A, 2, ETH_PX - 11 * TICK, log)
    by_other = _place(eng, OTHER, 3, ETH_PX - 12 * TICK, log)
    moved = _place(eng, AGENT, 4, ETH_PX - 13 * TICK, log)
    # the agent moves its order: the replacement is the agent's too
    mod = ModifyOrder(req(), A, moved, 10 * LOT, order(A, True, ETH_PX - 14 * TICK, 10 * LOT, 5), SIG, AGENT, NOW)
    replaced = _apply(eng, mod, log).ack.order_id  # type: ignore[attr-defined]
    # C's own order (C is also someone's agent): not A's, stays
    c_own = _place(eng, C, 1, ETH_PX - 15 * TICK, log, owner=C)
    before = eng.state_hash()

    snap = msgspec.json.decode(msgspec.json.encode(eng.snapshot()), type=EngineSnapshot)
    restored = Engine.restore(snap)
    assert restored.state_hash() == before

    res = _apply(eng, AgentSet(req(), A, AGENT, False), log)
    ups = [o for o in res.outputs if isinstance(o, OrderUpdate)]  # type: ignore[attr-defined]
    assert sorted(u.order_id for u in ups) == sorted([by_agent, replaced])
    assert all(u.status == OrderStatus.CANCELLED and u.reason == CancelReason.AGENT_REVOKED for u in ups)
    assert set(eng.orders) == {by_owner, by_other, c_own}

    # the restored engine and a replay of the journal do the same
    r2 = restored.apply(AgentSet(req(), A, AGENT, False))
    assert sorted(o.order_id for o in r2.outputs if isinstance(o, OrderUpdate)) == sorted([by_agent, replaced])
    assert restored.state_hash() == eng.state_hash()
    fresh = funded()
    for rec, _ in iter_records(b"".join(log)):
        assert fresh.replay(rec.cmd)
    assert set(fresh.orders) == set(eng.orders)

    # approving it again does not bring anything back; a later revocation of OTHER ends its order
    _apply(eng, AgentSet(req(), A, AGENT, True), log)
    res = _apply(eng, AgentSet(req(), A, OTHER, False), log)
    assert [o.order_id for o in res.outputs if isinstance(o, OrderUpdate)] == [by_other]  # type: ignore[attr-defined]
    assert set(eng.orders) == {by_owner, c_own}
