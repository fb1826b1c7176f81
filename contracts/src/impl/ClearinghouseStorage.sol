// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ForcedRequest} from "../interfaces/ICrossbookTypes.sol";

/// @title ClearinghouseStorage
/// @notice ERC-7201 namespaced storage shared by the Clearinghouse and its delegatecalled settlement module.
/// @dev Account data live in one mapping `acct` keyed by `(acctId << 16) | (tag << 8) | index` where
///      `acctId = uint160(owner) << 32 | subaccount`. Code works on two "wide" words, whatever the storage:
///        header   = uint128(int128 quote) | marketBits << 128 (32 bits) | assetBits << 160 (16 bits)
///        position = int80 size | int88 openNotional << 80 | int88 snapshot << 168 (0 when size is 0)
///      Storage is compact so that a sub-account costs few slots (each first touch of a slot in a transaction is a
///      cold access): 128-bit lanes, two a slot.
///        tag 0 (key acctId, "slot A"): header lane (low half) | lane of market 0 (high half)
///        tag 3, index j >= 1: lane of market 2j - 1 (low half) | lane of market 2j (high half)
///        header lane   = uint80(int80 quote) | marketBits << 80 | assetBits << 112; a quote outside
///                        (int80.min, int80.max] is stored wide under tag 4 and the lane's quote is int80.min
///        position lane = 0 (no position) | int48 size | int48 openNotional << 48 | uint32 epoch << 96, where the
///                        snapshot is the market's cumulative funding index of funding epoch `epoch` (the market's
///                        current epoch: Market.cumulativeFunding; an older one: fundingHistory). A position whose
///                        size or open notional leave int48, or whose snapshot is not the current index (test
///                        harness only: trades always settle funding first), is stored wide under tag 1 and its
///                        lane is WIDE_POS. Every §7 range stays representable.
///        tag 1: wide position of market `index`; tag 4: wide header (both meaningful only as flagged above)
///        tag 2: collateral balance of asset `index` (>= 1), uint256
///      Filled amounts (docs/protocol.md §4): the word `filled[1 << 255 | uint160(owner) << 57 | nonce >> 7]` holds
///      a touched bit for each of 128 nonces (bit nonce & 127) and two 64-bit inline lanes at bits 128 and 192: a
///      filled amount (57 bits, 0 when the lane is free) | (nonce & 127) << 57. `filled[uint160(owner) << 62 |
///      nonce >> 2]` holds four 64-bit "own" lanes (nonce & 3). A nonce is untouched without its bit; partially
///      filled with the amount of the inline lane that holds it, else with its own lane's amount when that is
///      non-zero; spent otherwise. A partially filled nonce whose amount does not fit 57 bits or that finds both
///      inline lanes taken keeps its amount in its own lane until spent, and a spent nonce's lane is emptied, so
///      the rules stay unambiguous.
library ClearinghouseStorage {
    /// @custom:storage-location erc7201:crossbook.clearinghouse
    struct Market {
        // slot 0
        uint16 feedId;
        uint64 tickSize;
        uint64 lotSize;
        uint64 openInterestCap;
        uint32 maxFundingPpm;
        uint8 tierCount;
        // slots 1..4
        TierSlot[4] tiers;
        // slot 5
        int96 cumulativeFunding; // §7: int88
        uint32 fundingEpoch; // bumped by every change of the index (position lanes refer to epochs)
        uint128 openInterest;
        // slot 6
        int256 fundingBalance;
        // slot 7: the funding time budget (SettlementModule._fundingBudget): seconds per interval, and the
        // point in time up to which the budget has been used
        uint32 fundingPeriod;
        uint40 fundingClock;
    }

    struct TierSlot {
        uint128 notionalCap;
        uint32 imfPpm;
        uint32 mmfPpm;
    }

    struct Collateral {
        address token;
        uint16 feedId;
        uint8 decimals;
        uint32 weightInitPpm;
        uint32 weightMaintPpm;
        uint128 depositCap;
        uint128 totalDeposited;
    }

    struct Layout {
        uint64 nextSeq;
        uint32 marketCount;
        uint16 collateralCount; // including the quote asset (id 0)
        uint32 pnlHaircutPpm;
        uint64 nextRequestId;
        uint128 insuranceFund;
        uint128 feePool;
        mapping(uint256 => uint256) acct;
        mapping(uint256 => uint256) filled;
        mapping(bytes32 => bool) usedDigest;
        mapping(address => mapping(address => bool)) agents;
        mapping(uint256 => Market) markets;
        mapping(uint256 => Collateral) collaterals;
        mapping(address => bool) tokenListed;
        mapping(uint64 => ForcedRequest) requests;
        // liquidation (docs/protocol.md §9); appended so earlier fields keep their slots
        uint32 penaltyPpm;
        uint32 insuranceSharePpm;
        uint32 bufferPpm;
        uint32 criticalPpm;
        uint128 unbackedDebt;
        address liquidationModule;
        // index of funding epoch e of market m under key m << 32 | e, written when the epoch ends
        mapping(uint256 => int256) fundingHistory;
    }

    // keccak256(abi.encode(uint256(keccak256("crossbook.clearinghouse")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 internal constant SLOT = 0x4875a7ac637ce636e6502acf9d9a4365a479a55e6d9369569eb405a4bfe59600;

    function store() internal pure returns (Layout storage l) {
        bytes32 s = SLOT;
        assembly {
            l.slot := s
        }
    }

    uint256 internal constant MAX_MARKETS = 32;
    uint256 internal constant MAX_ASSETS = 16;
    uint256 internal constant FUNDING_BACKLOG = 24; // funding periods of unused budget a market can accrue

    // Storage ranges of packed values (docs/protocol.md §7).
    int256 internal constant SIZE_MIN = type(int80).min;
    int256 internal constant SIZE_MAX = type(int80).max;
    int256 internal constant ON_MIN = type(int88).min;
    int256 internal constant ON_MAX = type(int88).max;
    int256 internal constant QUOTE_MIN = type(int128).min;
    int256 internal constant QUOTE_MAX = type(int128).max;

    int256 internal constant LANE_MAX = type(int48).max; // size and open notional of a position lane
    int256 internal constant LANE_MIN = type(int48).min;
    int256 internal constant HQ_MAX = type(int80).max; // quote of a header lane; int80.min flags a wide header
    int256 internal constant HQ_MIN = type(int80).min;
    uint256 internal constant WIDE_POS = 1 << 127; // lane of a position stored wide (size 0, never a real lane)
    uint256 internal constant LO = type(uint128).max;
    uint256 internal constant INLINE_AMOUNT = (1 << 57) - 1; // amount bits of a nonce-state word's inline lane

    function nonceStateKey(uint256 owner, uint256 nonce) internal pure returns (uint256) {
        return (uint256(1) << 255) | (owner << 57) | (nonce >> 7);
    }

    function laneKey(uint256 owner, uint256 nonce) internal pure returns (uint256) {
        return (owner << 62) | (nonce >> 2);
    }

    function acctId(address owner, uint256 sub) internal pure returns (uint256) {
        return (uint256(uint160(owner)) << 32 | sub) << 16;
    }

    function headerKey(uint256 id) internal pure returns (uint256) {
        return id;
    }

    function positionKey(uint256 id, uint256 market) internal pure returns (uint256) {
        return id | 0x100 | market;
    }

    function collateralKey(uint256 id, uint256 asset) internal pure returns (uint256) {
        return id | 0x200 | asset;
    }

    /// @dev Key of the slot holding market m's lane, and the lane's shift in it (0 or 128).
    function laneSlot(uint256 id, uint256 m) internal pure returns (uint256 key, uint256 shift) {
        unchecked {
            key = m == 0 ? id : id | 0x300 | ((m + 1) >> 1); // m < 32
        }
        shift = m & 1 == 0 ? 128 : 0;
    }

    /// @dev Wide header of `id`.
    function loadHeader(uint256 id) internal view returns (uint256) {
        mapping(uint256 => uint256) storage acct = store().acct;
        return headerOfLane(acct[id] & LO, acct, id);
    }

    /// @dev Wide header from a header lane (reads the wide slot if the lane flags it).
    function headerOfLane(uint256 lane, mapping(uint256 => uint256) storage acct, uint256 id)
        internal
        view
        returns (uint256)
    {
        int256 q = int256(int80(uint80(lane)));
        if (q == HQ_MIN) return acct[id | 0x400];
        return uint256(uint128(int128(q))) | ((lane >> 80) << 128);
    }

    /// @dev Stores a wide header (quote in the int128 range).
    function storeHeader(uint256 id, uint256 hdr) internal {
        mapping(uint256 => uint256) storage acct = store().acct;
        int256 q = quoteOf(hdr);
        uint256 lane;
        if (q > HQ_MIN && q <= HQ_MAX) {
            lane = uint256(uint80(int80(q))) | ((hdr >> 128) << 80);
        } else {
            acct[id | 0x400] = hdr;
            lane = uint256(uint80(int80(HQ_MIN)));
        }
        acct[id] = (acct[id] & ~LO) | lane;
    }

    /// @dev Market m's cumulative funding index and funding epoch.
    function fundingOf(uint256 m) internal view returns (int256 cum, uint256 epoch) {
        Market storage sm = store().markets[m];
        cum = sm.cumulativeFunding;
        epoch = sm.fundingEpoch;
    }

    /// @dev Sets market m's cumulative funding index: a new funding epoch starts (the ending one's index is kept
    ///      for the position lanes that refer to it).
    function setCumulativeFunding(uint256 m, int256 cum) internal {
        Layout storage l = store();
        Market storage sm = l.markets[m];
        uint256 e = sm.fundingEpoch;
        l.fundingHistory[(m << 32) | e] = sm.cumulativeFunding;
        sm.fundingEpoch = uint32(e + 1);
        sm.cumulativeFunding = int96(cum);
    }

    /// @dev Wide position of `id` in market m.
    function loadPosition(uint256 id, uint256 m) internal view returns (uint256) {
        (int256 cum, uint256 epoch) = fundingOf(m);
        return loadPositionAt(id, m, cum, epoch);
    }

    /// @dev Wide position of `id` in market m, given the market's current index and epoch.
    function loadPositionAt(uint256 id, uint256 m, int256 cum, uint256 epoch) internal view returns (uint256) {
        (uint256 key, uint256 shift) = laneSlot(id, m);
        mapping(uint256 => uint256) storage acct = store().acct;
        uint256 lane = (acct[key] >> shift) & LO;
        if (lane == 0) return 0;
        if (lane == WIDE_POS) return acct[positionKey(id, m)];
        return positionOfLane(lane, cum, epoch, m);
    }

    /// @dev Wide position from a compact lane (non-zero, not WIDE_POS), given the market's current index and epoch.
    function positionOfLane(uint256 lane, int256 cum, uint256 epoch, uint256 m) internal view returns (uint256) {
        uint256 e = lane >> 96;
        int256 snap = e == epoch ? cum : store().fundingHistory[(m << 32) | e];
        return packPosition(int256(int48(uint48(lane))), int256(int48(uint48(lane >> 48))), snap);
    }

    /// @dev Lane of a wide position given the market's current index and epoch: WIDE_POS if it does not fit one.
    function laneOf(uint256 packed, int256 cum, uint256 epoch) internal pure returns (uint256) {
        if (packed == 0) return 0;
        (int256 size, int256 on, int256 snap) = unpackPosition(packed);
        if (snap != cum || size < LANE_MIN || size > LANE_MAX || on < LANE_MIN || on > LANE_MAX) return WIDE_POS;
        return uint256(uint48(int48(size))) | (uint256(uint48(int48(on))) << 48) | (epoch << 96);
    }

    /// @dev Stores a wide position (§7 ranges) of `id` in market m.
    function storePosition(uint256 id, uint256 m, uint256 packed) internal {
        (int256 cum, uint256 epoch) = fundingOf(m);
        uint256 lane = laneOf(packed, cum, epoch);
        mapping(uint256 => uint256) storage acct = store().acct;
        if (lane == WIDE_POS) acct[positionKey(id, m)] = packed;
        (uint256 key, uint256 shift) = laneSlot(id, m);
        acct[key] = (acct[key] & ~(LO << shift)) | (lane << shift);
    }

    function quoteOf(uint256 hdr) internal pure returns (int256) {
        return int256(int128(uint128(hdr)));
    }

    function marketBits(uint256 hdr) internal pure returns (uint256) {
        return (hdr >> 128) & 0xffffffff;
    }

    function assetBits(uint256 hdr) internal pure returns (uint256) {
        return (hdr >> 160) & 0xffff;
    }

    /// @dev Replaces the quote of a header; the caller guarantees the int128 range.
    function withQuote(uint256 hdr, int256 quote) internal pure returns (uint256) {
        return (hdr & ~uint256(type(uint128).max)) | uint256(uint128(int128(quote)));
    }

    function inQuoteRange(int256 q) internal pure returns (bool) {
        return q >= QUOTE_MIN && q <= QUOTE_MAX;
    }

    function unpackPosition(uint256 p) internal pure returns (int256 size, int256 on, int256 snap) {
        size = int256(int80(uint80(p)));
        on = int256(int88(uint88(p >> 80)));
        snap = int256(int88(uint88(p >> 168)));
    }

    function positionInRange(int256 size, int256 on, int256 snap) internal pure returns (bool) {
        return size >= SIZE_MIN && size <= SIZE_MAX && on >= ON_MIN && on <= ON_MAX && snap >= ON_MIN
            && snap <= ON_MAX;
    }

    /// @dev Packs a position; the caller guarantees the ranges (positionInRange). Size 0 packs to 0.
    function packPosition(int256 size, int256 on, int256 snap) internal pure returns (uint256) {
        if (size == 0) return 0;
        return uint256(uint80(int80(size))) | (uint256(uint88(int88(on))) << 80)
            | (uint256(uint88(int88(snap))) << 168);
    }
}
