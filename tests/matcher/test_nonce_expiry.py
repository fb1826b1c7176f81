"""Bounded replay protection: the engine forgets the nonce of an order (and the digest of a
withdrawal or transfer) once its expiry has passed on the engine's monotonic clock, and a
forgotten one is still refused (EXPIRED), also when a command's ``now`` steps back."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossbook.config import PRICE, USD
from crossbook.protocol_types import Withdrawal
from matcher.commands import (
    CancelOrder,
    Code,
    ExpireTick,
    ModifyOrder,
    PlaceOrder,
    RequestTransfer,
    RequestWithdrawal,
)
from matcher.engine import Engine, EngineConfig, EngineSnapshot
from matcher.orders import Tif
from engine_helpers import (
    A,
    B,
    ETH,
    ETH_PX,
    LOT,
    NOW,
    SIG,
    funded,
    order,
    place,
    random_commands,
    req,
)

BUCKET = 256  # seconds of expiry per forget bucket (engine._FORGET_SHIFT = 8)
BID = ETH_PX - 10 * PRICE  # rests without crossing anything


WORD = 32  # nonces per remembered word (engine._NONCE_SHIFT = 5)


def _nonces(eng: Engine, owner: str) -> set[int]:
    """The owner's nonces the engine remembers (the set bits of its words)."""
    return {k * WORD + i for k, w in eng.nonces.get(owner, {}).items() for i in range(WORD)
            if w >> i & 1}


def _cancel(eng: Engine, owner: str, oid: int, now: int = NOW) -> None:
    assert eng.apply(CancelOrder(req(), owner, oid, 0, ETH, None, now)).ack.ok


def test_nonces_are_forgotten_as_the_clock_passes_their_expiry() -> None:
    eng = funded()
    # one nonce per word: each is forgotten on its own expiry (test below: a word's nonces go
    # together)
    expiries = {WORD * n + 5: NOW + 100 + 300 * n for n in range(1, 21)}
    for n, exp in expiries.items():
        r = place(eng, A, True, BID, LOT, nonce=n, expiry=exp)
        assert r.ack.ok
        _cancel(eng, A, r.ack.order_id)
    assert _nonces(eng, A) == set(expiries)
    sizes = [len(_nonces(eng, A))]
    for t in range(NOW + 500, NOW + 7000, 700):
        before = eng.clock
        r = eng.apply(ExpireTick(req(), t))
        # a tick is journaled (and moves the clock) only when it changes something
        assert eng.clock == (t if r.journal else before)
        kept = _nonces(eng, A)
        # sound: nothing that could still be accepted is forgotten
        assert {n for n, e in expiries.items() if e >= t} <= kept
        # bounded: anything that expired a whole bucket ago is gone
        assert not {n for n, e in expiries.items() if e < t - BUCKET} & kept
        # the tick is journaled exactly when it forgot something (no order rests)
        assert r.journal == (len(kept) < sizes[-1])
        sizes.append(len(kept))
    assert sizes[0] == 20 and sizes[-1] == 0 and A not in eng.nonces
    assert sizes == sorted(sizes, reverse=True)


def test_replayed_order_after_expiry_is_refused_expired() -> None:
    eng = funded()
    o = order(A, True, BID, LOT, 7, expiry=NOW + 100)
    cmd = PlaceOrder(req(), o, SIG, A, int(Tif.GTC), None, 0, NOW)
    r = eng.apply(cmd)
    assert r.ack.ok
    _cancel(eng, A, r.ack.order_id)
    # before expiry the nonce is remembered: the same signed order (or another one with the
    # nonce) is refused as a replay
    assert eng.apply(cmd).ack.code == Code.REPLAYED_NONCE
    other = order(A, False, ETH_PX + 5 * PRICE, 2 * LOT, 7, expiry=NOW + 50)
    assert eng.apply(PlaceOrder(req(), other, SIG, A, int(Tif.GTC), None, 0, NOW)).ack.code \
        == Code.REPLAYED_NONCE
    # the clock passes the expiry: the nonce is forgotten ...
    assert eng.apply(ExpireTick(req(), NOW + 1000)).journal
    assert 7 not in _nonces(eng, A)
    # ... and the replay is refused as expired, at the new time and when a later command
    # carries an earlier ``now`` (the intake's clock stepped back)
    for now in (NOW + 1000, NOW, NOW + 100):
        again = PlaceOrder(req(), o, SIG, A, int(Tif.GTC), None, 0, now)
        assert eng.apply(again).ack.code == Code.EXPIRED
        assert eng.apply(PlaceOrder(req(), other, SIG, A, int(Tif.GTC), None, 0, now)).ack.code \
            == Code.EXPIRED
    # nor can it come back as the replacement of a live order
    live = place(eng, A, True, BID, LOT, nonce=8, expiry=NOW + 5000, now=NOW).ack.order_id
    m = eng.apply(ModifyOrder(req(), A, live, LOT, o, SIG, A, NOW))
    assert m.ack.code == Code.EXPIRED
    # a stepped-back command did not move the clock
    assert eng.clock == NOW + 1000


