"""Packed batch format (docs/protocol.md section 5): golden vector, round trip, malformed."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address as reference_checksum
from hypothesis import given
from hypothesis import strategies as st

from crossbook.batch_codec import (
    FILL_BATCH_SIZE,
    FILL_REF_SIZE,
    FILL_SIZE,
    FORCED_SIZE,
    FUNDING_SIZE,
    HEADER_SIZE,
    SIGNED_ORDER_SIZE,
    TABLE_HEADER_SIZE,
    TRANSFER_SIZE,
    WITHDRAW_SIZE,
    MalformedBatch,
    batch_size,
    decode_batch,
    encode_batch,
    encode_item,
    encoded_item_size,
)
from crossbook.protocol_types import (
    FillItem,
    ForcedItem,
    FundingItem,
    Item,
    ItemKind,
    Order,
    ProtocolRangeError,
    RejectReason,
    Transfer,
    TransferItem,
    Withdrawal,
    WithdrawItem,
    validate,
)

TAKER = Order("0x" + "11" * 20, 2, 3, True, False, 5_000_000_000_000, 10**8, 7,
              0x0102030405060708, 1_000)
MAKER = Order("0x" + "22" * 20, 4, 3, False, True, 4_990_000_000_000, 2 * 10**7, 9, 2**64 - 1,
              0)
TAKER_SIG = b"\xaa" * 32 + b"\xbb" * 32 + b"\x1b"
MAKER_SIG = b"\xcc" * 32 + b"\xdd" * 32 + b"\x1c"
FILL = FillItem(TAKER, TAKER_SIG, MAKER, MAKER_SIG, 10**7, 4_995_000_000_000, 500, 100)

# hand-written from the grammar; comments give offsets within the item (kind byte at 0)
GOLDEN_FILL = bytes.fromhex(
    "01"  # 0 kind FILL
    + "11" * 20  # 1..21 taker owner
    + "00000002"  # 21..25 subaccount 2
    + "00000003"  # 25..29 market 3
    + "01"  # 29 flags: isBuy
    + "0000048c27395000"  # 30..38 price 5e12 (50 000.00000000)
    + "0000000005f5e100"  # 38..46 size 1e8
    + "0000000000000007"  # 46..54 nonce 7
    + "0102030405060708"  # 54..62 expiry
    + "000003e8"  # 62..66 maxFeePpm 1000
    + "aa" * 32 + "bb" * 32 + "1b"  # 66..131 taker sig r s v
    + "22" * 20  # 131..151 maker owner
    + "00000004"  # 151..155 subaccount 4
    + "00000003"  # 155..159 market 3
    + "02"  # 159 flags: reduceOnly, sell
    + "00000489d32d6c00"  # 160..168 price 4.99e12
    + "0000000001312d00"  # 168..176 size 2e7
    + "0000000000000009"  # 176..184 nonce 9
    + "ffffffffffffffff"  # 184..192 expiry uint64 max
    + "00000000"  # 192..196 maxFeePpm 0
    + "cc" * 32 + "dd" * 32 + "1c"  # 196..261 maker sig
    + "0000000000989680"  # 261..269 fillSize 1e7
    + "0000048afd335e00"  # 269..277 fillPrice 4.995e12
    + "000001f4"  # 277..281 takerFeePpm 500
    + "00000064"  # 281..285 makerFeePpm 100
)


def test_golden_fill_item() -> None:
    assert len(GOLDEN_FILL) == FILL_SIZE == 285
    assert encode_item(FILL) == GOLDEN_FILL
    batch = encode_batch(42, [FILL])
    # header, order table of two entries (the inline orders + signatures), FILL_REF 0 <- 1
    assert batch == (bytes.fromhex("000000000000002a" "0001" "00" "0002") + GOLDEN_FILL[1:261]
                     + bytes.fromhex("06" "0000" "0001") + GOLDEN_FILL[261:])
    assert len(batch) == batch_size([FILL]) == HEADER_SIZE + FILL_BATCH_SIZE
    # the inline kind-1 form (the matcher's stream) decodes to the same item
    assert decode_batch(batch[:HEADER_SIZE] + GOLDEN_FILL) == decode_batch(batch)
    first_seq, items = decode_batch(batch)
    assert first_seq == 42
    (decoded,) = items
    assert isinstance(decoded, FillItem)
    assert decoded.taker.owner.lower() == TAKER.owner and decoded.maker.owner.lower() == MAKER.owner
    assert decoded.taker.is_buy and not decoded.taker.reduce_only
    assert not decoded.maker.is_buy and decoded.maker.reduce_only
    assert (decoded.size, decoded.price, decoded.taker_fee_ppm, decoded.maker_fee_ppm) == (
        10**7, 4_995_000_000_000, 500, 100)
    assert decoded.taker_sig == TAKER_SIG and decoded.maker_sig == MAKER_SIG


def test_other_kinds_by_hand() -> None:
    owner = "0x" + "33" * 20
    w = WithdrawItem(Withdrawal(owner, 5, 1, 2**64 + 3, 8, 9), TAKER_SIG)
    assert encode_item(w) == bytes.fromhex(
        "02" + "33" * 20 + "00000005" + "0001"
        + "0000000000000001" + "0000000000000003"  # uint128 2**64 + 3
        + "0000000000000008" + "0000000000000009"
    ) + TAKER_SIG
    t = TransferItem(Transfer(owner, 1, 2, 0, 77, 8, 9), MAKER_SIG)
    assert encode_item(t) == bytes.fromhex(
        "03" + "33" * 20 + "00000001" + "00000002" + "0000" + "00" * 15 + "4d"
        + "0000000000000008" + "0000000000000009"
    ) + MAKER_SIG
    assert encode_item(FundingItem(6, -2)) == bytes.fromhex("04" "00000006" "fffffffe")
    assert encode_item(ForcedItem(2**64 - 1)) == bytes.fromhex("05" + "ff" * 8)
    sizes = [encoded_item_size(i) for i in (w, t, FundingItem(0, 0), ForcedItem(0))]
    assert sizes == [WITHDRAW_SIZE, TRANSFER_SIZE, FUNDING_SIZE, FORCED_SIZE] == [124, 128, 9, 9]


u16, u32 = st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1)
u64, u128 = st.integers(0, 2**64 - 1), st.integers(0, 2**128 - 1)
addresses = st.binary(min_size=20, max_size=20).map(reference_checksum)
sigs = st.binary(min_size=65, max_size=65)
orders = st.builds(Order, addresses, u32, u32, st.booleans(), st.booleans(), u64, u64, u64, u64,
                   u32)
items: st.SearchStrategy[Item] = st.one_of(
    st.builds(FillItem, orders, sigs, orders, sigs, u64, u64, u32, u32),
    st.builds(WithdrawItem, st.builds(Withdrawal, addresses, u32, u16, u128, u64, u64), sigs),
    st.builds(TransferItem, st.builds(Transfer, addresses, u32, u32, u16, u128, u64, u64), sigs),
    st.builds(FundingItem, u32, st.integers(-(2**31), 2**31 - 1)),
    st.builds(ForcedItem, u64),
)


@given(u64, st.lists(items, max_size=12))
def test_round_trip(first_seq: int, batch_items: list[Item]) -> None:
    for item in batch_items:
        validate(item)
    data = encode_batch(first_seq, batch_items)
    assert len(data) == batch_size(batch_items)
    assert len(data) <= HEADER_SIZE + sum(encoded_item_size(i) for i in batch_items)
    assert decode_batch(data) == (first_seq, batch_items)


def test_order_table_holds_each_signed_order_once() -> None:
    other = Order(TAKER.owner, 0, 3, True, False, 1, 1, 99, 1, 0)
    second = FillItem(other, TAKER_SIG, MAKER, MAKER_SIG, 1, 1, 0, 0)  # the same maker order again
    items: list[Item] = [FILL, FundingItem(0, 1), second, FILL]
    data = encode_batch(3, items)
    assert data[HEADER_SIZE:HEADER_SIZE + TABLE_HEADER_SIZE] == bytes.fromhex("00" "0003")
    assert len(data) == batch_size(items) == (HEADER_SIZE + TABLE_HEADER_SIZE + 3 * SIGNED_ORDER_SIZE
                                              + 3 * FILL_REF_SIZE + FUNDING_SIZE)
    refs = HEADER_SIZE + TABLE_HEADER_SIZE + 3 * SIGNED_ORDER_SIZE
    assert data[refs:refs + 5] == bytes.fromhex("06" "0000" "0001")
    second_ref = refs + FILL_REF_SIZE + FUNDING_SIZE
    assert data[second_ref:second_ref + 5] == bytes.fromhex("06" "0002" "0001")
    assert decode_batch(data) == (3, items)
    # a batch without fills has no table
    assert encode_batch(3, [FundingItem(0, 1)]) == bytes.fromhex("0000000000000003" "0001") + encode_item(
        FundingItem(0, 1))


@given(st.lists(items, min_size=1, max_size=4), st.data())
def test_truncation_and_trailing_bytes_are_malformed(batch_items: list[Item],
                                                     data: st.DataObject) -> None:
    encoded = encode_batch(1, batch_items)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(MalformedBatch):
        decode_batch(encoded[:cut])
    with pytest.raises(MalformedBatch) as info:
        decode_batch(encoded + b"\x00")
    assert info.value.offset == len(encoded)


def test_malformed_offsets() -> None:
    with pytest.raises(MalformedBatch) as info:
        decode_batch(b"\x00" * 9)
    assert info.value.offset == 0
    # unknown kind: offset of the kind byte
    for kind in (0, 6, 255):
        raw = bytearray(encode_batch(0, [ForcedItem(1), ForcedItem(2)]))
        raw[HEADER_SIZE + FORCED_SIZE] = kind
        with pytest.raises(MalformedBatch) as info:
            decode_batch(bytes(raw))
        assert info.value.offset == HEADER_SIZE + FORCED_SIZE
    # truncated second item: offset where it starts
    two = encode_batch(0, [FundingItem(1, 1), FILL])
    second = HEADER_SIZE + TABLE_HEADER_SIZE + 2 * SIGNED_ORDER_SIZE + FUNDING_SIZE
    with pytest.raises(MalformedBatch) as info:
        decode_batch(two[:-1])
    assert info.value.offset == second
    # count says 2, only one present
    with pytest.raises(MalformedBatch) as info:
        decode_batch(two[:second])
    assert info.value.offset == second
    assert decode_batch(encode_batch(5, [])) == (5, [])
    # order table: truncated at offset 10; a FILL_REF index outside it at the kind byte
    one = encode_batch(0, [FILL])
    for cut in (HEADER_SIZE + 1, HEADER_SIZE + TABLE_HEADER_SIZE + SIGNED_ORDER_SIZE):
        with pytest.raises(MalformedBatch) as info:
            decode_batch(one[:cut])
        assert info.value.offset == HEADER_SIZE
    ref = HEADER_SIZE + TABLE_HEADER_SIZE + 2 * SIGNED_ORDER_SIZE
    bad = bytearray(one)
    bad[ref + 3:ref + 5] = (2).to_bytes(2, "big")
    with pytest.raises(MalformedBatch) as info:
        decode_batch(bytes(bad))
    assert info.value.offset == ref


def test_extra_flag_bits_ignored() -> None:
    # the contract does not revert on flags > 3 (it rejects that fill as INVALID_ITEM), so the
    # decoder must not call the batch malformed either; it keeps bits 0 and 1
    raw = bytearray(encode_batch(0, [FILL]))
    raw[HEADER_SIZE + TABLE_HEADER_SIZE + 28] |= 0xFC  # the taker's table entry
    _, (item,) = decode_batch(bytes(raw))
    assert isinstance(item, FillItem) and item.taker.is_buy and not item.taker.reduce_only


@pytest.mark.parametrize("bad", [
    FundingItem(0, 2**31),
    FundingItem(2**32, 0),
    ForcedItem(-1),
    WithdrawItem(Withdrawal("0x" + "11" * 20, 0, 0, 2**128, 0, 0), TAKER_SIG),
    WithdrawItem(Withdrawal("0x" + "11" * 20, 0, 0, 1, 0, 0), TAKER_SIG[:64]),
    FillItem(TAKER, TAKER_SIG, MAKER, MAKER_SIG + b"\x00", 1, 1, 0, 0),
    FillItem(Order("0x11", 0, 0, True, False, 1, 1, 1, 1, 1), TAKER_SIG, MAKER, MAKER_SIG,
             1, 1, 0, 0),
    FillItem(TAKER, TAKER_SIG, MAKER, MAKER_SIG, 2**64, 1, 0, 0),
])
def test_out_of_range_refused_by_codec_and_validate(bad: Item) -> None:
    with pytest.raises(ProtocolRangeError):
        encode_batch(0, [bad])
    with pytest.raises(ProtocolRangeError):
        validate(bad)


def test_batch_limits() -> None:
    with pytest.raises(ProtocolRangeError):
        encode_batch(2**64, [])
    with pytest.raises(ProtocolRangeError):
        encode_batch(0, [ForcedItem(0)] * 0x10000)
    assert len(encode_batch(0, [ForcedItem(0)] * 0xFFFF)) == HEADER_SIZE + 9 * 0xFFFF


def test_enums_match_spec() -> None:
    assert [int(k) for k in ItemKind] == [1, 2, 3, 4, 5]
    # the reject-reason table of docs/protocol.md is the spec: every row, and nothing else
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    rows = {int(code): name for code, name in re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", doc, re.M)}
    assert rows == {int(r): r.name for r in RejectReason}
