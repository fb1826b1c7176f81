// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {MarginEngine} from "./MarginEngine.sol";
import {ClearinghouseStorage as S} from "./ClearinghouseStorage.sol";
import {MarginMath} from "../lib/MarginMath.sol";
import {DivMath} from "../lib/DivMath.sol";
import {BatchDecoder as B} from "../lib/BatchDecoder.sol";
import {OrderHashing as H} from "../lib/OrderHashing.sol";
import {ForcedRequest} from "../interfaces/ICrossbookTypes.sol";

/// @title SettlementModule
/// @notice Batch settlement (docs/protocol.md §5). Runs only through delegatecall from the Clearinghouse,
///         which checks OPERATOR_ROLE and holds all storage and tokens.
contract SettlementModule is MarginEngine {
    address private immutable _self;

    uint8 private constant MALFORMED = 255; // not a reject reason: the batch reverts

    // memory addresses of the order-hash buffer, a batch's two sides and its context, the first allocations of
    // settle() (checked there): the fill path's assembly reads their fields at constant addresses
    uint256 private constant SIG_BUF = 0x80; // 4 words: an order's digest input, then its ecrecover input
    // the buffer's last word holds ACCT_SLOT: the optimizer loads that 32-byte constant with CODECOPY (11 instructions)
    uint256 private constant ACCT_SLOT_AT = 0x1e0;
    // and the three words below it the lane masks LO, ~LO and WIDE_POS, which the optimizer builds at run time (5, 4
    // and 3 instructions; an MLOAD at a constant address is 2)
    uint256 private constant LO_AT = 0x180;
    uint256 private constant HI_AT = 0x1a0;
    uint256 private constant WIDE_POS_AT = 0x1c0;
    uint256 private constant T = 0x200;
    uint256 private constant K = 0x5a0; // T + 29 words
    uint256 private constant C = 0x940; // the batch's Ctx, allocated next (K + 29 words)
    // their fields' addresses (Side and Ctx layouts), which the fill path's assembly reads: the optimizer does not
    // fold add(T, 0x60), so a named address saves a PUSH and an ADD per access
    uint256 private constant T_OWNER = 0x220;
    uint256 private constant T_SUB = 0x240;
    uint256 private constant T_MARKET = 0x260;
    uint256 private constant T_FLAGS = 0x360;
    uint256 private constant T_REDUCE_ONLY = 0x2a0;
    uint256 private constant T_PRICE = 0x2c0;
    uint256 private constant T_NONCE = 0x300;
    uint256 private constant T_EXPIRY = 0x320;
    uint256 private constant T_MAX_FEE = 0x340;
    uint256 private constant T_FEE_PPM = 0x420;
    uint256 private constant T_IS_BUY = 0x280;
    uint256 private constant T_HDR = 0x3a0;
    uint256 private constant T_OLD_SIZE = 0x3c0;
    uint256 private constant T_NEW_SIZE = 0x480;
    uint256 private constant T_FUNDING = 0x4a0;
    uint256 private constant T_FEE = 0x4c0;
    uint256 private constant T_OFF = 0x200;
    uint256 private constant T_SIZE = 0x2e0;
    uint256 private constant T_ID = 0x380;
    uint256 private constant T_NEW_HDR = 0x440;
    uint256 private constant T_NEW_POS = 0x460;
    uint256 private constant T_IDX = 0x4e0;
    uint256 private constant T_NR = 0x500;
    uint256 private constant T_KA = 0x520;
    uint256 private constant T_VA = 0x540;
    uint256 private constant T_KB = 0x560;
    uint256 private constant T_VB = 0x580;
    uint256 private constant K_OWNER = 0x5c0;
    uint256 private constant K_SUB = 0x5e0;
    uint256 private constant K_MARKET = 0x600;
    uint256 private constant K_FLAGS = 0x700;
    uint256 private constant K_REDUCE_ONLY = 0x640;
    uint256 private constant K_PRICE = 0x660;
    uint256 private constant K_NONCE = 0x6a0;
    uint256 private constant K_EXPIRY = 0x6c0;
    uint256 private constant K_MAX_FEE = 0x6e0;
    uint256 private constant K_FEE_PPM = 0x7c0;
    uint256 private constant K_IS_BUY = 0x620;
    uint256 private constant K_HDR = 0x740;
    uint256 private constant K_OLD_SIZE = 0x760;
    uint256 private constant K_NEW_SIZE = 0x820;
    uint256 private constant K_FUNDING = 0x840;
    uint256 private constant K_FEE = 0x860;
    uint256 private constant K_OFF = 0x5a0;
    uint256 private constant K_SIZE = 0x680;
    uint256 private constant K_ID = 0x720;
    uint256 private constant K_NEW_HDR = 0x7e0;
    uint256 private constant K_NEW_POS = 0x800;
    uint256 private constant K_IDX = 0x880;
    uint256 private constant K_NR = 0x8a0;
    uint256 private constant K_KA = 0x8c0;
    uint256 private constant K_VA = 0x8e0;
    uint256 private constant K_KB = 0x900;
    uint256 private constant K_VB = 0x920;
    uint256 private constant C_N_MARKETS = 0x980;
    uint256 private constant C_HAIRCUT = 0x9c0;
    uint256 private constant C_FEE_ACC = 0xb20;
    uint256 private constant C_FUND_DELTA = 0xb40;
    uint256 private constant C_DOMAIN = 0xb60;
    uint256 private constant C_OK_MARKETS = 0xb80;
    uint256 private constant C_OK_ASSETS = 0xba0;
    uint256 private constant C_SIGS = 0xbc0;
    uint256 private constant C_N_ORDERS = 0xbe0;
    uint256 private constant C_TBL = 0xc00;
    uint256 private constant C_HM = 0xc20;
    uint256 private constant C_NONCES = 0xc40;
    uint256 private constant C_OI_DIRTY = 0xc80;

    /// @dev One side of a fill, reused across the batch.
    struct Side {
        uint256 off; // absolute calldata offset of the packed order
        address owner;
        uint256 sub;
        uint256 market;
        // words 1..10 are the Order's fields in EIP-712 order as they are hashed (_orderSigCheck hashes them in place)
        bool isBuy;
        bool reduceOnly;
        uint256 price;
        uint256 size;
        uint256 nonce;
        uint256 expiry;
        uint256 maxFee;
        uint256 flags;
        uint256 id;
        uint256 hdr;
        int256 s; // old size
        int256 on; // unused: the old open notional and snapshot stay on _side's stack (field addresses are fixed)
        int256 snap;
        uint256 feePpm; // the fill's fee rate for this side
        uint256 newHdr;
        uint256 newPos;
        int256 newSize;
        int256 funding; // funding settled into quote (owed)
        uint256 fee;
        uint256 idx; // order-table index + 1 (0: inline order, no per-batch signature cache)
        uint256 nr; // the (owner, nonce) batch record (bound by _filled)
        uint256 ka; // storage slot of the account's slot A and its value (_side), reused by _commitFill
        uint256 va;
        uint256 kb; // storage slot of the fill market's lane (m >= 1) and its value
        uint256 vb;
    }

    /// @dev Batch record of an (owner, nonce) a fill read (§4), three words in the batch's hash map: next record in
    ///      the same bucket, NR_* fields packed in one word, key `1 << 255 | owner << 64 | nonce` (at +0x40 like an
    ///      account record's, for _find). Fills update it; only its final state is written back (_flushNonces), so
    ///      an order filled several times in a batch costs one state write and no lane unless it stays partially
    ///      filled. Three words, not a struct of six: the batch's memory grows by a record per distinct nonce and
    ///      memory costs quadratically.
    uint256 private constant NR_LINK_MASK = 0xffffffff; // bits 0..31: next record in the write-back list
    uint256 private constant NR_FILLED_SHIFT = 32; // bits 32..96: filled amount, SPENT once spent
    uint256 private constant NR_FILLED_MASK = (1 << 65) - 1;
    uint256 private constant NR_ST0_SHIFT = 100; // bits 100..101: state in storage (_filled)
    uint256 private constant NR_DIRTY = 1 << 102; // a fill changed it

    uint256 private constant SPENT = 1 << 64; // above any order size
    // the nonce-state word's inline lanes (ClearinghouseStorage): amount (57 bits) | nonce & 127 << 57, at bits 128 and
    // 192; a lane with amount 0 is free
    uint256 private constant M57 = (1 << 57) - 1;
    uint256 private constant LANE0 = ((1 << 64) - 1) << 128;

    // storage lanes (ClearinghouseStorage): the acct mapping's slot (Layout field 2), the low-half mask, the
    // quote int80.min flagging a wide header, the lane of a wide position
    uint256 private constant ACCT_SLOT = 0x4875a7ac637ce636e6502acf9d9a4365a479a55e6d9369569eb405a4bfe59602;
    uint256 private constant LO = 0xffffffffffffffffffffffffffffffff;
    uint256 private constant WIDE_Q = 0xffffffffffffffffffffffffffffffffffffffffffff80000000000000000000; // int80.min
    uint256 private constant WIDE_POS = 0x80000000000000000000000000000000;

    constructor(address oracle_, address quoteToken_) MarginEngine(oracle_, quoteToken_) {
        _self = address(this);
    }

    /// @notice Settles a packed batch (docs/protocol.md §5). Only reachable through Clearinghouse.settle,
    ///         which enforces OPERATOR_ROLE and non-reentrancy.
    /// @param batch firstSeq:uint64 count:uint16 [0x00 orderCount:uint16 (order sig){orderCount}] item{count}
    function settle(bytes calldata batch) external {
        // the order-hash buffer and the batch's two sides first, so they sit at fixed addresses (SIG_BUF, T, K) that
        // the fill path uses as constants
        uint256[12] memory sigBuf;
        Side memory t;
        Side memory k;
        assembly ("memory-safe") {
            if iszero(and(eq(sigBuf, SIG_BUF), and(eq(t, T), eq(k, K)))) { invalid() }
            mstore(ACCT_SLOT_AT, ACCT_SLOT)
            mstore(LO_AT, LO)
            mstore(HI_AT, not(LO))
            mstore(WIDE_POS_AT, WIDE_POS)
        }
        if (address(this) == _self) revert DirectCallForbidden();
        S.Layout storage l = S.store();
        uint256 base;
        assembly {
            base := batch.offset
        }
        uint256 len = batch.length;
        if (len < B.HEADER) revert MalformedBatch(0);
        uint64 firstSeq = uint64(B.u(base, 8));
        uint256 count = B.u(base + 8, 2);
        {
            uint64 expected = l.nextSeq;
            if (firstSeq != expected) revert BatchOutOfOrder(expected, firstSeq);
        }

        Ctx memory c = _newCtx();
        assembly ("memory-safe") {
            if iszero(eq(c, C)) { invalid() }
        }
        c.domain = H.domainSeparator(address(this));
        c.fundDelta = new int256[](c.nMarkets);
        uint256 rejected = _items(c, t, k, base, len, firstSeq, count);
        _flushNonces(c.nonces);
        _flushOi(c);
        l.nextSeq = firstSeq + uint64(count);
        if (c.feeAcc != 0) l.feePool += uint128(c.feeAcc);
        for (uint256 m = 0; m < c.nMarkets; ++m) {
            int256 fd = c.fundDelta[m];
            if (fd != 0) l.markets[m].fundingBalance += fd;
        }
        emit BatchSettled(firstSeq, uint16(count), uint16(rejected));
    }

    /// @dev Runs the items (after the order table); reverts MalformedBatch; returns the number rejected.
    function _items(Ctx memory c, Side memory t, Side memory k, uint256 base, uint256 len, uint64 firstSeq, uint256 count)
        private
        returns (uint256 rejected)
    {
        uint256 o = _orderTable(c, base, len);
        {
            // chained buckets of nonce and account records (disjoint keys: nonce keys have bit 255 set), about
        // one bucket per two nonce records
            uint256 nb = 16;
            uint256 want = (c.nOrders + count) >> 1;
            while (nb < want) nb <<= 1;
            c.hm = new uint256[](nb);
        }
        // unchecked: offsets stay below the calldata length, j < count < 2**16; a sequence number past uint64
        // (wrapped here) reverts the batch when settle() stores nextSeq, checked
        unchecked {
            for (uint256 j = 0; j < count; ++j) {
                uint256 bodyLen = B.FILL_REF_BODY;
                uint8 reason;
                bool ref;
                // FILL_REF, the common kind, with its whole body inside the batch (o + 1 + bodyLen <= len): one test.
                // 6 is B.KIND_FILL_REF (assembly takes only literal constants; a stack copy costs 17 gas per fill)
                assembly ("memory-safe") {
                    ref := and(lt(add(o, bodyLen), len), eq(shr(248, calldataload(add(base, o))), 6))
                }
                if (ref) {
                    reason = _fillRef(c, t, k, base + o + 1);
                } else {
                    if (o >= len) revert MalformedBatch(o);
                    bodyLen = B.bodyLength(B.u(base + o, 1));
                    // a FILL_REF that gets here overruns the batch
                    if (bodyLen == 0 || o + 1 + bodyLen > len) revert MalformedBatch(o);
                    reason = _item(c, t, k, base + o, firstSeq + uint64(j));
                }
                if (reason != 0) {
                    if (reason == MALFORMED) revert MalformedBatch(o);
                    emit ItemRejected(firstSeq + uint64(j), reason);
                    ++rejected;
                }
                o += 1 + bodyLen;
            }
        }
        if (o != len) revert MalformedBatch(o);
    }

    /// @dev Parses the optional order table after the header (each distinct signed order of the batch once,
    ///      referenced by FILL_REF items); returns the offset of the first item.
    function _orderTable(Ctx memory c, uint256 base, uint256 len) private pure returns (uint256 o) {
        o = B.HEADER;
        uint256 n;
        if (o < len && B.u(base + o, 1) == 0) {
            if (o + 3 > len) revert MalformedBatch(o);
            n = B.u(base + o + 1, 2);
            if (o + 3 + n * B.SIGNED_ORDER > len) revert MalformedBatch(o);
            c.tbl = base + o + 3;
            o += 3 + n * B.SIGNED_ORDER;
        }
        c.nOrders = n;
        c.sigs = new uint256[]((n + 31) >> 5);
    }

    /// @dev Applies one item other than FILL_REF (_fillRef) whose kind byte is at absolute offset `ko`: 0 or a
    ///      reject reason.
    function _item(Ctx memory c, Side memory t, Side memory k, uint256 ko, uint64 seq) private returns (uint8) {
        uint256 kind = B.u(ko, 1);
        uint256 p;
        unchecked {
            p = ko + 1; // a calldata offset
        }
        if (kind == B.KIND_FILL) {
            unchecked {
                // calldata offsets, the item's length checked by _items
                _readOrderT(p, 0);
                _readOrderK(p + 130, 0);
                return _fill(c, t, k, p + 260);
            }
        }
        // Other kinds never read filled amounts, but keep storage current before them all the same (cheap: rare)
        if (c.nonces != 0 || c.accts != 0) {
            _flushNonces(c.nonces);
            _clearCache(c);
        }
        if (kind == B.KIND_WITHDRAW) return _withdraw(c, p, seq);
        if (kind == B.KIND_TRANSFER) return _transfer(c, p);
        if (kind == B.KIND_FUNDING) return _funding(c, p);
        return _executeForced(c, uint64(B.u(p, 8)), seq);
    }

    /// @notice Clearinghouse.deposit (reached through it, which enforces non-reentrancy): credits what actually
    ///         arrived (balance delta), subject to the asset's deposit cap.
    function deposit(address owner, uint32 subaccount, uint16 asset, uint256 amount) external {
        if (address(this) == _self) revert DirectCallForbidden();
        if (owner == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        S.Layout storage l = S.store();
        if (asset >= l.collateralCount) revert UnknownAsset(asset);
        S.Collateral storage col = l.collaterals[asset];
        uint256 received = _pull(col.token, amount);
        uint256 total = uint256(col.totalDeposited) + received;
        if (total > col.depositCap) revert DepositCapExceeded(asset, total, col.depositCap);
        col.totalDeposited = uint128(total);
        uint256 id = S.acctId(owner, subaccount);
        uint256 hdr = S.loadHeader(id);
        if (asset == 0) {
            int256 q = S.quoteOf(hdr) + int256(received);
            if (!S.inQuoteRange(q)) revert BalanceOverflow();
            hdr = S.withQuote(hdr, q);
        } else {
            l.acct[S.collateralKey(id, asset)] += received;
            hdr |= uint256(1) << (160 + asset);
        }
        S.storeHeader(id, hdr);
        emit Deposit(owner, subaccount, asset, received);
    }

    /// @notice Clearinghouse.depositInsurance: adds quote tokens to the insurance fund (balance delta).
    function depositInsurance(uint256 amount) external {
        if (address(this) == _self) revert DirectCallForbidden();
        if (amount == 0) revert ZeroAmount();
        uint256 received = _pull(_quoteToken, amount);
        S.Layout storage l = S.store();
        uint256 total = uint256(l.insuranceFund) + received;
        if (total > type(uint128).max) revert BalanceOverflow();
        l.insuranceFund = uint128(total);
        emit InsuranceDeposited(msg.sender, received);
    }

    function _pull(address token, uint256 amount) private returns (uint256 received) {
        uint256 before = IERC20(token).balanceOf(address(this));
        SafeERC20.safeTransferFrom(IERC20(token), msg.sender, address(this), amount);
        received = IERC20(token).balanceOf(address(this)) - before;
        if (received == 0) revert ZeroAmount();
        if (received > type(uint128).max) revert BalanceOverflow();
    }

    /// @notice Escape hatch (docs/protocol.md §8), reached through Clearinghouse.executeForcedWithdrawal, which
    ///         enforces non-reentrancy. Same checks and errors as before the move.
    function executeForcedWithdrawal(uint64 requestId) external {
        if (address(this) == _self) revert DirectCallForbidden();
        ForcedRequest storage r = S.store().requests[requestId];
        if (!r.pending) revert RequestNotPending(requestId);
        if (r.owner != msg.sender) revert NotRequestOwner(requestId);
        if (block.timestamp < r.executableAt) revert TooEarly(r.executableAt);
        Ctx memory c = _newCtx();
        uint8 reason = _executeForced(c, requestId, 0);
        if (reason == R_INSUFFICIENT_BALANCE) revert InsufficientBalance();
        if (reason == R_INSUFFICIENT_MARGIN) revert InsufficientMargin();
        if (reason == R_ORACLE_UNAVAILABLE) revert OracleUnavailable(0);
        if (reason != 0) revert TransferFailed();
    }

    // ------------------------------------------------------------------------------------------ fills

    /// @dev A FILL_REF item whose body starts at absolute offset `p`: reads the two order-table entries it references
    ///      and applies the fill (_fill); MALFORMED for an index out of range.
    function _fillRef(Ctx memory c, Side memory t, Side memory k, uint256 p) private returns (uint8) {
        uint256 ti;
        uint256 ki;
        bool bad;
        uint256 tbl;
        // Ctx fields nOrders 21, tbl 22
        assembly ("memory-safe") {
            let w := calldataload(p)
            ti := shr(240, w)
            ki := and(shr(224, w), 0xffff)
            let n := mload(C_N_ORDERS)
            bad := iszero(and(lt(ti, n), lt(ki, n)))
            tbl := mload(C_TBL)
        }
        if (bad) return MALFORMED;
        unchecked {
            // indices < 2**16, the table lies inside calldata
            _readOrderT(tbl + ti * B.SIGNED_ORDER, ti + 1);
            _readOrderK(tbl + ki * B.SIGNED_ORDER, ki + 1);
            return _fill(c, t, k, p + 4);
        }
    }

    /// @dev Reads the packed order at calldata offset `o` (order-table index `idx` + 1, 0 inline) into t's fields
    ///      off..flags, id and idx. Nothing else writes those fields, so a side whose last order was read from the
    ///      same offset (a resting order filled again by the next item) already holds them.
    ///      One copy per side, as _sideT: -133 gas per fill for 170 bytes.
    function _readOrderT(uint256 o, uint256 idx) private pure {
        // Side layout: off, owner, sub, market, isBuy, reduceOnly, price, size, nonce, expiry, maxFee, flags, id;
        // idx 23
        assembly ("memory-safe") {
            if iszero(eq(mload(T_OFF), o)) {
                // not read already
                mstore(T_OFF, o)
                mstore(T_IDX, idx)
                let w := calldataload(o)
                let owner := shr(96, w)
                mstore(T_OWNER, owner)
                let sub_ := and(shr(64, w), 0xffffffff)
                mstore(T_SUB, sub_)
                mstore(T_MARKET, and(shr(32, w), 0xffffffff))
                w := calldataload(add(o, 28))
                let flags := shr(248, w)
                mstore(T_FLAGS, flags)
                mstore(T_IS_BUY, and(flags, 1))
                mstore(T_REDUCE_ONLY, and(shr(1, flags), 1))
                mstore(T_PRICE, and(shr(184, w), 0xffffffffffffffff))
                mstore(T_SIZE, and(shr(120, w), 0xffffffffffffffff))
                mstore(T_NONCE, and(shr(56, w), 0xffffffffffffffff))
                w := calldataload(add(o, 53))
                mstore(T_EXPIRY, shr(192, w))
                mstore(T_MAX_FEE, and(shr(160, w), 0xffffffff))
                mstore(T_ID, shl(16, or(shl(32, owner), sub_)))
            }
        }
    }

    /// @dev _readOrderT for side k (K_ field addresses). Keep the two identical up to T_/K_ (test: SideCopies.t.sol).
    function _readOrderK(uint256 o, uint256 idx) private pure {
        // Side layout: off, owner, sub, market, isBuy, reduceOnly, price, size, nonce, expiry, maxFee, flags, id;
        // idx 23
        assembly ("memory-safe") {
            if iszero(eq(mload(K_OFF), o)) {
                // not read already
                mstore(K_OFF, o)
                mstore(K_IDX, idx)
                let w := calldataload(o)
                let owner := shr(96, w)
                mstore(K_OWNER, owner)
                let sub_ := and(shr(64, w), 0xffffffff)
                mstore(K_SUB, sub_)
                mstore(K_MARKET, and(shr(32, w), 0xffffffff))
                w := calldataload(add(o, 28))
                let flags := shr(248, w)
                mstore(K_FLAGS, flags)
                mstore(K_IS_BUY, and(flags, 1))
                mstore(K_REDUCE_ONLY, and(shr(1, flags), 1))
                mstore(K_PRICE, and(shr(184, w), 0xffffffffffffffff))
                mstore(K_SIZE, and(shr(120, w), 0xffffffffffffffff))
                mstore(K_NONCE, and(shr(56, w), 0xffffffffffffffff))
                w := calldataload(add(o, 53))
                mstore(K_EXPIRY, shr(192, w))
                mstore(K_MAX_FEE, and(shr(160, w), 0xffffffff))
                mstore(K_ID, shl(16, or(shl(32, owner), sub_)))
            }
        }
    }

    /// @dev A fill whose sides are already read; `o` points at fillSize:uint64 fillPrice:uint64 fees:2*uint32.
    ///      Checks INVALID_ITEM, BAD_SIGNATURE, EXPIRED, OVERFILL, PRICE_LIMIT, FEE_TOO_HIGH (in that order), then
    ///      applies it (_fillApply).
    function _fill(Ctx memory c, Side memory t, Side memory k, uint256 o) private returns (uint8) {
        uint256 r; // a reject reason; uint256, not uint8: each test of a uint8 masks it (2 instructions)
        uint256 fillSize;
        uint256 fillPrice;
        uint256 m;
        // one word: fillSize uint64 | fillPrice uint64 | the fee rates of t and k, uint32 each. Side fields (words):
        // owner 1, sub 2, market 3, isBuy 4, nonce 8, flags 11, feePpm 17; Ctx field nMarkets 2.
        // INVALID_ITEM: m >= nMarkets || k.market != m || t.isBuy == k.isBuy || t.flags > 3 || k.flags > 3
        //     || (t.owner == k.owner && (t.sub == k.sub || t.nonce == k.nonce)), branch-free
        assembly ("memory-safe") {
            let w := calldataload(o)
            fillSize := shr(192, w)
            fillPrice := and(shr(128, w), 0xffffffffffffffff)
            mstore(T_FEE_PPM, and(shr(96, w), 0xffffffff))
            mstore(K_FEE_PPM, and(shr(64, w), 0xffffffff))
            m := mload(T_MARKET)
            let bad := or(
                or(iszero(lt(m, mload(C_N_MARKETS))), iszero(eq(mload(K_MARKET), m))),
                or(
                    eq(mload(T_IS_BUY), mload(K_IS_BUY)),
                    or(gt(mload(T_FLAGS), 3), gt(mload(K_FLAGS), 3))
                )
            )
            if eq(mload(T_OWNER), mload(K_OWNER)) {
                bad := or(bad, or(eq(mload(T_SUB), mload(K_SUB)), eq(mload(T_NONCE), mload(K_NONCE))))
            }
            if bad { r := R_INVALID_ITEM }
        }
        if (r != 0) return uint8(r);
        MarketCache memory mc = c.m[m];
        if (!mc.loaded) _ensureMarket(c, m);
        // MarketCache: tickSize at 0x60, lotSize at 0x80, both non-zero (listing checks them)
        assembly ("memory-safe") {
            if or(
                or(iszero(fillSize), mod(fillSize, mload(add(mc, 0x80)))),
                or(iszero(fillPrice), mod(fillPrice, mload(add(mc, 0x60))))
            ) { r := R_INVALID_ITEM }
        }
        if (r != 0) return uint8(r);
        if (!_orderSigOk(t) || !_orderSigOk(k)) return R_BAD_SIGNATURE;
        // Side field expiry 9
        assembly ("memory-safe") {
            if or(gt(timestamp(), mload(T_EXPIRY)), gt(timestamp(), mload(K_EXPIRY))) { r := R_EXPIRED }
        }
        if (r != 0) return uint8(r);
        unchecked {
            // filled <= SPENT = 2**64 and fillSize < 2**64
            if (_filled(t) + fillSize > t.size) return R_OVERFILL;
            if (_filled(k) + fillSize > k.size) return R_OVERFILL;
        }
        // Side fields (words): isBuy 4, price 6, maxFee 10, feePpm 17
        assembly ("memory-safe") {
            let buyLimit := mload(T_PRICE)
            let sellLimit := mload(K_PRICE)
            if iszero(mload(T_IS_BUY)) {
                buyLimit := sellLimit
                sellLimit := mload(T_PRICE)
            }
            switch or(lt(buyLimit, fillPrice), gt(sellLimit, fillPrice))
            case 1 { r := R_PRICE_LIMIT }
            default {
                if or(gt(mload(T_FEE_PPM), mload(T_MAX_FEE)), gt(mload(K_FEE_PPM), mload(K_MAX_FEE))) {
                    r := R_FEE_TOO_HIGH
                }
            }
        }
        if (r != 0) return uint8(r);
        return _fillApply(c, t, k, mc, fillSize, fillPrice);
    }

    /// @dev EIP-712 digest of the packed order at calldata offset `o` (H.orderStructHashCd + H.digest) and a
    ///      low-s ecrecover of the signature that follows it (H.recoverCd), in one pass.
    function _orderSigOk(Side memory x) private view returns (bool) {
        uint256 idx = x.idx;
        if (idx == 0) return _orderSigCheck(x);
        // state of entry idx - 1, one byte each: 0 unchecked, 1 good, 2 bad; same bytes, same answer all batch (Ctx
        // field sigs 20; a byte, not two bits: no shift and mask to compute, ~25 gas per side)
        uint256 a;
        uint256 st;
        assembly ("memory-safe") {
            a := add(add(mload(C_SIGS), 0x1f), idx)
            st := shr(248, mload(a))
        }
        if (st == 0) {
            st = _orderSigCheck(x) ? 1 : 2;
            assembly ("memory-safe") {
                mstore8(a, st)
            }
        }
        return st == 1;
    }

    function _orderSigCheck(Side memory x) private view returns (bool) {
        bytes32 th = H.ORDER_TYPEHASH;
        uint256 halfN = H.HALF_N;
        uint256 o = x.off;
        address signer;
        // Ctx field domain 17
        assembly ("memory-safe") {
            // the struct hash input is x's words 0..10: the type hash written over `off` for the hash, then the
            // Order's fields as _readOrder decoded them (Side layout); then the digest input and the ecrecover input
            // at SIG_BUF = 0x80
            mstore(x, th)
            let h := keccak256(x, 0x160)
            mstore(x, o)
            mstore(0x80, hex"1901")
            mstore(0x82, mload(C_DOMAIN))
            mstore(0xa2, h)
            let d := keccak256(0x80, 0x42)
            let r := calldataload(add(o, 65))
            let s_ := calldataload(add(o, 97))
            let v := shr(248, calldataload(add(o, 129)))
            if and(iszero(gt(s_, halfN)), or(eq(v, 27), eq(v, 28))) {
                mstore(0x80, d)
                mstore(0xa0, v)
                mstore(0xc0, r)
                mstore(0xe0, s_)
                mstore(0x00, 0)
                if staticcall(gas(), 1, 0x80, 0x80, 0x00, 0x20) { signer := mload(0x00) }
            }
        }
        uint256 owner;
        bool none;
        bool own;
        // Side field owner 1, a clean 160-bit word (_readOrder), as is the precompile's output: no address cleanup
        // (signer == address(0) in Solidity masks it: 6 instructions)
        assembly ("memory-safe") {
            none := iszero(signer)
            owner := mload(add(x, 0x20))
            own := eq(signer, owner)
        }
        if (none) return false;
        return own || S.store().agents[address(uint160(owner))][signer];
    }

    /// @dev Filled amount of (owner, nonce) for the OVERFILL check; SPENT (above any size) once spent (§4).
    ///      Binds x.nr to the nonce's batch record, loading its state (and lane if partially filled) on first use.
    function _filled(Side memory x) private view returns (uint256 v) {
        uint256 owner;
        uint256 nonce;
        uint256 key;
        // Side fields (words): owner 1 (a clean 160-bit word, _readOrder), nonce 8 (< 2**64)
        uint256 ptr;
        uint256 bucket;
        // _find's lookup inlined (a call costs ~25 gas; -47 gas per fill); Side field nr 24
        assembly ("memory-safe") {
            owner := mload(add(x, 0x20))
            nonce := mload(add(x, 0x100))
            key := or(shl(255, 1), or(shl(64, owner), nonce))
            let hm := mload(C_HM)
            let h := and(shr(128, mul(key, 0x9e3779b97f4a7c15f39cc0605cedc8341082276bf3a27251f86c6a11d0c18e95)), sub(mload(hm), 1))
            bucket := add(add(hm, 0x20), shl(5, h))
            ptr := mload(bucket)
            for {} ptr {} {
                if eq(mload(add(ptr, 0x40)), key) { break }
                ptr := mload(ptr)
            }
            if ptr {
                mstore(add(x, 0x300), ptr)
                v := and(shr(NR_FILLED_SHIFT, mload(add(ptr, 0x20))), NR_FILLED_MASK)
            }
        }
        if (ptr != 0) return v;
        mapping(uint256 => uint256) storage f = S.store().filled;
        uint256 sslot = _slotOf(f, S.nonceStateKey(owner, nonce));
        uint256 st; // 0 untouched, 1 partially filled (inline lane), 2 spent, 3 partially filled (own lane)
        assembly ("memory-safe") {
            let w := sload(sslot)
            let i := and(nonce, 127)
            if and(shr(i, w), 1) {
                // touched: an inline lane of the word that holds this nonce, else the nonce's own lane (0: spent)
                let a := and(shr(128, w), M57)
                if iszero(and(iszero(iszero(a)), eq(shr(185, and(w, LANE0)), i))) {
                    a := and(shr(192, w), M57)
                    if iszero(eq(shr(249, w), i)) { a := 0 }
                }
                switch a
                case 0 {
                    mstore(0, or(shl(62, owner), shr(2, nonce)))
                    mstore(0x20, f.slot)
                    v := and(shr(shl(6, and(nonce, 3)), sload(keccak256(0, 0x40))), 0xffffffffffffffff)
                    switch v
                    case 0 {
                        st := 2
                        v := SPENT
                    }
                    default { st := 3 }
                }
                default {
                    st := 1
                    v := a
                }
            }
        }
        // the new record heads the write-back list (Ctx field nonces 24)
        assembly ("memory-safe") {
            ptr := mload(0x40)
            mstore(0x40, add(ptr, 0x60))
            mstore(ptr, mload(bucket))
            mstore(add(ptr, 0x20), or(mload(C_NONCES), or(shl(NR_FILLED_SHIFT, v), shl(NR_ST0_SHIFT, st))))
            mstore(add(ptr, 0x40), key)
            mstore(bucket, ptr)
            mstore(C_NONCES, ptr)
        }
        x.nr = ptr;
    }

    function _slotOf(mapping(uint256 => uint256) storage f, uint256 key) private pure returns (uint256 slot) {
        assembly ("memory-safe") {
            mstore(0, key)
            mstore(0x20, f.slot)
            slot := keccak256(0, 0x40)
        }
    }

    /// @dev The record for `key` in the batch's hash map (Ctx field hm 23; 0 if none) and its bucket's address.
    function _find(uint256 key) private pure returns (uint256 ptr, uint256 bucket) {
        assembly ("memory-safe") {
            let hm := mload(C_HM)
            // multiplicative hashing; owners are random, so the product's middle bits spread well
            let h := and(shr(128, mul(key, 0x9e3779b97f4a7c15f39cc0605cedc8341082276bf3a27251f86c6a11d0c18e95)), sub(mload(hm), 1))
            bucket := add(add(hm, 0x20), shl(5, h))
            ptr := mload(bucket)
            for {} ptr {} {
                if eq(mload(add(ptr, 0x40)), key) { break }
                ptr := mload(ptr)
            }
        }
    }

    /// @dev Writes each dirty nonce record's final state (ClearinghouseStorage: touched bit, two inline lanes, own
    ///      lane). The inline lane holding the nonce, if any, is emptied first; then a spent nonce only empties its own
    ///      lane if it had one, and a partially filled one goes to its own lane if it had one (it stays there until
    ///      spent), else to a free inline lane when its amount fits 57 bits, else to its own lane. An order filled in
    ///      one go thus writes one bit, and the usual partial fill no lane slot of its own (a fresh slot: 22,100).
    function _flushNonces(uint256 p) private {
        mapping(uint256 => uint256) storage f = S.store().filled;
        assembly ("memory-safe") {
            let fslot := f.slot
            for {} p { p := and(mload(add(p, 0x20)), NR_LINK_MASK) } {
                let pw := mload(add(p, 0x20))
                if and(pw, NR_DIRTY) {
                    let key := mload(add(p, 0x40))
                    let nonce := and(key, 0xffffffffffffffff)
                    let owner := shr(96, shl(32, key)) // bits 64..223; no 160-bit mask (computed at run time)
                    let v := and(shr(NR_FILLED_SHIFT, pw), NR_FILLED_MASK)
                    let st0 := and(shr(NR_ST0_SHIFT, pw), 3)
                    mstore(0, or(shl(255, 1), or(shl(57, owner), shr(7, nonce))))
                    mstore(0x20, fslot)
                    let sslot := keccak256(0, 0x40)
                    let i := and(nonce, 127)
                    let w0 := sload(sslot)
                    let w := or(w0, shl(i, 1))
                    if eq(st0, 1) {
                        // the inline lane that holds it (loaded so by _filled; no other record takes it meanwhile)
                        switch and(iszero(iszero(and(w, shl(128, M57)))), eq(shr(185, and(w, LANE0)), i))
                        case 1 { w := and(w, not(LANE0)) }
                        default { w := and(w, not(shl(64, LANE0))) }
                    }
                    let own := eq(st0, 3) // the amount lives (or goes) in the nonce's own lane
                    if iszero(or(own, eq(v, SPENT))) {
                        let lane := or(v, shl(57, i))
                        switch or(gt(v, M57), and(iszero(iszero(and(w, shl(128, M57)))), iszero(iszero(and(w, shl(192, M57))))))
                        case 1 { own := 1 } // too large for an inline lane, or both hold partially filled nonces
                        default {
                            switch and(w, shl(128, M57))
                            case 0 { w := or(and(w, not(LANE0)), shl(128, lane)) }
                            default { w := or(and(w, not(shl(64, LANE0))), shl(192, lane)) }
                        }
                    }
                    if iszero(eq(w, w0)) { sstore(sslot, w) }
                    if own {
                        // v < 2**64 here, or SPENT: the lane is emptied (partially filled amounts are > 0)
                        if eq(v, SPENT) { v := 0 }
                        mstore(0, or(shl(62, owner), shr(2, nonce)))
                        mstore(0x20, fslot)
                        let lslot := keccak256(0, 0x40)
                        let lshift := shl(6, and(nonce, 3))
                        let lw := sload(lslot)
                        sstore(lslot, or(and(lw, not(shl(lshift, 0xffffffffffffffff))), shl(lshift, v)))
                    }
                }
            }
        }
    }

    /// @dev Writes the open interest of the markets fills changed (no other item reads or writes it).
    function _flushOi(Ctx memory c) private {
        uint256 bits = c.oiDirty;
        for (uint256 m = 0; bits != 0; ++m) {
            if (bits & 1 != 0) S.store().markets[m].openInterest = uint128(c.m[m].oi - 1);
            bits >>= 1;
        }
    }

    /// @dev Empties the batch's nonce and account records (after a flush), so later fills reload from storage.
    function _clearCache(Ctx memory c) private pure {
        uint256[] memory hm = c.hm;
        assembly ("memory-safe") {
            calldatacopy(add(hm, 0x20), calldatasize(), shl(5, mload(hm))) // zeroes
        }
        c.nonces = 0;
        c.accts = 0;
    }

    /// @dev REDUCE_ONLY, range (INVALID_ITEM), OPEN_INTEREST_CAP, ORACLE_UNAVAILABLE, INSUFFICIENT_MARGIN,
    ///      then applies the fill. A fill market without a price is accepted only as a strict reduction of
    ///      both sides (reduce-only mode, §9.8).
    function _fillApply(
        Ctx memory c,
        Side memory t,
        Side memory k,
        MarketCache memory mc,
        uint256 fillSize,
        uint256 fillPrice
    ) private returns (uint8) {
        uint256 m = t.market;
        {
            uint256 cash;
            unchecked {
                cash = fillSize * fillPrice / uint256(MarginMath.NOTIONAL_DIV); // both < 2**64
            }
            uint256 bad = _sideT(m, mc, fillSize, cash) | _sideK(m, mc, fillSize, cash);
            if (bad & 1 != 0) return R_REDUCE_ONLY;
            if (bad != 0) return R_INVALID_ITEM;
        }

        // open interest = total long size, held in memory for the batch (_flushOi)
        uint256 newOi;
        {
            uint256 oi1 = mc.oi;
            if (oi1 == 0) oi1 = uint256(S.store().markets[m].openInterest) + 1;
            bool capped;
            // newOi = max(oi1 - 1 + delta, 0) with delta the sum over both sides of max(newSize, 0) - max(s, 0), capped
            // when delta > 0 and newOi > oiCap. Unchecked: sizes < 2**80, open interest < 2**128. Side fields: s 14,
            // newSize 20; MarketCache field oiCap 5.
            assembly ("memory-safe") {
                let v := 0
                let a := mload(T_NEW_SIZE)
                if sgt(a, 0) { v := a }
                a := mload(T_OLD_SIZE)
                if sgt(a, 0) { v := sub(v, a) }
                a := mload(K_NEW_SIZE)
                if sgt(a, 0) { v := add(v, a) }
                a := mload(K_OLD_SIZE)
                if sgt(a, 0) { v := sub(v, a) }
                a := add(sub(oi1, 1), v)
                if slt(a, 0) { a := 0 }
                newOi := a
                capped := and(sgt(v, 0), gt(a, mload(add(mc, 0xa0))))
            }
            if (capped) return R_OPEN_INTEREST_CAP;
        }

        bool cached;
        // the usual case, one test: market m's price and every price both headers need are cached and good (Ctx
        // fields okMarkets 18, okAssets 19; Side field hdr 13; header bits: markets from 128, assets from 160)
        assembly ("memory-safe") {
            let both := or(mload(T_HDR), mload(K_HDR))
            let okm := mload(C_OK_MARKETS)
            cached := iszero(
                or(
                    or(iszero(and(shr(m, okm), 1)), and(and(shr(128, both), 0xffffffff), not(okm))),
                    and(and(shr(160, both), 0xffff), not(mload(C_OK_ASSETS)))
                )
            )
        }
        if (!cached) {
            if ((c.okMarkets >> m) & 1 == 0 && _marketPrice(c, m) == BAD) {
                // Reduce-only mode (§9.8): with the market's oracle down, positions may still be closed or
                // shrunk, by a fill where both sides strictly reduce without flipping; anything else waits for a
                // fresh price. The fill price is then the only price of the market there is, and the solvency
                // test at that price keeps a close at an extreme price from leaving a deficit for the system.
                // the size deltas: newSize - s (both in range here)
                if (
                    !MarginMath.strictlyReduces(t.s, t.newSize - t.s)
                        || !MarginMath.strictlyReduces(k.s, k.newSize - k.s)
                ) {
                    return R_ORACLE_UNAVAILABLE;
                }
                uint8 r = _solventAtFillPrice(c, mc, fillPrice, t, k);
                // sums built at the fill price are no record of the market: both are rebuilt when next needed
                _dropAcct(t.id);
                _dropAcct(k.id);
                if (r != 0) return r;
                _commitFill(m, mc, fillSize, newOi);
                return 0;
            }
            {
                // _pricesOk's own first test for both headers at once: every price they need is cached and good
                uint256 both = t.hdr | k.hdr;
                if (S.marketBits(both) & ~c.okMarkets != 0 || S.assetBits(both) & ~c.okAssets != 0) {
                    (bool ok,) = _pricesOk(c, t.hdr);
                    if (ok) (ok,) = _pricesOk(c, k.hdr);
                    if (!ok) return R_ORACLE_UNAVAILABLE;
                }
            }
        }

        if (!_marginOkT(c, m, mc) || !_marginOkK(c, m, mc)) {
            // a record built by this fill holds its after-state (_marginOk): forget both, rebuilt when next needed
            _dropAcct(t.id);
            _dropAcct(k.id);
            return R_INSUFFICIENT_MARGIN;
        }

        _commitFill(m, mc, fillSize, newOi);
        return 0;
    }

    /// @dev Reduce-only mode's solvency test (§9.8), for a fill whose market m (cache `mc`) has no oracle price:
    ///      with m priced at the fill price and every other price each side's holdings need available
    ///      (ORACLE_UNAVAILABLE otherwise), both sides' maintenance health after the fill must be >= 0
    ///      (INSUFFICIENT_MARGIN otherwise, taker first). A rare path: it evaluates the two accounts from storage.
    function _solventAtFillPrice(Ctx memory c, MarketCache memory mc, uint256 fillPrice, Side memory t, Side memory k)
        private
        view
        returns (uint8 r)
    {
        // only in the cache entry, never in okMarkets: no other item's fast path can take it for an oracle price
        mc.price = fillPrice;
        // _pricesOk reads only the header's holding bits: the two headers' union asks for what either needs
        (bool ok,) = _pricesOk(c, t.hdr | k.hdr);
        if (!ok) r = R_ORACLE_UNAVAILABLE;
        else if (!_maintenanceOkAfter(c, t) || !_maintenanceOkAfter(c, k)) r = R_INSUFFICIENT_MARGIN;
        mc.price = BAD;
    }

    /// @dev Maintenance health >= 0 of side x's account after the fill (its new header and fill-market position).
    function _maintenanceOkAfter(Ctx memory c, Side memory x) private view returns (bool) {
        c.ovMarket = x.market;
        c.ovPos = x.newPos;
        _terms(c, x.id, x.newHdr);
        c.ovMarket = NONE;
        return c.base + int256(c.wMaint) >= int256(c.rMm);
    }

    /// @dev Applies a checked fill in fill market m (the sides' market) whose cache is `mc`. Per side: stores its new
    ///      header and market m's new position (snapshot: the current index, as a fill settles funding first),
    ///      S.storeHeader and S.storePosition in one pass over the slots _side read, and records `fillSize` more on the
    ///      order's (owner, nonce) batch record: reaching the order's size marks it spent. The two sides' blocks are
    ///      the same code with their own constant field addresses (T_, K_; test: SideCopies.t.sol), written out here:
    ///      a copy per side -107 gas per fill for 357 bytes, inline instead of two functions -71 for 2 bytes.
    function _commitFill(uint256 m, MarketCache memory mc, uint256 fillSize, uint256 newOi) private {
        uint256 epoch = mc.epoch;
        // side t
        {
            uint256 rare;
            // Side fields (words): size 7, id 12, newHdr 18, newPos 19, nr 24, ka 25, va 26, kb 27, vb 28
            assembly ("memory-safe") {
                {
                    let p := add(mload(T_NR), 0x20)
                    let w := mload(p)
                    // v <= order size < 2**64 (OVERFILL)
                    let v := add(and(shr(NR_FILLED_SHIFT, w), NR_FILLED_MASK), fillSize)
                    if eq(v, mload(T_SIZE)) { v := SPENT }
                    w := and(w, not(shl(NR_FILLED_SHIFT, NR_FILLED_MASK)))
                    mstore(p, or(or(w, shl(NR_FILLED_SHIFT, v)), NR_DIRTY))
                }
                // position lane: int48 size | int48 openNotional << 48 | epoch << 96, WIDE_POS when out of range
                let pos := mload(T_NEW_POS)
                let lane := 0
                if pos {
                    let sz := signextend(9, pos)
                    let on := signextend(10, shr(80, pos))
                    switch and(eq(signextend(5, sz), sz), eq(signextend(5, on), on))
                    case 1 {
                        lane := or(and(sz, 0xffffffffffff), or(shl(48, and(on, 0xffffffffffff)), shl(96, epoch)))
                    }
                    default {
                        lane := WIDE_POS
                        rare := 2
                    }
                }
                switch m
                case 0 { lane := shl(128, lane) }
                default {
                    let b := mload(T_VB)
                    switch and(m, 1)
                    case 0 { b := or(and(b, mload(LO_AT)), shl(128, lane)) }
                    default { b := or(and(b, mload(HI_AT)), lane) }
                    sstore(mload(T_KB), b)
                    lane := and(mload(T_VA), mload(HI_AT))
                }
                // header lane: int80 quote | bits << 80; WIDE_Q flags a wide header
                let hdr := mload(T_NEW_HDR)
                let q := signextend(15, hdr)
                let hl := or(and(q, 0xffffffffffffffffffff), shl(80, shr(128, hdr)))
                if iszero(and(eq(signextend(9, q), q), iszero(eq(q, WIDE_Q)))) {
                    rare := or(rare, 1)
                    hl := and(WIDE_Q, 0xffffffffffffffffffff)
                }
                sstore(mload(T_KA), or(hl, lane))
            }
            if (rare != 0) _storeRare(T_ID, m, rare);
        }
        // side k
        {
            uint256 rare;
            // Side fields (words): size 7, id 12, newHdr 18, newPos 19, nr 24, ka 25, va 26, kb 27, vb 28
            assembly ("memory-safe") {
                {
                    let p := add(mload(K_NR), 0x20)
                    let w := mload(p)
                    // v <= order size < 2**64 (OVERFILL)
                    let v := add(and(shr(NR_FILLED_SHIFT, w), NR_FILLED_MASK), fillSize)
                    if eq(v, mload(K_SIZE)) { v := SPENT }
                    w := and(w, not(shl(NR_FILLED_SHIFT, NR_FILLED_MASK)))
                    mstore(p, or(or(w, shl(NR_FILLED_SHIFT, v)), NR_DIRTY))
                }
                // position lane: int48 size | int48 openNotional << 48 | epoch << 96, WIDE_POS when out of range
                let pos := mload(K_NEW_POS)
                let lane := 0
                if pos {
                    let sz := signextend(9, pos)
                    let on := signextend(10, shr(80, pos))
                    switch and(eq(signextend(5, sz), sz), eq(signextend(5, on), on))
                    case 1 {
                        lane := or(and(sz, 0xffffffffffff), or(shl(48, and(on, 0xffffffffffff)), shl(96, epoch)))
                    }
                    default {
                        lane := WIDE_POS
                        rare := 2
                    }
                }
                switch m
                case 0 { lane := shl(128, lane) }
                default {
                    let b := mload(K_VB)
                    switch and(m, 1)
                    case 0 { b := or(and(b, mload(LO_AT)), shl(128, lane)) }
                    default { b := or(and(b, mload(HI_AT)), lane) }
                    sstore(mload(K_KB), b)
                    lane := and(mload(K_VA), mload(HI_AT))
                }
                // header lane: int80 quote | bits << 80; WIDE_Q flags a wide header
                let hdr := mload(K_NEW_HDR)
                let q := signextend(15, hdr)
                let hl := or(and(q, 0xffffffffffffffffffff), shl(80, shr(128, hdr)))
                if iszero(and(eq(signextend(9, q), q), iszero(eq(q, WIDE_Q)))) {
                    rare := or(rare, 1)
                    hl := and(WIDE_Q, 0xffffffffffffffffffff)
                }
                sstore(mload(K_KA), or(hl, lane))
            }
            if (rare != 0) _storeRare(K_ID, m, rare);
        }
        // both sides
        // c.oiDirty |= 1 << m; mc.oi = newOi + 1; c.feeAcc += t.fee + k.fee; c.fundDelta[m] += t.funding + k.funding.
        // Unchecked: open interest < 2**81; a fee < 2**160 and a side's funding below 2**137 in magnitude (§7 ranges),
        // summed over at most 2**17 sides; m < nMarkets, the length of c.fundDelta (_fill). Ctx fields (words):
        // feeAcc 15, fundDelta 16, oiDirty 26; Side fields funding 21, fee 22; MarketCache field oi 13.
        assembly ("memory-safe") {
            mstore(C_OI_DIRTY, or(mload(C_OI_DIRTY), shl(m, 1)))
            mstore(add(mc, 0x1a0), add(newOi, 1))
            mstore(C_FEE_ACC, add(mload(C_FEE_ACC), add(mload(T_FEE), mload(K_FEE))))
            let f := add(mload(T_FUNDING), mload(K_FUNDING))
            if f {
                let e := add(add(mload(C_FUND_DELTA), 0x20), shl(5, m))
                mstore(e, add(mload(e), f))
            }
        }
    }

    /// @dev _commitFill's rare cases for the side whose id is at memory address `idAt`: a wide header (rare & 1), a
    ///      wide position (rare & 2).
    function _storeRare(uint256 idAt, uint256 m, uint256 rare) private {
        uint256 id;
        uint256 newHdr;
        uint256 newPos;
        // Side fields (words): id 12, newHdr 18, newPos 19
        assembly ("memory-safe") {
            id := mload(idAt)
            newHdr := mload(add(idAt, 0xc0))
            newPos := mload(add(idAt, 0xe0))
        }
        mapping(uint256 => uint256) storage acct = S.store().acct;
        if (rare & 1 != 0) acct[id | 0x400] = newHdr;
        if (rare & 2 != 0) acct[S.positionKey(id, m)] = newPos;
    }

    /// @dev One side of a fill in market m (cache `mc`) before and after it, in one pass: x.hdr and x.s
    ///      (S.loadHeader, S.loadPosition with the market's cached index and epoch; the slots read are kept for
    ///      _commitFill; the old open notional and snapshot stay on the stack, _reducesHealth reloads the position),
    ///      then steps 1-4 of "Applying a trade": x.funding, x.fee and, when every value stays in its storage range,
    ///      x.newSize, x.newPos (S.packPosition) and x.newHdr (S.withQuote, market bit). Returns 0, or bit 0 set when x
    ///      is reduce-only and the fill does not strictly reduce its position (MarginMath.strictlyReduces), bit 1 when
    ///      a value leaves its storage range.
    ///      One copy per side (_sideT for t, _sideK for k): each reads its side's fields at constant addresses (T_*,
    ///      K_*), a PUSH and an MLOAD instead of DUP, PUSH, ADD, MLOAD: 440-fill batch of the matcher flow -178 gas per
    ///      fill for 646 bytes of code.
    function _sideT(uint256 m, MarketCache memory mc, uint256 fillSize, uint256 cash)
        private
        view
        returns (uint256 bad)
    {
        int256 s;
        int256 on;
        int256 snap;
        uint256 hdr;
        // MarketCache: cum at 0xe0, epoch at 0x1c0; Side fields (words): id 12, ka 25, va 26, kb 27, vb 28
        assembly ("memory-safe") {
            let id := mload(T_ID)
            mstore(0, id)
            mstore(0x20, mload(ACCT_SLOT_AT))
            let ka := keccak256(0, 0x40)
            let a := sload(ka)
            mstore(T_KA, ka)
            mstore(T_VA, a)
            let q := signextend(9, a)
            switch eq(q, WIDE_Q)
            case 0 { hdr := or(and(q, mload(LO_AT)), shl(128, shr(80, and(a, mload(LO_AT))))) }
            default { bad := 1 } // wide header
            let lane := shr(128, a)
            if m {
                mstore(0, or(id, or(0x300, shr(1, add(m, 1)))))
                let kb := keccak256(0, 0x40)
                let b := sload(kb)
                mstore(T_KB, kb)
                mstore(T_VB, b)
                switch and(m, 1)
                case 0 { lane := shr(128, b) }
                default { lane := and(b, mload(LO_AT)) }
            }
            if lane {
                switch and(iszero(eq(lane, mload(WIDE_POS_AT))), eq(shr(96, lane), mload(add(mc, 0x1c0))))
                case 1 {
                    s := signextend(5, lane)
                    on := signextend(5, shr(48, lane))
                    snap := mload(add(mc, 0xe0))
                }
                default { bad := or(bad, 2) } // wide position or an older funding epoch
            }
        }
        if (bad != 0) (hdr, s, on, snap) = _loadRare(T_ID, m, mc, bad, hdr, s, on, snap);
        // Ranges: cash < 2**128, fee < 2**160 (fee rate < 2**32), s and d < 2**80, on, cum, snap < 2**88,
        // quote < 2**128: nothing below can overflow int256. Divisions as in Solidity: sdiv truncates (the
        // trunc_div of open notional), funding is ceil_div by 1e10 (§3).
        // Side fields (words): market 3, isBuy 4, flags 11, hdr 13, s 14, on 15, snap 16, feePpm 17,
        // newHdr 18, newPos 19, newSize 20, funding 21, fee 22
        assembly ("memory-safe") {
            mstore(T_HDR, hdr)
            mstore(T_OLD_SIZE, s)
            bad := 0 // the rare-case bits are handled
            {
                let fee := div(mul(cash, mload(T_FEE_PPM)), 1000000)
                mstore(T_FEE, fee)
                if iszero(mload(T_IS_BUY)) {
                    // from here on fillSize is the size delta d and cash the signed cash: positive for the buyer
                    fillSize := sub(0, fillSize)
                    cash := sub(0, cash)
                }
                // reduce-only: s and d of opposite signs, d != 0 and |d| <= |s|
                if and(mload(T_FLAGS), 2) {
                    let as_ := s
                    if slt(s, 0) { as_ := sub(0, s) }
                    let ad := fillSize
                    if slt(ad, 0) { ad := sub(0, ad) }
                    bad := iszero(and(and(iszero(iszero(s)), iszero(iszero(ad))), and(iszero(eq(sgt(s, 0), sgt(fillSize, 0))), iszero(gt(ad, as_)))))
                }
                let funding := 0
                if s {
                    let f := mul(s, sub(mload(add(mc, 0xe0)), snap))
                    funding := sdiv(add(f, mul(sgt(f, 0), 9999999999)), 10000000000) // ceil: |f| < 2**170
                }
                mstore(T_FUNDING, funding)
                snap := sub(sub(sub(signextend(15, hdr), funding), cash), fee) // from here on snap is the new quote
            }
            let ns := add(s, fillSize) // new size
            let non := 0 // new open notional
            if ns {
                switch or(iszero(s), eq(sgt(s, 0), sgt(fillSize, 0)))
                case 1 { non := add(on, cash) }
                default {
                    // s and d have opposite signs here: |d| > |s| exactly when ns has d's sign
                    switch eq(sgt(ns, 0), sgt(fillSize, 0))
                    case 0 { non := sdiv(mul(on, ns), s) }
                    default { non := sdiv(mul(cash, ns), fillSize) }
                }
            }
            on := mload(add(mc, 0xe0)) // from here on `on` is the market's funding index
            switch and(
                and(eq(signextend(15, snap), snap), eq(signextend(9, ns), ns)),
                and(eq(signextend(10, non), non), eq(signextend(10, on), on))
            )
            case 0 { bad := or(bad, 2) }
            default {
                mstore(T_NEW_SIZE, ns)
                let pos := 0
                if ns {
                    pos := or(
                        and(ns, 0xffffffffffffffffffff),
                        or(shl(80, and(non, 0xffffffffffffffffffffff)), shl(168, and(on, 0xffffffffffffffffffffff)))
                    )
                }
                mstore(T_NEW_POS, pos)
                let h := xor(hdr, and(xor(hdr, snap), mload(LO_AT))) // hdr's high half, snap's low half
                let bit := shl(add(128, m), 1)
                switch ns
                case 0 { h := and(h, not(bit)) }
                default { h := or(h, bit) }
                mstore(T_NEW_HDR, h)
            }
        }
    }

    /// @dev _sideT for side k: the same code with the K_ field addresses (a copy per side reads every field at a
    ///      constant address, PUSH + MLOAD instead of DUP + PUSH + ADD + MLOAD; measured in _sideT's comment). Keep the
    ///      two identical up to T_/K_ (test: SideCopies.t.sol).
    function _sideK(uint256 m, MarketCache memory mc, uint256 fillSize, uint256 cash)
        private
        view
        returns (uint256 bad)
    {
        int256 s;
        int256 on;
        int256 snap;
        uint256 hdr;
        // MarketCache: cum at 0xe0, epoch at 0x1c0; Side fields (words): id 12, ka 25, va 26, kb 27, vb 28
        assembly ("memory-safe") {
            let id := mload(K_ID)
            mstore(0, id)
            mstore(0x20, mload(ACCT_SLOT_AT))
            let ka := keccak256(0, 0x40)
            let a := sload(ka)
            mstore(K_KA, ka)
            mstore(K_VA, a)
            let q := signextend(9, a)
            switch eq(q, WIDE_Q)
            case 0 { hdr := or(and(q, mload(LO_AT)), shl(128, shr(80, and(a, mload(LO_AT))))) }
            default { bad := 1 } // wide header
            let lane := shr(128, a)
            if m {
                mstore(0, or(id, or(0x300, shr(1, add(m, 1)))))
                let kb := keccak256(0, 0x40)
                let b := sload(kb)
                mstore(K_KB, kb)
                mstore(K_VB, b)
                switch and(m, 1)
                case 0 { lane := shr(128, b) }
                default { lane := and(b, mload(LO_AT)) }
            }
            if lane {
                switch and(iszero(eq(lane, mload(WIDE_POS_AT))), eq(shr(96, lane), mload(add(mc, 0x1c0))))
                case 1 {
                    s := signextend(5, lane)
                    on := signextend(5, shr(48, lane))
                    snap := mload(add(mc, 0xe0))
                }
                default { bad := or(bad, 2) } // wide position or an older funding epoch
            }
        }
        if (bad != 0) (hdr, s, on, snap) = _loadRare(K_ID, m, mc, bad, hdr, s, on, snap);
        // Ranges: cash < 2**128, fee < 2**160 (fee rate < 2**32), s and d < 2**80, on, cum, snap < 2**88,
        // quote < 2**128: nothing below can overflow int256. Divisions as in Solidity: sdiv truncates (the
        // trunc_div of open notional), funding is ceil_div by 1e10 (§3).
        // Side fields (words): market 3, isBuy 4, flags 11, hdr 13, s 14, on 15, snap 16, feePpm 17,
        // newHdr 18, newPos 19, newSize 20, funding 21, fee 22
        assembly ("memory-safe") {
            mstore(K_HDR, hdr)
            mstore(K_OLD_SIZE, s)
            bad := 0 // the rare-case bits are handled
            {
                let fee := div(mul(cash, mload(K_FEE_PPM)), 1000000)
                mstore(K_FEE, fee)
                if iszero(mload(K_IS_BUY)) {
                    // from here on fillSize is the size delta d and cash the signed cash: positive for the buyer
                    fillSize := sub(0, fillSize)
                    cash := sub(0, cash)
                }
                // reduce-only: s and d of opposite signs, d != 0 and |d| <= |s|
                if and(mload(K_FLAGS), 2) {
                    let as_ := s
                    if slt(s, 0) { as_ := sub(0, s) }
                    let ad := fillSize
                    if slt(ad, 0) { ad := sub(0, ad) }
                    bad := iszero(and(and(iszero(iszero(s)), iszero(iszero(ad))), and(iszero(eq(sgt(s, 0), sgt(fillSize, 0))), iszero(gt(ad, as_)))))
                }
                let funding := 0
                if s {
                    let f := mul(s, sub(mload(add(mc, 0xe0)), snap))
                    funding := sdiv(add(f, mul(sgt(f, 0), 9999999999)), 10000000000) // ceil: |f| < 2**170
                }
                mstore(K_FUNDING, funding)
                snap := sub(sub(sub(signextend(15, hdr), funding), cash), fee) // from here on snap is the new quote
            }
            let ns := add(s, fillSize) // new size
            let non := 0 // new open notional
            if ns {
                switch or(iszero(s), eq(sgt(s, 0), sgt(fillSize, 0)))
                case 1 { non := add(on, cash) }
                default {
                    // s and d have opposite signs here: |d| > |s| exactly when ns has d's sign
                    switch eq(sgt(ns, 0), sgt(fillSize, 0))
                    case 0 { non := sdiv(mul(on, ns), s) }
                    default { non := sdiv(mul(cash, ns), fillSize) }
                }
            }
            on := mload(add(mc, 0xe0)) // from here on `on` is the market's funding index
            switch and(
                and(eq(signextend(15, snap), snap), eq(signextend(9, ns), ns)),
                and(eq(signextend(10, non), non), eq(signextend(10, on), on))
            )
            case 0 { bad := or(bad, 2) }
            default {
                mstore(K_NEW_SIZE, ns)
                let pos := 0
                if ns {
                    pos := or(
                        and(ns, 0xffffffffffffffffffff),
                        or(shl(80, and(non, 0xffffffffffffffffffffff)), shl(168, and(on, 0xffffffffffffffffffffff)))
                    )
                }
                mstore(K_NEW_POS, pos)
                let h := xor(hdr, and(xor(hdr, snap), mload(LO_AT))) // hdr's high half, snap's low half
                let bit := shl(add(128, m), 1)
                switch ns
                case 0 { h := and(h, not(bit)) }
                default { h := or(h, bit) }
                mstore(K_NEW_HDR, h)
            }
        }
    }

    /// @dev _side's rare cases for the side whose id is at memory address `idAt`: a wide header (rare & 1), a wide
    ///      position or one from an older funding epoch (rare & 2); `mc` is market m's cache (as _position). Returns
    ///      the header and the old size, open notional and snapshot, the given ones where not rare.
    function _loadRare(
        uint256 idAt,
        uint256 m,
        MarketCache memory mc,
        uint256 rare,
        uint256 hdr,
        int256 s,
        int256 on,
        int256 snap
    ) private view returns (uint256, int256, int256, int256) {
        uint256 id;
        assembly ("memory-safe") {
            id := mload(idAt)
        }
        if (rare & 1 != 0) hdr = S.store().acct[id | 0x400];
        if (rare & 2 != 0) (s, on, snap) = S.unpackPosition(S.loadPositionAt(id, m, mc.cum, mc.epoch));
        return (hdr, s, on, snap);
    }

    /// @dev Risk rule of §3: H_im(after) >= 0, or strictly reducing and H_im(after) >= H_im(before).
    ///      H_im = quote + B + W - haircut(P) - R over the sums of the account's per-batch record (_newAcct): the
    ///      record holds the sums and per-market terms before this fill (one built now leaves market m's terms at
    ///      zero), and the fill market's terms are swapped for the new position's in place, so the record holds
    ///      the state after the fill from here on. The sums are exact integers, so the result is the same as
    ///      summing every position again. A fill that fails after this (margin of either side) drops both
    ///      records (_fillApply), one that passes keeps exactly this state; any other item empties the map
    ///      (_clearCache), and prices are fixed for the batch. `mc` is market m's cache (c.m[m]).
    ///      One copy per side (as _sideT), with _find's lookup inline: -73 gas per fill for 416 bytes.
    function _marginOkT(Ctx memory c, uint256 m, MarketCache memory mc) private view returns (bool) {
        uint256 id;
        uint256 newHdr;
        uint256 pos;
        uint256 r;
        uint256 bucket;
        // Side fields id 12, newHdr 18, newPos 19; the record's lookup is _find's, inline (a call costs ~25 gas)
        assembly ("memory-safe") {
            id := mload(T_ID)
            newHdr := mload(T_NEW_HDR)
            pos := mload(T_NEW_POS)
            let hm := mload(C_HM)
            let h := and(shr(128, mul(id, 0x9e3779b97f4a7c15f39cc0605cedc8341082276bf3a27251f86c6a11d0c18e95)), sub(mload(hm), 1))
            bucket := add(add(hm, 0x20), shl(5, h))
            r := mload(bucket)
            for {} r {} {
                if eq(mload(add(r, 0x40)), id) { break }
                r := mload(r)
            }
        }
        if (r == 0) r = _newAcct(c, id, newHdr, m, bucket);
        (int256 b, uint256 p, uint256 q) = _contrib(mc, pos);
        int256 afterH;
        // Record fields (words): B 3, P 4, R 5, W 6, then (B, P, R) of market mm at 7 + 3 * mm; Ctx field haircut 4.
        // Each sum keeps the terms it holds, so it stays far inside int256 (|term| < 2**176, §7 ranges, at most 32
        // markets) and the steps are exact; the health sum's bounds are _health's.
        assembly ("memory-safe") {
            let t := add(r, add(0xe0, mul(m, 0x60)))
            let old := mload(t)
            mstore(t, b)
            b := sub(add(mload(add(r, 0x60)), b), old)
            mstore(add(r, 0x60), b)
            t := add(t, 0x20)
            old := mload(t)
            mstore(t, p)
            p := sub(add(mload(add(r, 0x80)), p), old)
            mstore(add(r, 0x80), p)
            t := add(t, 0x20)
            old := mload(t)
            mstore(t, q)
            q := sub(add(mload(add(r, 0xa0)), q), old)
            mstore(add(r, 0xa0), q)
            let h := mul(p, mload(C_HAIRCUT))
            if h { h := add(div(sub(h, 1), 1000000), 1) } // MarginMath.haircut's ceil_div by PPM
            afterH := sub(sub(add(add(signextend(15, newHdr), b), mload(add(r, 0xc0))), h), q)
        }
        if (afterH >= 0) return true;
        return _reducesHealth(c, T_ID, m, mc, r, afterH);
    }

    /// @dev _marginOkT for side k (K_ field addresses). Keep the two identical up to T_/K_ (test: SideCopies.t.sol).
    function _marginOkK(Ctx memory c, uint256 m, MarketCache memory mc) private view returns (bool) {
        uint256 id;
        uint256 newHdr;
        uint256 pos;
        uint256 r;
        uint256 bucket;
        // Side fields id 12, newHdr 18, newPos 19; the record's lookup is _find's, inline (a call costs ~25 gas)
        assembly ("memory-safe") {
            id := mload(K_ID)
            newHdr := mload(K_NEW_HDR)
            pos := mload(K_NEW_POS)
            let hm := mload(C_HM)
            let h := and(shr(128, mul(id, 0x9e3779b97f4a7c15f39cc0605cedc8341082276bf3a27251f86c6a11d0c18e95)), sub(mload(hm), 1))
            bucket := add(add(hm, 0x20), shl(5, h))
            r := mload(bucket)
            for {} r {} {
                if eq(mload(add(r, 0x40)), id) { break }
                r := mload(r)
            }
        }
        if (r == 0) r = _newAcct(c, id, newHdr, m, bucket);
        (int256 b, uint256 p, uint256 q) = _contrib(mc, pos);
        int256 afterH;
        // Record fields (words): B 3, P 4, R 5, W 6, then (B, P, R) of market mm at 7 + 3 * mm; Ctx field haircut 4.
        // Each sum keeps the terms it holds, so it stays far inside int256 (|term| < 2**176, §7 ranges, at most 32
        // markets) and the steps are exact; the health sum's bounds are _health's.
        assembly ("memory-safe") {
            let t := add(r, add(0xe0, mul(m, 0x60)))
            let old := mload(t)
            mstore(t, b)
            b := sub(add(mload(add(r, 0x60)), b), old)
            mstore(add(r, 0x60), b)
            t := add(t, 0x20)
            old := mload(t)
            mstore(t, p)
            p := sub(add(mload(add(r, 0x80)), p), old)
            mstore(add(r, 0x80), p)
            t := add(t, 0x20)
            old := mload(t)
            mstore(t, q)
            q := sub(add(mload(add(r, 0xa0)), q), old)
            mstore(add(r, 0xa0), q)
            let h := mul(p, mload(C_HAIRCUT))
            if h { h := add(div(sub(h, 1), 1000000), 1) } // MarginMath.haircut's ceil_div by PPM
            afterH := sub(sub(add(add(signextend(15, newHdr), b), mload(add(r, 0xc0))), h), q)
        }
        if (afterH >= 0) return true;
        return _reducesHealth(c, K_ID, m, mc, r, afterH);
    }

    /// @dev _marginOk's second test for a side whose health after the fill (`afterH`, record `r`) is negative:
    ///      strictly reducing and not below the health before, which is the record's sums with market m's new
    ///      terms swapped back for the old position's.
    function _reducesHealth(Ctx memory c, uint256 idAt, uint256 m, MarketCache memory mc, uint256 r, int256 afterH)
        private
        view
        returns (bool)
    {
        // the side's fields (words) id 12, hdr 13, s 14 and newSize 20 at `idAt` + 0x20 * (field - 12)
        {
            int256 s = int256(_at(idAt + 0x40));
            if (!MarginMath.strictlyReduces(s, int256(_at(idAt + 0x100)) - s)) return false; // the size delta
        }
        // the position before the fill: storage still holds it (_commitFill comes after both sides' checks)
        (int256 b, uint256 p, uint256 q) = _contrib(mc, S.loadPositionAt(_at(idAt), m, mc.cum, mc.epoch));
        uint256 w;
        // record fields as in _marginOk; exact for the same reason
        assembly ("memory-safe") {
            let t := add(r, add(0xe0, mul(m, 0x60)))
            b := sub(add(mload(add(r, 0x60)), b), mload(t))
            p := sub(add(mload(add(r, 0x80)), p), mload(add(t, 0x20)))
            q := sub(add(mload(add(r, 0xa0)), q), mload(add(t, 0x40)))
            w := mload(add(r, 0xc0))
        }
        return afterH >= _health(c, S.quoteOf(_at(idAt + 0x20)), b, w, p, q);
    }

    /// @dev H_im = quote + B + W - haircut(P) - R (the same integers as _terms).
    function _health(Ctx memory c, int256 quote, int256 b, uint256 w, uint256 p, uint256 r)
        private
        pure
        returns (int256)
    {
        uint256 h = MarginMath.haircut(p, c.haircut);
        // unchecked: |quote| < 2**127, |b| < 2**181 (at most 32 terms below 2**176), w < 2**241
        // (both paths of _wInit), h < 2**213 and r < 2**180 (32 requirements, each at most N < 2**175), so the sum
        // stays far inside int256
        unchecked {
            return quote + b + int256(w) - int256(h) - int256(r);
        }
    }

    /// @dev A new batch record of sub-account `id` (header `hdr`) at the head of `bucket`: next, link (unused), key
    ///      (id), B = sum (PV - A), P = sum max(PV - openNotional, 0), R = sum R_im over its positions, W = sum
    ///      W_a^init, then per market the terms (PV - A, max(PV - openNotional, 0), R_im) of its position, zeros
    ///      without one. Market m's terms and its part of the sums are left at zero for the fill (_marginOk).
    ///      All prices the header needs must have been checked (_pricesOk).
    function _newAcct(Ctx memory c, uint256 id, uint256 hdr, uint256 m, uint256 bucket)
        private
        view
        returns (uint256 r)
    {
        uint256 w = _wInit(c, id, hdr);
        uint256 size;
        unchecked {
            size = 0xe0 + c.nMarkets * 0x60; // nMarkets <= 32
            c.accts += 1; // at most one per sub-account of the batch
        }
        assembly ("memory-safe") {
            r := mload(0x40)
            mstore(0x40, add(r, size))
            calldatacopy(r, calldatasize(), size) // zeroes (memory past the free pointer may hold scratch)
            mstore(r, mload(bucket))
            mstore(add(r, 0x40), id)
            mstore(add(r, 0xc0), w)
            mstore(bucket, r)
        }
        uint256 bits = S.marketBits(hdr) & ~(uint256(1) << m);
        // unchecked: mm < 32
        for (uint256 mm = 0; bits != 0; mm = _inc(mm)) {
            if (bits & 1 != 0) {
                MarketCache memory mcm = c.m[mm];
                (int256 b, uint256 p, uint256 q) = _contrib(mcm, _lanePosition(id, mm, mcm));
                // sums of terms each below 2**176 in magnitude (as in _marginOk): exact
                assembly ("memory-safe") {
                    mstore(add(r, 0x60), add(mload(add(r, 0x60)), b))
                    mstore(add(r, 0x80), add(mload(add(r, 0x80)), p))
                    mstore(add(r, 0xa0), add(mload(add(r, 0xa0)), q))
                    let t := add(r, add(0xe0, mul(mm, 0x60)))
                    mstore(t, b)
                    mstore(add(t, 0x20), p)
                    mstore(add(t, 0x40), q)
                }
            }
            bits >>= 1;
        }
    }

    /// @dev S.loadPositionAt(id, m, mc.cum, mc.epoch) (_position) for _newAcct: a compact lane of the market's current
    ///      funding epoch decoded here, as _side decodes the fill market's (S.positionOfLane, S.packPosition: size and
    ///      open notional int48 in the lane, snapshot the index, an int88 like every open notional); a wide position
    ///      or an older epoch through S.loadPositionAt.
    function _lanePosition(uint256 id, uint256 m, MarketCache memory mc) private view returns (uint256 pos) {
        bool rare;
        // MarketCache: cum at 0xe0, epoch at 0x1c0. Lanes (S.laneSlot): market 0 in the high half of the header's
        // slot, market m >= 1 in slot id | 0x300 | (m + 1) / 2, high half for even m
        assembly ("memory-safe") {
            let key := id
            if m { key := or(id, or(0x300, shr(1, add(m, 1)))) }
            mstore(0, key)
            mstore(0x20, mload(ACCT_SLOT_AT))
            let lane := sload(keccak256(0, 0x40))
            switch and(m, 1)
            case 0 { lane := shr(128, lane) }
            default { lane := and(lane, mload(LO_AT)) }
            if lane {
                switch and(iszero(eq(lane, mload(WIDE_POS_AT))), eq(shr(96, lane), mload(add(mc, 0x1c0))))
                case 1 {
                    let sz := signextend(5, lane)
                    if sz {
                        pos := or(
                            or(and(sz, 0xffffffffffffffffffff), shl(80, and(signextend(5, shr(48, lane)), 0xffffffffffffffffffffff))),
                            shl(168, and(mload(add(mc, 0xe0)), 0xffffffffffffffffffffff))
                        )
                    }
                }
                default { rare := 1 }
            }
        }
        if (rare) pos = S.loadPositionAt(id, m, mc.cum, mc.epoch);
    }

    /// @dev The memory word at `a`.
    function _at(uint256 a) private pure returns (uint256 v) {
        assembly ("memory-safe") {
            v := mload(a)
        }
    }

    function _inc(uint256 i) private pure returns (uint256) {
        unchecked {
            return i + 1;
        }
    }

    /// @dev Forgets the batch record of `id`, if any (a zero key never matches: ids are non-zero).
    function _dropAcct(uint256 id) private pure {
        (uint256 r,) = _find(id);
        assembly ("memory-safe") {
            if r { mstore(add(r, 0x40), 0) }
        }
    }

    /// @dev Terms of one packed position in a market with cached price, funding index, tiers and K table `mc`:
    ///      b = PV - A, u = max(PV - openNotional, 0), req = R_im (§3, same roundings as MarginMath).
    ///      Unchecked: |size| < 2**79, p < 2**128 (_fetch), openNotional, snapshot, index < 2**87, so every
    ///      product stays below 2**210.
    function _contrib(MarketCache memory mc, uint256 packed)
        private
        pure
        returns (int256 b, uint256 u, uint256 req)
    {
        assembly ("memory-safe") {
            let size := signextend(9, packed)
            if size {
                // floor and ceil by 1e10 as one truncating sdiv of the numerator moved away from zero by 1e10 - 1
                // on the side that rounds outward (|sp|, |fa| < 2**210: no overflow)
                let sp := mul(size, mload(add(mc, 0x20)))
                let pv := sdiv(sub(sp, mul(slt(sp, 0), 9999999999)), 10000000000) // floor
                let fa := mul(size, sub(mload(add(mc, 0xe0)), signextend(10, shr(168, packed))))
                let acc := sdiv(add(fa, mul(sgt(fa, 0), 9999999999)), 10000000000) // ceil
                b := sub(pv, acc)
                let v := sub(pv, signextend(10, shr(80, packed)))
                if sgt(v, 0) { u := v }
                if slt(sp, 0) { sp := sub(0, sp) }
                let n := div(add(sp, 9999999999), 10000000000)
                // marginal tiers (caps strictly increasing, the last one unbounded): with
                // cap_{i-1} < n <= cap_i, R = K_i + ceil((n - cap_{i-1}) * imf_i / PPM) (K: MarketCache.kIm)
                let caps := mload(add(mc, 0x120))
                let last := sub(mload(add(mc, 0x100)), 1)
                let i := 0
                let lo := 0
                for {} lt(i, last) { i := add(i, 1) } {
                    let cap := mload(add(caps, shl(5, i)))
                    if iszero(gt(n, cap)) { break }
                    lo := cap
                }
                let x := mul(sub(n, lo), mload(add(mload(add(mc, 0x140)), shl(5, i))))
                req := add(mload(add(mload(add(mc, 0x180)), shl(5, i))), div(add(x, 999999), 1000000)) // x < 2**207
            }
        }
    }

    /// @dev sum_a W_a^init. Fast path in assembly while every balance is below 2**96: price < 2**128 (_fetch)
    ///      so amount * price < 2**224, V_a * weight < 2**256 (weight is a uint32), each W_a < 2**237 and the
    ///      sum of at most 16 terms < 2**241, so nothing can overflow and the floors are those of MarginMath.
    ///      A larger balance (collateral balances are uint256, §7) takes the checked loop, as in _terms.
    function _wInit(Ctx memory c, uint256 id, uint256 hdr) private view returns (uint256 wInit) {
        uint256 abits = S.assetBits(hdr);
        AssetCache[] memory as_ = c.a;
        bool big;
        assembly ("memory-safe") {
            for { let a := 0 } abits { a := add(a, 1) } {
                if and(abits, 1) {
                    mstore(0, or(id, or(0x200, a)))
                    mstore(0x20, mload(ACCT_SLOT_AT))
                    let amt := sload(keccak256(0, 0x40))
                    if shr(96, amt) {
                        big := 1
                        break
                    }
                    // AssetCache fields: loaded, price (+0x20), feedId, unit (+0x60), wInit (+0x80), wMaint
                    let ac := mload(add(add(as_, 0x20), shl(5, a)))
                    let v := div(mul(amt, mload(add(ac, 0x20))), mload(add(ac, 0x60)))
                    wInit := add(wInit, div(mul(v, mload(add(ac, 0x80))), 1000000))
                }
                abits := shr(1, abits)
            }
        }
        if (big) return _wInitChecked(c, id, hdr);
    }

    /// @dev sum_a W_a^init (checked, as in _terms).
    function _wInitChecked(Ctx memory c, uint256 id, uint256 hdr) private view returns (uint256 wInit) {
        mapping(uint256 => uint256) storage acct = S.store().acct;
        uint256 abits = S.assetBits(hdr);
        for (uint256 a = 0; abits != 0; ++a) {
            if (abits & 1 != 0) {
                AssetCache memory ac = c.a[a];
                uint256 v = MarginMath.collateralValue(acct[id | 0x200 | a], ac.price, ac.unit);
                wInit += MarginMath.weighted(v, ac.wInit);
            }
            abits >>= 1;
        }
    }

    // ------------------------------------------------------------------------------------------ others

    function _withdraw(Ctx memory c, uint256 o, uint64 seq) private returns (uint8) {
        address owner = B.addr(o);
        uint256 asset = B.u(o + 24, 2);
        uint256 amount = B.u(o + 26, 16);
        if (asset >= c.nAssets || amount == 0) return R_INVALID_ITEM;
        bytes32 d = H.digest(
            c.domain,
            H.withdrawalStructHash(owner, B.u(o + 20, 4), asset, amount, B.u(o + 42, 8), B.u(o + 50, 8))
        );
        if (H.recoverCd(d, o + 58) != owner || owner == address(0)) return R_BAD_SIGNATURE;
        if (block.timestamp > B.u(o + 50, 8)) return R_EXPIRED;
        if (S.store().usedDigest[d]) return R_REPLAYED;
        uint256 id = S.acctId(owner, B.u(o + 20, 4));
        (uint8 reason, uint256 newHdr, uint256 newAmt) = _prepareDebit(c, id, asset, amount);
        if (reason != 0) return reason;
        if (!SafeERC20.trySafeTransfer(IERC20(_token(asset)), owner, amount)) return R_TRANSFER_FAILED;
        _commitDebit(id, asset, amount, newHdr, newAmt);
        S.store().usedDigest[d] = true;
        emit Withdrawn(owner, uint32(B.u(o + 20, 4)), uint16(asset), amount, seq);
        return 0;
    }

    function _transferDigest(Ctx memory c, uint256 o) private pure returns (bytes32) {
        return H.digest(
            c.domain,
            H.transferStructHash(
                B.addr(o), B.u(o + 20, 4), B.u(o + 24, 4), B.u(o + 28, 2), B.u(o + 30, 16), B.u(o + 46, 8), B.u(o + 54, 8)
            )
        );
    }

    function _transfer(Ctx memory c, uint256 o) private returns (uint8) {
        address owner = B.addr(o);
        uint256 asset = B.u(o + 28, 2);
        uint256 amount = B.u(o + 30, 16);
        if (asset >= c.nAssets || amount == 0 || B.u(o + 20, 4) == B.u(o + 24, 4)) return R_INVALID_ITEM;
        bytes32 d = _transferDigest(c, o);
        if (H.recoverCd(d, o + 62) != owner || owner == address(0)) return R_BAD_SIGNATURE;
        if (block.timestamp > B.u(o + 54, 8)) return R_EXPIRED;
        S.Layout storage l = S.store();
        if (l.usedDigest[d]) return R_REPLAYED;
        uint256 id = S.acctId(owner, B.u(o + 20, 4));
        (uint8 reason, uint256 newHdr, uint256 newAmt) = _prepareDebit(c, id, asset, amount);
        if (reason != 0) return reason;
        uint256 to = S.acctId(owner, B.u(o + 24, 4));
        uint256 toHdr = S.loadHeader(to);
        if (asset == 0) {
            int256 q = S.quoteOf(toHdr) + int256(amount);
            if (!S.inQuoteRange(q)) return R_INVALID_ITEM;
            toHdr = S.withQuote(toHdr, q);
        }
        // commit source (totalDeposited is unchanged by a transfer)
        S.storeHeader(id, newHdr);
        if (asset != 0) {
            l.acct[S.collateralKey(id, asset)] = newAmt;
            l.acct[S.collateralKey(to, asset)] += amount;
            toHdr |= uint256(1) << (160 + asset);
        }
        S.storeHeader(to, toHdr);
        l.usedDigest[d] = true;
        return 0;
    }

    /// @dev The funding time budget: the per-item clamp alone would let an operator repeat FUNDING items and move
    ///      any amount between a market's longs and shorts. With a fundingPeriod, the index moves by at most
    ///      maxFundingPpm (at the oracle price) per period on average: budget accrues with block time, at most
    ///      FUNDING_BACKLOG periods of it (a settlement outage does not cost honest funding), and an item beyond
    ///      what is left is clamped to it (FundingUpdated carries the rate applied). `rate` is within +-maxRate.
    ///      Returns the rate and the market's new budget clock (0: unchanged), written once the item applies.
    function _fundingBudget(uint256 m, int256 rate, int256 maxRate) private view returns (int256, uint256) {
        S.Market storage sm = S.store().markets[m];
        uint256 period = sm.fundingPeriod;
        if (period == 0 || rate == 0) return (rate, 0);
        uint256 start = sm.fundingClock;
        uint256 span = period * S.FUNDING_BACKLOG;
        if (block.timestamp > span && start < block.timestamp - span) start = block.timestamp - span;
        uint256 avail = block.timestamp > start ? block.timestamp - start : 0;
        uint256 mag = rate < 0 ? uint256(-rate) : uint256(rate);
        uint256 maxMag = uint256(maxRate); // > 0: rate != 0 after the per-item clamp
        uint256 allowed = (avail * maxMag) / period;
        if (mag > allowed) mag = allowed;
        // the seconds this item uses, rounded up: never more than avail (mag * period <= avail * maxMag). A clock of
        // 0 (start 0, nothing used) equals the stored one, so 0 can mean "unchanged".
        uint256 clock = start + (mag * period + maxMag - 1) / maxMag;
        return (rate < 0 ? -int256(mag) : int256(mag), clock);
    }

    function _funding(Ctx memory c, uint256 o) private returns (uint8) {
        uint256 m = B.u(o, 4);
        int256 rate = int256(int32(uint32(B.u(o + 4, 4))));
        if (m >= c.nMarkets) return R_INVALID_ITEM;
        uint256 p = _marketPrice(c, m);
        if (p == BAD) return R_ORACLE_UNAVAILABLE;
        int256 maxRate = int256(c.m[m].maxFunding);
        if (rate > maxRate) rate = maxRate;
        if (rate < -maxRate) rate = -maxRate;
        uint256 clock;
        (rate, clock) = _fundingBudget(m, rate, maxRate);
        MarketCache memory mc = c.m[m];
        int256 cum = mc.cum + DivMath.truncDiv(rate * int256(p), int256(MarginMath.PPM));
        if (cum < S.ON_MIN || cum > S.ON_MAX) return R_INVALID_ITEM; // a rejected item spends no budget
        if (clock != 0) S.store().markets[m].fundingClock = uint40(clock);
        S.setCumulativeFunding(m, cum);
        mc.cum = cum;
        mc.epoch += 1;
        emit FundingUpdated(uint32(m), int32(rate), cum);
        return 0;
    }
}