def test_stepped_back_now_does_not_revive_a_resting_expired_order() -> None:
    eng = funded()
    assert place(eng, B, False, ETH_PX, LOT, nonce=1, expiry=NOW + 100).ack.ok
    assert place(eng, A, True, BID, LOT, nonce=2, expiry=NOW + 9000, now=NOW + 500).ack.ok
    # B's order expired on the engine clock (NOW + 500): a taker arriving with an older
    # ``now`` must not trade against it
    r = place(eng, A, True, ETH_PX, LOT, nonce=3, expiry=NOW + 9000, now=NOW, tif=Tif.IOC)
    assert r.ack.ok and eng.ledger.next_seq == 1


def test_same_nonce_replacement_keeps_the_nonce_until_its_later_expiry() -> None:
    eng = funded()
    oid = place(eng, A, True, BID, 2 * LOT, nonce=5, expiry=NOW + 100).ack.order_id
    later = order(A, True, BID - PRICE, 2 * LOT, 5, expiry=NOW + 3000)
    r = eng.apply(ModifyOrder(req(), A, oid, 2 * LOT, later, SIG, A, NOW))
    assert r.ack.ok
    _cancel(eng, A, r.ack.order_id)
    eng.apply(ExpireTick(req(), NOW + 1000))  # past the first order, not the replacement
    assert 5 in _nonces(eng, A)
    assert eng.apply(PlaceOrder(req(), later, SIG, A, int(Tif.GTC), None, 0, NOW + 1000)).ack \
        .code == Code.REPLAYED_NONCE
    assert eng.apply(ExpireTick(req(), NOW + 3000 + BUCKET + 1)).journal
    assert 5 not in _nonces(eng, A)
    assert eng.apply(PlaceOrder(req(), later, SIG, A, int(Tif.GTC), None, 0, NOW)).ack.code \
        == Code.EXPIRED


def test_withdrawal_and_transfer_digests_are_forgotten_after_expiry() -> None:
    from crossbook.protocol_types import Transfer

    eng = funded(usd=10_000, owners=(A,))
    w = Withdrawal(A, 0, 0, 10 * USD, 1, NOW + 60)
    t = Transfer(A, 0, 1, 0, 10 * USD, 2, NOW + 60)
    wd = RequestWithdrawal(req(), w, SIG, b"w" * 32, NOW)
    td = RequestTransfer(req(), t, SIG, b"t" * 32, NOW)
    assert eng.apply(wd).ack.ok and eng.apply(td).ack.ok
    assert eng.apply(wd).ack.code == Code.REPLAYED
    assert eng.apply(td).ack.code == Code.REPLAYED
    assert eng.apply(ExpireTick(req(), NOW + 1000)).journal
    assert eng.digests == {}
    for now in (NOW, NOW + 1000):
        assert eng.apply(RequestWithdrawal(req(), w, SIG, b"w" * 32, now)).ack.code \
            == Code.EXPIRED
        assert eng.apply(RequestTransfer(req(), t, SIG, b"t" * 32, now)).ack.code \
            == Code.EXPIRED


_snap_json = msgspec.json.Encoder()
_snap_dec = msgspec.json.Decoder(EngineSnapshot)


def _through_json(eng: Engine) -> Engine:
    """Snapshot, encode as the journal does (JSON), decode, restore."""
    return Engine.restore(_snap_dec.decode(_snap_json.encode(eng.snapshot())))


def test_snapshot_restore_midway_keeps_pending_forgets() -> None:
    cmds = random_commands(seed=61, n=1500)
    whole = Engine()
    accepted = sum(1 for c in cmds if whole.apply(c).ack.ok and isinstance(c, PlaceOrder))
    # the stream moves the clock across many buckets, so forgets happened and some are pending
    assert whole.clock > NOW + 1000
    assert whole._nonce_forgets.buckets
    assert sum(len(d) for d in whole.nonces.values()) < accepted - 100
    for cut in (200, 700, 1100):
        eng = Engine()
        for c in cmds[:cut]:
            eng.apply(c)
        eng = _through_json(eng)
        for c in cmds[cut:]:
            eng.apply(c)
        assert eng.nonces == whole.nonces
        assert eng.state_hash() == whole.state_hash()


