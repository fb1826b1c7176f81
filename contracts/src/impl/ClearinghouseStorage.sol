// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ForcedRequest} from "../interfaces/ICrossbookTypes.sol";

/// @title ClearinghouseStorage
/// @notice ERC-7201 namespaced storage shared by the Clearinghouse and its delegatecalled settlement module.
/// @dev Account data live in one mapping `acct` keyed by `(acctId << 16) | (tag << 8) | index` where
///      `acctId = uint160(owner) << 32 | subaccount`:
///        tag 0: header  = uint128(int128 quote) | marketBits << 128 (32 bits) | assetBits << 160 (16 bits)
///        tag 1: position of market `index` = int80 size | int88 openNotional << 80 | int88 snapshot << 168
///        tag 2: collateral balance of asset `index` (>= 1), uint256
///      Filled amounts (docs/protocol.md §4): `filled[1 << 255 | uint160(owner) << 57 | nonce >> 7]` holds 2-bit
///      states of 128 nonces (bits 2 * (nonce & 127): 0 untouched, 1 partially filled, 2 spent);
///      `filled[uint160(owner) << 62 | nonce >> 2]` holds four 64-bit lanes (nonce & 3), meaningful only
///      while the nonce is partially filled.
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
        int128 cumulativeFunding;
        uint128 openInterest;
        // slot 6
        int256 fundingBalance;
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

    // Storage ranges of packed values (docs/protocol.md §7).
    int256 internal constant SIZE_MIN = type(int80).min;
    int256 internal constant SIZE_MAX = type(int80).max;
    int256 internal constant ON_MIN = type(int88).min;
    int256 internal constant ON_MAX = type(int88).max;
    int256 internal constant QUOTE_MIN = type(int128).min;
    int256 internal constant QUOTE_MAX = type(int128).max;

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
