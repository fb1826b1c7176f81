// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IOracleAdapter} from "../interfaces/IOracleAdapter.sol";
import {IClearinghouseEvents} from "../interfaces/IClearinghouseEvents.sol";
import {ForcedRequest} from "../interfaces/ICrossbookTypes.sol";
import {ClearinghouseStorage as S} from "./ClearinghouseStorage.sol";
import {MarginMath} from "../lib/MarginMath.sol";

/// @title MarginEngine
/// @notice Health evaluation over packed storage with a per-call price/config cache, and the debit path
///         shared by signed withdrawals, FORCED items and on-chain escape-hatch executions.
abstract contract MarginEngine is IClearinghouseEvents {
    IOracleAdapter internal immutable _oracle;
    address internal immutable _quoteToken;

    uint256 internal constant BAD = type(uint256).max;
    uint256 internal constant NONE = type(uint256).max;

    // Reject reasons (docs/protocol.md §5).
    uint8 internal constant R_BAD_SIGNATURE = 1;
    uint8 internal constant R_EXPIRED = 2;
    uint8 internal constant R_OVERFILL = 3;
    uint8 internal constant R_PRICE_LIMIT = 4;
    uint8 internal constant R_FEE_TOO_HIGH = 5;
    uint8 internal constant R_REDUCE_ONLY = 6;
    uint8 internal constant R_INSUFFICIENT_MARGIN = 7;
    uint8 internal constant R_INVALID_ITEM = 8;
    uint8 internal constant R_ORACLE_UNAVAILABLE = 9;
    uint8 internal constant R_OPEN_INTEREST_CAP = 10;
    uint8 internal constant R_REPLAYED = 11;
    uint8 internal constant R_INSUFFICIENT_BALANCE = 12;
    uint8 internal constant R_TRANSFER_FAILED = 13;

    struct MarketCache {
        bool loaded;
        uint256 price; // 0: not fetched yet, BAD: unavailable
        uint256 feedId;
        uint256 tickSize;
        uint256 lotSize;
        uint256 oiCap;
        uint256 maxFunding;
        int256 cum; // cumulative funding index (kept in sync by FUNDING items)
        uint256 tierCount;
        uint256[4] caps;
        uint256[4] imf;
        uint256[4] mmf;
        // kIm[i] = sum_{j<i} ceil((caps[j] - caps[j-1]) * imf[j] / PPM): the initial requirement of tiers
        // below i taken in full (settlement's incremental health, SettlementModule._contrib)
        uint256[4] kIm;
        // settlement only: open interest + 1 while the batch holds it in memory (0: not read yet); written back
        // once at the end of the batch for the markets in Ctx.oiDirty (SettlementModule._flushOi)
        uint256 oi;
        uint256 epoch; // funding epoch of `cum` (ClearinghouseStorage: position lanes refer to epochs)
    }

    struct AssetCache {
        bool loaded;
        uint256 price; // 0: not fetched yet, BAD: unavailable
        uint256 feedId;
        uint256 unit; // 10 ** (decimals + 2)
        uint256 wInit;
        uint256 wMaint;
    }

    /// @dev Evaluation context: caches, health accumulators, one-slot overrides and batch accumulators.
    struct Ctx {
        MarketCache[] m;
        AssetCache[] a;
        uint256 nMarkets;
        uint256 nAssets;
        uint256 haircut;
        // health accumulators (filled by _terms)
        int256 base; // quote + sum PV - sum A
        uint256 wInit;
        uint256 wMaint;
        uint256 posPnl;
        uint256 rIm;
        uint256 rMm;
        // overrides of one position and one collateral balance (NONE = no override)
        uint256 ovMarket;
        uint256 ovPos;
        uint256 ovAsset;
        uint256 ovAmt;
        // batch accumulators
        uint256 feeAcc;
        int256[] fundDelta;
        bytes32 domain;
        // bit masks of markets / assets whose price is cached and available
        uint256 okMarkets;
        uint256 okAssets;
        // settlement only: a byte per order-table entry (32 a word): 0 unchecked, 1 signature good, 2 bad
        uint256[] sigs;
        uint256 nOrders; // settlement only: order-table entries
        uint256 tbl; // absolute calldata offset of the order table's first entry
        // settlement only: per-batch (owner, nonce) records (SettlementModule.Nonce): hash buckets of record
        // pointers and the head of the write-back list
        uint256[] hm;
        uint256 nonces;
        uint256 accts; // settlement only: number of account records in hm (SettlementModule._newAcct)
        uint256 oiDirty; // settlement only: bit mask of markets whose MarketCache.oi differs from storage
    }

    constructor(address oracle_, address quoteToken_) {
        _oracle = IOracleAdapter(oracle_);
        _quoteToken = quoteToken_;
    }

    function _newCtx() internal view returns (Ctx memory c) {
        S.Layout storage l = S.store();
        c.nMarkets = l.marketCount;
        c.nAssets = l.collateralCount;
        c.haircut = l.pnlHaircutPpm;
        c.m = new MarketCache[](c.nMarkets);
        c.a = new AssetCache[](c.nAssets);
        c.ovMarket = NONE;
        c.ovAsset = NONE;
    }

    /// @dev Loads a market's config into the cache on first use. (Helpers never return memory structs: the
    ///      legacy code generator would allocate a fresh zeroed struct per call for the return variable.)
    function _ensureMarket(Ctx memory c, uint256 m) internal view {
        MarketCache memory mc = c.m[m];
        if (mc.loaded) return;
        S.Market storage sm = S.store().markets[m];
        mc.loaded = true;
        mc.feedId = sm.feedId;
        mc.tickSize = sm.tickSize;
        mc.lotSize = sm.lotSize;
        mc.oiCap = sm.openInterestCap;
        mc.maxFunding = sm.maxFundingPpm;
        mc.cum = sm.cumulativeFunding;
        mc.epoch = sm.fundingEpoch;
        uint256 n = sm.tierCount;
        mc.tierCount = n;
        for (uint256 i = 0; i < n; ++i) {
            S.TierSlot storage t = sm.tiers[i];
            mc.caps[i] = t.notionalCap;
            mc.imf[i] = t.imfPpm;
            mc.mmf[i] = t.mmfPpm;
        }
        uint256[4] memory caps = mc.caps;
        uint256[4] memory imf = mc.imf;
        uint256[4] memory kIm = mc.kIm;
        // unchecked as the assembly that reads it: caps strictly increasing (config), cap < 2**128, imf < 2**32
        assembly ("memory-safe") {
            let k := 0
            let lo := 0
            for { let i := 0 } lt(add(i, 1), n) { i := add(i, 1) } {
                let cap := mload(add(caps, shl(5, i)))
                let x := mul(sub(cap, lo), mload(add(imf, shl(5, i))))
                k := add(k, add(div(x, 1000000), gt(mod(x, 1000000), 0)))
                lo := cap
                mstore(add(kIm, shl(5, add(i, 1))), k)
            }
        }
    }

    /// @dev Market oracle price (BAD when unavailable), fetched once per context.
    function _marketPrice(Ctx memory c, uint256 m) internal view returns (uint256 p) {
        MarketCache memory mc = c.m[m];
        if (!mc.loaded) _ensureMarket(c, m);
        p = mc.price;
        if (p == 0) {
            p = _fetch(mc.feedId);
            mc.price = p;
            if (p != BAD) c.okMarkets |= uint256(1) << m;
        }
    }

    /// @dev Collateral asset price (BAD when unavailable); loads the asset's config on first use.
    function _assetPrice(Ctx memory c, uint256 a) internal view returns (uint256) {
        AssetCache memory ac = c.a[a];
        if (ac.loaded) return ac.price;
        S.Collateral storage col = S.store().collaterals[a];
        ac.loaded = true;
        ac.feedId = col.feedId;
        ac.unit = 10 ** (uint256(col.decimals) + 2);
        ac.wInit = col.weightInitPpm;
        ac.wMaint = col.weightMaintPpm;
        uint256 p = _fetch(ac.feedId);
        ac.price = p;
        if (p != BAD) c.okAssets |= uint256(1) << a;
        return p;
    }

    function _fetch(uint256 feedId) internal view returns (uint256) {
        (bool ok, uint256 p) = _oracle.tryPrice(uint16(feedId));
        // The adapter bands prices to uint64; anything >= 2**128 cannot come from it and is refused, so the
        // margin maths may rely on p < 2**128.
        return ok && p != 0 && p <= type(uint128).max ? p : BAD;
    }

    /// @dev Checks that every price the header's holdings need is available. Returns the first bad feed.
    function _pricesOk(Ctx memory c, uint256 hdr) internal view returns (bool, uint256) {
        uint256 bits = S.marketBits(hdr);
        if (bits & ~c.okMarkets == 0 && S.assetBits(hdr) & ~c.okAssets == 0) return (true, 0);
        for (uint256 m = 0; bits != 0; ++m) {
            if (bits & 1 != 0 && _marketPrice(c, m) == BAD) return (false, c.m[m].feedId);
            bits >>= 1;
        }
        bits = S.assetBits(hdr);
        for (uint256 a = 0; bits != 0; ++a) {
            if (bits & 1 != 0 && _assetPrice(c, a) == BAD) return (false, c.a[a].feedId);
            bits >>= 1;
        }
        return (true, 0);
    }

    /// @dev Fills the health accumulators of `c` for sub-account `id` whose header is `hdr`, honouring the
    ///      overrides. All prices must have been checked with _pricesOk.
    function _terms(Ctx memory c, uint256 id, uint256 hdr) internal view {
        mapping(uint256 => uint256) storage acct = S.store().acct;
        c.base = S.quoteOf(hdr);
        c.wInit = 0;
        c.wMaint = 0;
        c.posPnl = 0;
        c.rIm = 0;
        c.rMm = 0;
        uint256 bits = S.marketBits(hdr);
        for (uint256 m = 0; bits != 0; ++m) {
            if (bits & 1 != 0) {
                _addPosition(c, m, m == c.ovMarket ? c.ovPos : _position(c, id, m));
            }
            bits >>= 1;
        }
        bits = S.assetBits(hdr);
        for (uint256 a = 0; bits != 0; ++a) {
            if (bits & 1 != 0) {
                uint256 amt = a == c.ovAsset ? c.ovAmt : acct[S.collateralKey(id, a)];
                AssetCache memory ac = c.a[a];
                uint256 v = MarginMath.collateralValue(amt, ac.price, ac.unit);
                c.wInit += MarginMath.weighted(v, ac.wInit);
                c.wMaint += MarginMath.weighted(v, ac.wMaint);
            }
            bits >>= 1;
        }
    }

    /// @dev Wide position of `id` in market m, whose config is cached (its index and epoch).
    function _position(Ctx memory c, uint256 id, uint256 m) internal view returns (uint256) {
        MarketCache memory mc = c.m[m];
        return S.loadPositionAt(id, m, mc.cum, mc.epoch);
    }

    function _addPosition(Ctx memory c, uint256 m, uint256 packed) private pure {
        (int256 size, int256 on, int256 snap) = S.unpackPosition(packed);
        if (size == 0) return;
        MarketCache memory mc = c.m[m];
        uint256 p = mc.price;
        int256 pv = MarginMath.positionValue(size, p);
        int256 acc = MarginMath.accruedFunding(size, mc.cum, snap);
        c.base += pv - acc;
        int256 u = pv - on;
        if (u > 0) c.posPnl += uint256(u);
        uint256 n = MarginMath.notional(size, p);
        c.rIm += MarginMath.tierRequirement(n, mc.tierCount, mc.caps, mc.imf);
        c.rMm += MarginMath.tierRequirement(n, mc.tierCount, mc.caps, mc.mmf);
    }

    function _initialEquity(Ctx memory c) internal pure returns (int256) {
        return c.base + int256(c.wInit) - int256(MarginMath.haircut(c.posPnl, c.haircut));
    }

    function _initialHealth(Ctx memory c) internal pure returns (int256) {
        return _initialEquity(c) - int256(c.rIm);
    }

    /// @dev Checks of a debit (withdrawal, forced withdrawal, transfer source): balance, prices of the
    ///      holdings left afterwards, initial health afterwards. Returns the new header and balance.
    function _prepareDebit(Ctx memory c, uint256 id, uint256 asset, uint256 amount)
        internal
        view
        returns (uint8 reason, uint256 newHdr, uint256 newAmt)
    {
        uint256 hdr = S.loadHeader(id);
        if (asset == 0) {
            int256 q = S.quoteOf(hdr);
            if (q <= 0 || amount > uint256(q)) return (R_INSUFFICIENT_BALANCE, 0, 0);
            newHdr = S.withQuote(hdr, q - int256(amount));
        } else {
            uint256 bal = S.store().acct[S.collateralKey(id, asset)];
            if (amount > bal) return (R_INSUFFICIENT_BALANCE, 0, 0);
            newAmt = bal - amount;
            newHdr = newAmt == 0 ? hdr & ~(uint256(1) << (160 + asset)) : hdr;
        }
        (bool ok,) = _pricesOk(c, newHdr);
        if (!ok) return (R_ORACLE_UNAVAILABLE, 0, 0);
        if (asset != 0) {
            c.ovAsset = asset;
            c.ovAmt = newAmt;
        }
        _terms(c, id, newHdr);
        c.ovAsset = NONE;
        if (_initialHealth(c) < 0) return (R_INSUFFICIENT_MARGIN, 0, 0);
        return (0, newHdr, newAmt);
    }

    function _commitDebit(uint256 id, uint256 asset, uint256 amount, uint256 newHdr, uint256 newAmt) internal {
        S.Layout storage l = S.store();
        S.storeHeader(id, newHdr);
        if (asset != 0) l.acct[S.collateralKey(id, asset)] = newAmt;
        S.Collateral storage col = l.collaterals[asset];
        uint128 total = col.totalDeposited;
        col.totalDeposited = amount >= total ? 0 : total - uint128(amount);
    }

    function _token(uint256 asset) internal view returns (address) {
        return asset == 0 ? _quoteToken : S.store().collaterals[asset].token;
    }

    /// @dev Executes a pending forced-withdrawal request with all checks; returns a reject reason or 0.
    function _executeForced(Ctx memory c, uint64 requestId, uint64 seq) internal returns (uint8) {
        ForcedRequest storage r = S.store().requests[requestId];
        if (!r.pending) return R_REPLAYED;
        address owner = r.owner;
        uint32 sub = r.subaccount;
        uint16 asset = r.asset;
        uint256 amount = r.amount;
        uint256 id = S.acctId(owner, sub);
        (uint8 reason, uint256 newHdr, uint256 newAmt) = _prepareDebit(c, id, asset, amount);
        if (reason != 0) return reason;
        if (!SafeERC20.trySafeTransfer(IERC20(_token(asset)), owner, amount)) return R_TRANSFER_FAILED;
        _commitDebit(id, asset, amount, newHdr, newAmt);
        r.pending = false;
        emit Withdrawn(owner, sub, asset, amount, seq);
        emit ForcedWithdrawalExecuted(requestId);
        return 0;
    }
}