def test_snapshot_without_forget_buckets_still_restores() -> None:
    """A snapshot written before the buckets existed (no clock, nonces and digests as plain
    lists) decodes; its keys have no known expiry and stay remembered."""
    eng = funded(owners=(A,))
    oid = place(eng, A, True, BID, LOT, nonce=9, expiry=NOW + 100).ack.order_id
    _cancel(eng, A, oid)
    fields = list(msgspec.json.decode(_snap_json.encode(eng.snapshot())))
    # clock, nonce_buckets, digest_buckets, agent_orders, forced_waiting, nonce_words,
    # nonce_word_buckets, halt_reason
    old = fields[:-8]
    old[5] = [[A, 9]]  # nonces as the old snapshot listed them
    clone = Engine.restore(_snap_dec.decode(msgspec.json.encode(old)))
    assert clone.clock == 0 and 9 in _nonces(clone, A)
    clone.apply(ExpireTick(req(), NOW + 100_000))
    assert 9 in _nonces(clone, A)  # unknown expiry: never forgotten
    again = order(A, True, BID, LOT, 9, expiry=NOW + 200_000)
    assert clone.apply(PlaceOrder(req(), again, SIG, A, int(Tif.GTC), None, 0,
                                  NOW + 100_000)).ack.code == Code.REPLAYED_NONCE
    # and it survives the next snapshot in the old field
    assert 9 in _nonces(_through_json(clone), A)


# a pool of signed orders, one per nonce (an owner never signs two orders with one nonce
# here): the forgetful engine must answer every command as an engine that never forgets
_EXPIRY = st.integers(1, 3000)
_OPS = st.lists(
    st.tuples(st.sampled_from(["place", "cancel", "tick"]), st.integers(0, 11),
              st.integers(-400, 900)),
    min_size=1, max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expiries=st.lists(_EXPIRY, min_size=12, max_size=12), ops=_OPS)
