// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IOracleAdapter} from "../interfaces/IOracleAdapter.sol";
import {IClearinghouseEvents} from "../interfaces/IClearinghouseEvents.sol";
import {Health} from "../interfaces/ICrossbookTypes.sol";
import {ClearinghouseStorage as S} from "./ClearinghouseStorage.sol";
import {MarginMath} from "../lib/MarginMath.sol";
import {DivMath} from "../lib/DivMath.sol";

/// @dev The two Clearinghouse views the module calls on itself (address(this) is the Clearinghouse under
///      delegatecall). Reusing health() instead of linking MarginEngine keeps this module small enough that the
///      Clearinghouse initcode, which embeds both modules, stays under the EIP-3860 limit.
interface IClearinghouseSelf {
    function health(address owner, uint32 subaccount) external view returns (Health memory);
    function hasRole(bytes32 role, address account) external view returns (bool);
}

/// @title LiquidationModule
/// @notice Liquidation, collateral liquidation, bad-debt settlement, auto-deleveraging and liquidation parameters
///         (docs/protocol.md §9). Runs only through delegatecall from the Clearinghouse, sharing its storage.
contract LiquidationModule is IClearinghouseEvents {
    using DivMath for int256;

    IOracleAdapter internal immutable _oracle;
    address private immutable _self;

    /// @notice Role allowed to auto-deleverage (keccak256("KEEPER_ROLE")), granted by the admin.
    bytes32 internal constant KEEPER_ROLE = keccak256("KEEPER_ROLE");
    uint256 internal constant PPM = 1_000_000;
    int256 internal constant IPPM = 1_000_000;
    int256 internal constant ND = 1e10; // NOTIONAL_DIV
    uint256 internal constant UND = 1e10;
    /// @dev Upper bound of the penalty (50%): a larger one would make the liquidation price meaningless.
    uint32 internal constant MAX_PENALTY = 500_000;

    /// @dev Working set of one liquidation (memory, to stay clear of stack-too-deep).
    struct Liq {
        uint256 tid; // target account id
        uint256 lid; // liquidator account id
        uint256 m;
        int256 s; // target size
        uint256 abs; // |s|
        uint256 p; // oracle price
        uint256 pL; // liquidation price
        uint256 insPpm;
        uint256 lot;
        uint256 tick;
        int256 e; // target equity E
        int256 r; // target maintenance requirement (all markets)
        int256 pv0;
        uint256 rm0;
        uint256 buf;
        uint256 tierCount;
        uint256[4] caps;
        uint256[4] mmf;
        int256 cum;
        int256 hImBefore; // liquidator's initial health before (only when it strictly reduces)
        uint256 x; // size taken
        int256 dL; // liquidator's size delta
        uint256 penalty;
        uint256 ins;
        uint256 cash;
        bool reduces; // the liquidator's position strictly shrinks without flipping
    }

    constructor(address oracle_) {
        _oracle = IOracleAdapter(oracle_);
        _self = address(this);
    }

    /// @dev OpenZeppelin ReentrancyGuardTransient's slot: the Clearinghouse forwarders return straight from
    ///      assembly (so they cannot run a modifier epilogue), hence the module takes the same guard itself.
    bytes32 private constant GUARD = 0x9b779b17422d0df92223018b32b4d1fa46e071723d6817e2486d003becc55f00;

    error ReentrancyGuardReentrantCall();

    modifier onlyDelegated() {
        if (address(this) == _self) revert DirectCallForbidden();
        _;
    }

    modifier guarded() {
        if (address(this) == _self) revert DirectCallForbidden();
        bool entered;
        assembly {
            entered := tload(GUARD)
        }
        if (entered) revert ReentrancyGuardReentrantCall();
        assembly {
            tstore(GUARD, 1)
        }
        _;
        assembly {
            tstore(GUARD, 0)
        }
    }

    // ------------------------------------------------------------------------------------------ liquidate

    /// @notice Takes over (part of) a liquidatable position at the liquidation price (protocol §9.2-9.4).
    /// @param owner Owner of the liquidated sub-account.
    /// @param subaccount The liquidated sub-account.
    /// @param market Market whose position is taken over.
    /// @param maxSize Most the caller is willing to take (size units).
    /// @param priceLimit Worst price the caller accepts (buying: price <= limit; selling: price >= limit).
    /// @param liquidatorSubaccount msg.sender's sub-account that receives the position.
    /// @return size Size taken over (unsigned).
    /// @return price Liquidation price.
    function liquidate(
        address owner,
        uint32 subaccount,
        uint32 market,
        uint64 maxSize,
        uint64 priceLimit,
        uint32 liquidatorSubaccount
    ) external guarded returns (uint64 size, uint64 price) {
        Liq memory v;
        v.tid = S.acctId(owner, subaccount);
        v.lid = S.acctId(msg.sender, liquidatorSubaccount);
        if (v.tid == v.lid) revert SelfLiquidation();
        _loadTarget(v, owner, subaccount, market);
        if (v.s > 0 ? v.pL > priceLimit : v.pL < priceLimit) revert PriceLimit();
        _execute(v, maxSize, liquidatorSubaccount);
        emit Liquidated(
            owner, subaccount, market, msg.sender, liquidatorSubaccount, -v.dL, uint64(v.pL), v.penalty, v.ins
        );
        return (uint64(v.x), uint64(v.pL));
    }

    /// @dev Sizes the liquidation, then settles both sides like a fill at pL without fees (funding first); the
    ///      target also pays the insurance share. Checks the liquidator last, on the final state.
    function _execute(Liq memory v, uint256 maxSize, uint32 liquidatorSubaccount) private {
        v.x = _liquidationSize(v, maxSize);
        v.cash = v.x * v.pL / UND;
        {
            uint256 nO = v.x * v.p / UND;
            v.ins = nO * v.insPpm / PPM;
            v.penalty = (v.s > 0 ? nO - v.cash : v.cash - nO) + v.ins;
        }
        v.dL = v.s > 0 ? int256(v.x) : -int256(v.x);
        int256 ld = _applyLiquidator(v);
        ld += _trade(v.tid, v.m, -v.dL, v.cash, -int256(v.ins), v.cum);
        _addOpenInterest(v.m, ld);
        S.Layout storage l = S.store();
        uint256 fund = uint256(l.insuranceFund) + v.ins;
        if (fund > type(uint128).max) revert BalanceOverflow();
        l.insuranceFund = uint128(fund);
        _checkLiquidator(v, liquidatorSubaccount);
    }

    /// @dev Health, eligibility, oracle price, liquidation price and the market's tiers.
    function _loadTarget(Liq memory v, address owner, uint32 subaccount, uint32 market) private view {
        S.Layout storage l = S.store();
        if (market >= l.marketCount) revert UnknownMarket(market);
        // health() reverts OracleUnavailable(feedId) on any stale or out-of-band price the target needs.
        Health memory h = _health(owner, subaccount);
        if (h.maintenanceHealth >= 0) revert NotLiquidatable();
        v.e = h.equity;
        v.r = h.maintenanceRequirement;
        v.m = market;
        int256 on;
        int256 snap;
        (v.s, on, snap) = S.unpackPosition(S.loadPosition(v.tid, market));
        if (v.s == 0) revert NothingToLiquidate();
        v.abs = DivMath.abs(v.s);
        S.Market storage sm = l.markets[market];
        v.p = _price(sm.feedId);
        v.tick = sm.tickSize;
        v.lot = sm.lotSize;
        v.cum = sm.cumulativeFunding;
        v.tierCount = sm.tierCount;
        for (uint256 i = 0; i < v.tierCount; ++i) {
            v.caps[i] = sm.tiers[i].notionalCap;
            v.mmf[i] = sm.tiers[i].mmfPpm;
        }
        uint256 pen = l.penaltyPpm;
        v.insPpm = pen * l.insuranceSharePpm / PPM;
        v.buf = l.bufferPpm;
        v.pL = liquidationPrice(v.p, pen - v.insPpm, v.tick, v.s > 0);
        if (v.pL == 0 || v.pL > type(uint64).max) revert InvalidLiquidationPrice();
        v.pv0 = MarginMath.positionValue(v.s, v.p);
        v.rm0 = MarginMath.tierRequirement(MarginMath.notional(v.s, v.p), v.tierCount, v.caps, v.mmf);
        // Tier 2 reads criticalPpm through the sign of this flag: E * PPM < critical * R.
        if (v.e * IPPM < int256(uint256(l.criticalPpm)) * v.r) v.buf = type(uint256).max;
    }

    /// @dev Clearinghouse.health() through a static self-call (the six Health words, reverts bubbled), so the
    ///      module reuses the contract's own margin math without linking a second copy of it.
    function _health(address owner, uint256 subaccount) private view returns (Health memory h) {
        bytes4 sel = IClearinghouseSelf.health.selector;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, sel)
            mstore(add(p, 4), owner)
            mstore(add(p, 0x24), and(subaccount, 0xffffffff))
            if iszero(staticcall(gas(), address(), p, 0x44, 0, 0)) {
                returndatacopy(p, 0, returndatasize())
                revert(p, returndatasize())
            }
            returndatacopy(h, 0, 0xc0)
        }
    }

    /// @dev Clearinghouse.hasRole(role, msg.sender) through a static self-call.
    function _hasRole(bytes32 role) private view returns (bool ok) {
        bytes4 sel = IClearinghouseSelf.hasRole.selector;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, sel)
            mstore(add(p, 4), role)
            mstore(add(p, 0x24), caller())
            // Yul evaluates arguments right to left: read the result only after the call
            let success := staticcall(gas(), address(), p, 0x44, 0, 0x20)
            ok := and(success, mload(0))
        }
    }

    function _price(uint256 feedId) private view returns (uint256 p) {
        bool ok;
        (ok, p) = _oracle.tryPrice(uint16(feedId));
        if (!ok || p == 0) revert OracleUnavailable(uint16(feedId));
    }

    /// @notice Liquidation price (protocol §9.2): the oracle price moved by the liquidator's share of the penalty
    ///         in the liquidator's favour, then rounded to the tick in the liquidator's favour.
    function liquidationPrice(uint256 p, uint256 liqPpm, uint256 tick, bool targetLong)
        internal
        pure
        returns (uint256)
    {
        if (targetLong) return (p * (PPM - liqPpm) / PPM) / tick * tick; // liquidator buys: round down
        return DivMath.ceilDivU(DivMath.ceilDivU(p * (PPM + liqPpm), PPM), tick) * tick; // sells: round up
    }

    /// @dev Size taken over (protocol §9.3): tier 2 (v.buf == max) up to the whole position, else the tier-1
    ///      restoring size; capped by maxSize (rounded down to the lot unless it covers the whole position).
    function _liquidationSize(Liq memory v, uint256 maxSize) private pure returns (uint256 x) {
        x = v.buf == type(uint256).max ? v.abs : _restoringSize(v);
        if (maxSize < x) x = maxSize / v.lot * v.lot;
        if (x == 0) revert NothingToLiquidate();
    }

    /// @dev Tier 1: closed-form estimate over the marginal tiers, then exact verification (protocol §9.3).
    function _restoringSize(Liq memory v) private pure returns (uint256 x) {
        x = _estimate(v);
        // The estimate is conservative (rounding slack, ceilings), so the first check passes in practice; the
        // bounded walk only guards the proof's edge cases and keeps the contract and Python identical.
        for (uint256 k = 0; k < 4; ++k) {
            if (x >= v.abs) return v.abs;
            if (restores(v, x)) return x;
            x += v.lot;
        }
        return v.abs; // never seen: fall back to the whole position rather than an unverified size
    }

    /// @dev Exact §9.3 predicate: after taking x, H_mm * PPM >= R_mm * bufferPpm.
    function restores(Liq memory v, uint256 x) internal pure returns (bool) {
        int256 s1 = v.s > 0 ? v.s - int256(x) : v.s + int256(x);
        int256 cash = int256(x * v.pL / UND);
        int256 ins = int256((x * v.p / UND) * v.insPpm / PPM);
        int256 dq = (v.s > 0 ? cash : -cash) - ins;
        int256 e1 = v.e + dq + MarginMath.positionValue(s1, v.p) - v.pv0;
        int256 r1 = v.r - int256(v.rm0)
            + int256(MarginMath.tierRequirement(MarginMath.notional(s1, v.p), v.tierCount, v.caps, v.mmf));
        return (e1 - r1) * IPPM >= r1 * int256(v.buf);
    }

    /// @dev Walks the marginal tiers down from the current notional, removing notional at the per-unit gain
    ///      g_i = mmf_i * (PPM + buffer) - lossPpm * PPM (ppm^2 per quote atom), until the shortfall plus a rounding
    ///      slack is covered. Returns a lot multiple, or |s| when no partial size can restore health.
    function _estimate(Liq memory v) private pure returns (uint256) {
        uint256 lossPpm = DivMath.ceilDivU((v.p > v.pL ? v.p - v.pL : v.pL - v.p) * PPM, v.p) + v.insPpm;
        int256 pb = IPPM + int256(v.buf);
        // shortfall G = R * (PPM + buf) - E * PPM (> 0 while H_mm < 0), plus slack for every rounded term
        int256 needI = v.r * pb - v.e * IPPM + int256(2 * v.tierCount + 8) * 2 * IPPM;
        uint256 need = uint256(needI);
        uint256 cur = MarginMath.notional(v.s, v.p);
        uint256 i = 0;
        while (i + 1 < v.tierCount && cur > v.caps[i]) ++i;
        uint256 dn;
        while (true) {
            int256 g = int256(v.mmf[i]) * pb - int256(lossPpm) * IPPM;
            if (g <= 0) return v.abs;
            uint256 lo = i == 0 ? 0 : v.caps[i - 1];
            uint256 seg = cur - lo;
            uint256 gain = seg * uint256(g) / PPM;
            if (gain >= need) {
                dn += DivMath.ceilDivU(need * PPM, uint256(g));
                break;
            }
            if (i == 0) return v.abs;
            need -= gain;
            dn += seg;
            cur = lo;
            --i;
        }
        uint256 x = DivMath.ceilDivU(DivMath.ceilDivU(dn * UND, v.p), v.lot) * v.lot;
        return x > v.abs ? v.abs : x;
    }

    /// @dev Applies the liquidator's side; returns its long delta. Its initial health before the
    ///      change is read first when the "strictly reduces risk" exemption could apply.
    function _applyLiquidator(Liq memory v) private returns (int256) {
        (int256 sL,,) = S.unpackPosition(S.loadPosition(v.lid, v.m));
        v.reduces = MarginMath.strictlyReduces(sL, v.dL);
        if (v.reduces) {
            v.hImBefore =
                _health(msg.sender, v.lid >> 16).initialHealth;
        }
        return _trade(v.lid, v.m, v.dL, v.cash, 0, v.cum);
    }

    /// @dev §3 risk rule for the liquidator: H_im >= 0 after, or strictly reducing with H_im not falling.
    function _checkLiquidator(Liq memory v, uint32 sub) private view {
        int256 after_ = _health(msg.sender, sub).initialHealth;
        if (after_ >= 0) return;
        if (v.reduces && after_ >= v.hImBefore) return;
        revert LiquidatorUnhealthy();
    }

    /// @dev One side of a trade at `cash` (unsigned) for size delta d, §3 steps 1-4 without fee, plus `extra` quote
    ///      (negative: a charge). Settles funding into the market's funding balance. Returns the long delta.
    function _trade(uint256 id, uint256 m, int256 d, uint256 cash, int256 extra, int256 cum)
        private
        returns (int256 longDelta)
    {
        (int256 s, int256 on,) = S.unpackPosition(S.loadPosition(id, m));
        {
            (,, int256 snap) = S.unpackPosition(S.loadPosition(id, m));
            int256 funding = s == 0 ? int256(0) : (s * (cum - snap)).ceilDiv(ND);
            if (funding != 0) S.store().markets[m].fundingBalance += funding;
            extra -= funding;
        }
        {
            int256 signedCash = d > 0 ? int256(cash) : -int256(cash);
            extra -= signedCash;
            (d, on) = MarginMath.applyTrade(s, on, d, signedCash); // d := new size
        }
        if (!S.positionInRange(d, on, cum)) revert BalanceOverflow();
        S.storePosition(id, m, S.packPosition(d, on, cum));
        _addQuote(id, m, extra, d != 0);
        longDelta = (d > 0 ? d : int256(0)) - (s > 0 ? s : int256(0));
    }

    /// @dev Adds `delta` to the quote of `id` (int128 range) and sets or clears the market bit of `m`.
    function _addQuote(uint256 id, uint256 m, int256 delta, bool hasPosition) private {
        uint256 hdr = S.loadHeader(id);
        int256 q = S.quoteOf(hdr) + delta;
        if (!S.inQuoteRange(q)) revert BalanceOverflow();
        uint256 bit = uint256(1) << (128 + m);
        hdr = S.withQuote(hdr, q);
        S.storeHeader(id, hasPosition ? hdr | bit : hdr & ~bit);
    }

    function _addOpenInterest(uint256 m, int256 delta) private {
        S.Market storage sm = S.store().markets[m];
        int256 oi = int256(uint256(sm.openInterest)) + delta;
        sm.openInterest = oi > 0 ? uint128(uint256(oi)) : 0;
    }

    // ------------------------------------------------------------------------------------------ collateral

    /// @notice Buys a liquidatable account's non-quote collateral at a discount to repay its negative quote
    ///         (protocol §9.5).
    /// @param owner Owner of the liquidated sub-account.
    /// @param subaccount The liquidated sub-account.
    /// @param asset Collateral asset id (>= 1).
    /// @param maxAmount Most collateral the caller takes (token atoms).
    /// @param priceLimit Highest price (1e8 quote per whole token) the caller pays.
    /// @param liquidatorSubaccount msg.sender's sub-account that pays quote and receives the collateral.
    /// @return amount Collateral taken (token atoms).
    /// @return price Discounted collateral price paid.
    function liquidateCollateral(
        address owner,
        uint32 subaccount,
        uint16 asset,
        uint128 maxAmount,
        uint64 priceLimit,
        uint32 liquidatorSubaccount
    ) external guarded returns (uint128 amount, uint64 price) {
        uint256 tid = S.acctId(owner, subaccount);
        if (tid == S.acctId(msg.sender, liquidatorSubaccount)) revert SelfLiquidation();
        if (asset == 0 || asset >= S.store().collateralCount) revert UnknownAsset(asset);
        if (_health(owner, subaccount).maintenanceHealth >= 0) {
            revert NotLiquidatable();
        }
        (uint256 amt, uint256 pc, uint256 pay) = _collateralTerms(tid, asset, maxAmount, priceLimit);
        _moveCollateral(tid, S.acctId(msg.sender, liquidatorSubaccount), asset, amt, pay);
        if (_health(msg.sender, liquidatorSubaccount).initialHealth < 0) {
            revert LiquidatorUnhealthy();
        }
        emit CollateralLiquidated(owner, subaccount, asset, msg.sender, liquidatorSubaccount, amt, uint64(pc), pay);
        return (uint128(amt), uint64(pc));
    }

    /// @dev §9.5: discounted price pc, amount (smallest that brings quote to >= 0, capped) and payment.
    function _collateralTerms(uint256 tid, uint256 asset, uint256 maxAmount, uint256 priceLimit)
        private
        view
        returns (uint256 amt, uint256 pc, uint256 pay)
    {
        S.Layout storage l = S.store();
        int256 q = S.quoteOf(S.loadHeader(tid));
        uint256 bal = l.acct[S.collateralKey(tid, asset)];
        if (q >= 0 || bal == 0) revert NothingToLiquidate();
        S.Collateral storage col = l.collaterals[asset];
        pc = _price(col.feedId) * (PPM - l.penaltyPpm) / PPM;
        if (pc == 0 || pc > type(uint64).max) revert InvalidLiquidationPrice();
        if (pc > priceLimit) revert PriceLimit();
        uint256 unit = 10 ** (uint256(col.decimals) + 2);
        amt = DivMath.ceilDivU(uint256(-q) * unit, pc);
        if (bal < amt) amt = bal;
        if (maxAmount < amt) amt = maxAmount;
        pay = amt * pc / unit;
        // A whole balance worth less than a quote atom (dust anyone can deposit) is taken for nothing: bad-debt
        // settlement needs it gone, and nothing else can remove it from a bankrupt account.
        if (pay == 0 && amt != bal) revert NothingToLiquidate();
    }

    function _moveCollateral(uint256 tid, uint256 lid, uint256 asset, uint256 amt, uint256 pay) private {
        mapping(uint256 => uint256) storage acct = S.store().acct;
        uint256 bit = uint256(1) << (160 + asset);
        uint256 left = acct[S.collateralKey(tid, asset)] - amt;
        acct[S.collateralKey(tid, asset)] = left;
        uint256 hdr = S.loadHeader(tid);
        hdr = S.withQuote(hdr, S.quoteOf(hdr) + int256(pay)); // quote < 0 before and pay <= -q + price of 1 atom
        S.storeHeader(tid, left == 0 ? hdr & ~bit : hdr);
        acct[S.collateralKey(lid, asset)] += amt;
        hdr = S.loadHeader(lid);
        int256 lq = S.quoteOf(hdr) - int256(pay);
        if (!S.inQuoteRange(lq)) revert BalanceOverflow();
        S.storeHeader(lid, S.withQuote(hdr, lq) | bit);
    }

    // ------------------------------------------------------------------------------------------ bad debt

    /// @notice Covers the negative quote of an account with no positions and no collateral: insurance fund first,
    ///         then the fee pool, the rest is recorded as unbacked debt (protocol §9.6). Permissionless.
    /// @param owner Owner of the bankrupt sub-account.
    /// @param subaccount The bankrupt sub-account.
    function settleBadDebt(address owner, uint32 subaccount) external guarded {
        S.Layout storage l = S.store();
        uint256 id = S.acctId(owner, subaccount);
        uint256 hdr = S.loadHeader(id);
        int256 q = S.quoteOf(hdr);
        if (q >= 0 || S.marketBits(hdr) != 0 || S.assetBits(hdr) != 0) revert NoBadDebt();
        uint256 deficit = uint256(-q);
        uint256 fund = l.insuranceFund;
        uint256 insPaid = deficit < fund ? deficit : fund;
        uint256 rest = deficit - insPaid;
        uint256 pool = l.feePool;
        uint256 feePaid = rest < pool ? rest : pool;
        uint256 unbacked = rest - feePaid;
        l.insuranceFund = uint128(fund - insPaid);
        l.feePool = uint128(pool - feePaid);
        l.unbackedDebt += uint128(unbacked); // deficit < 2**127
        S.storeHeader(id, S.withQuote(hdr, 0));
        emit BadDebtSettled(owner, subaccount, insPaid, feePaid, unbacked);
    }

    // ------------------------------------------------------------------------------------------ deleverage

    /// @notice Auto-deleveraging (protocol §9.7): closes `size` of a bankrupt account's position against a
    ///         profitable opposite position at the bankruptcy price. KEEPER_ROLE only (keepers rank counterparties).
    /// @param owner Owner of the bankrupt sub-account.
    /// @param subaccount The bankrupt sub-account.
    /// @param market Market of the position.
    /// @param counterparty Owner of the opposite position.
    /// @param counterpartySubaccount Its sub-account.
    /// @param size Size to close (<= both positions).
    function deleverage(
        address owner,
        uint32 subaccount,
        uint32 market,
        address counterparty,
        uint32 counterpartySubaccount,
        uint64 size
    ) external guarded {
        if (!_hasRole(KEEPER_ROLE)) {
            revert IAccessControl.AccessControlUnauthorizedAccount(msg.sender, KEEPER_ROLE);
        }
        if (market >= S.store().marketCount) revert UnknownMarket(market);
        uint256 tid = S.acctId(owner, subaccount);
        uint256 cid = S.acctId(counterparty, counterpartySubaccount);
        if (tid == cid) revert InvalidCounterparty();
        int256 e = _health(owner, subaccount).equity;
        if (e >= 0 || uint256(S.store().insuranceFund) >= uint256(-e)) revert NotDeleveragable();
        (int256 dT, uint256 pb) = _deleverage(tid, cid, market, size, e);
        emit Deleveraged(owner, subaccount, market, counterparty, counterpartySubaccount, dT, uint64(pb));
    }

    /// @dev Checks both positions, prices and applies the ADL trade; returns the target's delta and the price.
    function _deleverage(uint256 tid, uint256 cid, uint256 market, uint256 size, int256 e)
        private
        returns (int256 dT, uint256 pb)
    {
        S.Layout storage l = S.store();
        (int256 s,,) = S.unpackPosition(S.loadPosition(tid, market));
        if (size == 0 || s == 0 || size > DivMath.abs(s)) revert NothingToLiquidate();
        S.Market storage sm = l.markets[market];
        {
            uint256 p = _price(sm.feedId);
            (int256 sc, int256 onc,) = S.unpackPosition(S.loadPosition(cid, market));
            if ((sc > 0) == (s > 0) || DivMath.abs(sc) < size || MarginMath.positionValue(sc, p) <= onc) {
                revert InvalidCounterparty();
            }
            pb = bankruptcyPrice(s, p, e, sm.tickSize);
        }
        dT = s > 0 ? -int256(size) : int256(size);
        uint256 cash = size * pb / UND;
        int256 ld = _trade(tid, market, dT, cash, 0, sm.cumulativeFunding);
        ld += _trade(cid, market, -dT, cash, 0, sm.cumulativeFunding);
        _addOpenInterest(market, ld);
    }

    /// @notice Bankruptcy price (protocol §9.7): closing the whole position s at it brings equity e to 0; rounded
    ///         to the tick against the counterparty (up when it buys a long's position, down when it sells).
    function bankruptcyPrice(int256 s, uint256 p, int256 e, uint256 tick) internal pure returns (uint256 pb) {
        int256 pv = MarginMath.positionValue(s, p);
        if (s > 0) {
            pb = DivMath.ceilDivU(DivMath.ceilDivU(uint256(pv - e) * UND, uint256(s)), tick) * tick;
        } else {
            int256 num = e - pv;
            if (num <= 0) revert InvalidLiquidationPrice();
            pb = uint256(num) * UND / uint256(-s) / tick * tick;
        }
        if (pb == 0 || pb > type(uint64).max) revert InvalidLiquidationPrice();
    }

    // ------------------------------------------------------------------------------------------ params

    /// @notice Sets the liquidation parameters (protocol §9.1). DEFAULT_ADMIN_ROLE only.
    /// @param penaltyPpm Total penalty as a fraction of the oracle notional taken over (<= 50%).
    /// @param insuranceSharePpm Part of the penalty that goes to the insurance fund (<= 100%).
    /// @param bufferPpm Tier-1 target: maintenance health >= bufferPpm x maintenance requirement (<= 100%).
    /// @param criticalPpm Tier 2 when equity < criticalPpm x maintenance requirement (<= 100%).
    function setLiquidationParams(uint32 penaltyPpm, uint32 insuranceSharePpm, uint32 bufferPpm, uint32 criticalPpm)
        external
        onlyDelegated
    {
        if (!_hasRole(0x00)) {
            revert IAccessControl.AccessControlUnauthorizedAccount(msg.sender, 0x00);
        }
        if (penaltyPpm > MAX_PENALTY || insuranceSharePpm > PPM || bufferPpm > PPM || criticalPpm > PPM) {
            revert InvalidLiquidationParams();
        }
        S.Layout storage l = S.store();
        l.penaltyPpm = penaltyPpm;
        l.insuranceSharePpm = insuranceSharePpm;
        l.bufferPpm = bufferPpm;
        l.criticalPpm = criticalPpm;
        emit LiquidationParamsSet(penaltyPpm, insuranceSharePpm, bufferPpm, criticalPpm);
    }
}