def test_forgetting_never_changes_an_answer(expiries: list[int], ops: list[tuple[str, int, int]]
                                           ) -> None:
    pool = [order(A, True, BID - (i % 3) * PRICE, LOT, 100 + i, expiry=NOW + e)
            for i, e in enumerate(expiries)]
    eng = funded(owners=(A,))
    ref = funded(owners=(A,))  # given back every nonce it accepted after each command
    never = (1 << 62) << WORD  # a word in a bucket the engine's forgets never hold
    accepted: set[int] = set()
    t = NOW
    for op, i, dt in ops:
        t = max(NOW, t + dt)  # ``now`` wanders, also backwards
        if op == "place":
            cmd: PlaceOrder | CancelOrder | ExpireTick = PlaceOrder(
                req(), pool[i], SIG, A, int(Tif.GTC), None, 0, t)
        elif op == "cancel":
            oid = min(eng.orders, default=0)
            cmd = CancelOrder(req(), A, oid, 0, ETH, None, t)
        else:
            cmd = ExpireTick(req(), t)
        got, want = eng.apply(cmd), ref.apply(cmd)
        if op == "place" and want.ack.ok:
            accepted.add(pool[i].nonce)
        for n in accepted:
            # the bit back in its word; a word the reference forgot comes back in a bucket its
            # forgets never hold (a live word keeps its bucket: the tick's journal flag, which
            # says whether something was forgotten, stays comparable)
            d = ref.nonces.setdefault(A, {})
            d[n // WORD] = d.get(n // WORD, never) | 1 << (n % WORD)
        assert (got.ack.ok, got.ack.code, got.ack.order_id, got.journal) \
            == (want.ack.ok, want.ack.code, want.ack.order_id, want.journal)
        assert eng.clock == ref.clock
        # what the forgetful engine still holds is what could still be accepted, up to one
        # bucket of expiry, word by word (the pool's nonces 100-111 share the word 96-127)
        kept = _nonces(eng, A)
        assert kept <= accepted
        for n in accepted - kept:
            assert pool[n - 100].expiry < eng.clock
        if kept:
            assert max(pool[n - 100].expiry for n in kept) >= eng.clock - BUCKET


def test_sequential_nonces_share_words_forgotten_with_their_latest_expiry() -> None:
    """A market maker's sequential nonces cost one record per 32 (they cost one each, ~108
    bytes); a word goes when its latest order has expired, and until then each of its nonces
    is refused as a replay, also one whose own order expired already."""
    eng = funded(owners=(A,))
    n_orders = 3_000
    for n in range(n_orders):
        # the last nonce of every word expires a bucket later than the rest
        exp = NOW + 1_000 + (BUCKET if n % WORD == WORD - 1 else 0)
        r = place(eng, A, True, BID, LOT, nonce=n, expiry=exp)
        assert r.ack.ok
        _cancel(eng, A, r.ack.order_id)
    assert len(eng.nonces[A]) == -(-n_orders // WORD) == 94
    assert _nonces(eng, A) == set(range(n_orders))
    # past every expiry but the words' last nonces (and the partial last word's)
    t = NOW + 1_000 + BUCKET // 2 + 1
    eng.apply(ExpireTick(req(), t))
    assert len(eng.nonces[A]) >= n_orders // WORD
    early = order(A, True, BID, LOT, 0, expiry=NOW + 100_000)  # nonce 0: its order expired
    assert eng.apply(PlaceOrder(req(), early, SIG, A, int(Tif.GTC), None, 0, t)).ack.code \
        == Code.REPLAYED_NONCE
    assert eng.apply(ExpireTick(req(), NOW + 1_000 + 3 * BUCKET)).journal
    assert A not in eng.nonces
    # forgotten with its word: a new order with the nonce is accepted (the old one expired)
    assert eng.apply(PlaceOrder(req(), early, SIG, A, int(Tif.GTC), None, 0,
                                NOW + 1_000 + 3 * BUCKET)).ack.ok


def test_snapshot_with_per_nonce_buckets_restores_into_words() -> None:
    """A snapshot written before the words (nonces one by one in ``nonce_buckets``, with
    their expiry buckets, and ``nonces`` of unknown expiry) restores into words that forget
    at the latest of their nonces' buckets."""
    eng = funded(owners=(A,))
    fields = list(msgspec.json.decode(_snap_json.encode(eng.snapshot())))
    old = fields[:-3]  # without nonce_words, nonce_word_buckets, halt_reason
    b1, b2 = (NOW + 500) // BUCKET, (NOW + 5_000) // BUCKET
    old[5] = [[A, 200]]  # unknown expiry: never forgotten
    old[14] = [[b1, [A, A, A], [3, 4, 70]], [b2, [A], [5]]]  # 3, 4, 5 share a word; 70 not
    clone = Engine.restore(_snap_dec.decode(msgspec.json.encode(old)))
    assert _nonces(clone, A) == {3, 4, 5, 70, 200}
    clone.apply(ExpireTick(req(), (b1 + 1) * BUCKET + 1))
    assert _nonces(clone, A) == {3, 4, 5, 200}  # 70's word went; 3 and 4 wait for 5
    clone.apply(ExpireTick(req(), (b2 + 1) * BUCKET + 1))
    assert _nonces(clone, A) == {200}
    assert _nonces(_through_json(clone), A) == {200}
    assert _through_json(clone).state_hash() == clone.state_hash()


def test_an_owner_at_the_word_bound_gets_too_many_nonces() -> None:
    """A bounded number of remembered words per owner: nonces in remembered words still work,
    a nonce that needs a new word is refused (place and cancel-replace alike, nothing changed),
    other owners are not affected, and the room comes back as words are forgotten."""
    eng = funded(EngineConfig(max_nonce_words_per_owner=3))
    exp = NOW + 100
    for n in (0, WORD, 2 * WORD):  # three words
        assert place(eng, A, True, BID, LOT, n, expiry=exp).ack.ok
    assert place(eng, A, True, BID, LOT, 1, expiry=exp).ack.ok  # a word already remembered
    h = eng.state_hash()
    r = place(eng, A, True, BID, LOT, 3 * WORD, expiry=exp)
    assert r.ack.code == Code.TOO_MANY_NONCES and "3 words" in r.ack.message
    live = next(iter(eng.orders))
    m = eng.apply(ModifyOrder(req(), A, live, LOT, order(A, True, BID - PRICE, LOT, 4 * WORD),
                              SIG, A, NOW))
    assert m.ack.code == Code.TOO_MANY_NONCES and live in eng.orders
    assert eng.state_hash() == h
    # a replayed nonce is still REPLAYED_NONCE at the bound
    assert place(eng, A, True, BID, LOT, WORD, expiry=exp).ack.code == Code.REPLAYED_NONCE
    assert place(eng, B, True, BID, LOT, 3 * WORD).ack.ok  # another owner
    # the words are forgotten once their orders' expiry passes: room again
    for oid in [o for o, rec in eng.orders.items() if rec.owner == A]:
        _cancel(eng, A, oid)
    later = exp + 2 * BUCKET
    eng.apply(ExpireTick(req(), later))
    assert len(eng.nonces.get(A, {})) == 0
    assert place(eng, A, True, BID, LOT, 3 * WORD, now=later, expiry=later + 100).ack.ok
