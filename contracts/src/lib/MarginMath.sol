// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {DivMath} from "./DivMath.sol";

/// @title MarginMath
/// @notice The pure margin formula of docs/protocol.md §3, term by term, with its exact rounding.
library MarginMath {
    using DivMath for int256;

    uint256 internal constant PPM = 1_000_000;
    int256 internal constant NOTIONAL_DIV = 1e10;

    /// @dev V_a = floor(amount * price / 10**(decimals + 2)); `unit` is 10**(decimals + 2).
    function collateralValue(uint256 amount, uint256 price, uint256 unit) internal pure returns (uint256) {
        return amount * price / unit;
    }

    /// @dev W_a = floor(V_a * weight / PPM).
    function weighted(uint256 value, uint256 weightPpm) internal pure returns (uint256) {
        return value * weightPpm / PPM;
    }

    /// @dev PV_m = floor_div(size * price, 1e10) (signed).
    function positionValue(int256 size, uint256 price) internal pure returns (int256) {
        return (size * int256(price)).floorDiv(NOTIONAL_DIV);
    }

    /// @dev N_m = ceil_div(|size| * price, 1e10).
    function notional(int256 size, uint256 price) internal pure returns (uint256) {
        return DivMath.ceilDivU(DivMath.abs(size) * price, uint256(NOTIONAL_DIV));
    }

    /// @dev A_m = ceil_div(size * (F - snapshot), 1e10): owed by the position (negative = receivable).
    function accruedFunding(int256 size, int256 cumulative, int256 snapshot) internal pure returns (int256) {
        return (size * (cumulative - snapshot)).ceilDiv(NOTIONAL_DIV);
    }

    /// @dev Marginal tier requirement: sum_i ceil(portion_i(N) * frac_i / PPM). `caps[n-1]` is ignored
    ///      (unbounded). `fracs` are the fractions of the same tiers.
    function tierRequirement(uint256 n, uint256 tierCount, uint256[4] memory caps, uint256[4] memory fracs)
        internal
        pure
        returns (uint256 req)
    {
        uint256 lo = 0;
        for (uint256 i = 0; i < tierCount; ++i) {
            if (n <= lo) break;
            uint256 portion = n - lo;
            if (i + 1 < tierCount) {
                uint256 width = caps[i] - lo;
                if (portion > width) portion = width;
                lo = caps[i];
            }
            req += DivMath.ceilDivU(portion * fracs[i], PPM);
        }
    }

    /// @dev Trade cash = floor_div(fillSize * fillPrice, 1e10) (both positive, so plain division).
    function tradeCash(uint256 fillSize, uint256 fillPrice) internal pure returns (uint256) {
        return fillSize * fillPrice / uint256(NOTIONAL_DIV);
    }

    /// @dev Fee = floor_div(cash * feePpm, PPM).
    function fee(uint256 cash, uint256 feePpm) internal pure returns (uint256) {
        return cash * feePpm / PPM;
    }

    /// @dev Step 3 and 4 of "Applying a trade": new (size, openNotional) for old size s, open notional `on`,
    ///      size delta d (non-zero) and signed cash (positive for the buyer).
    function applyTrade(int256 s, int256 on, int256 d, int256 signedCash)
        internal
        pure
        returns (int256 newSize, int256 newOn)
    {
        newSize = s + d;
        if (s == 0 || (s > 0) == (d > 0)) {
            newOn = on + signedCash;
        } else if (DivMath.abs(d) <= DivMath.abs(s)) {
            newOn = (on * newSize).truncDiv(s);
        } else {
            newOn = (signedCash * newSize).truncDiv(d);
        }
        if (newSize == 0) newOn = 0;
    }

    /// @dev True iff |s + d| < |s| with no sign flip (s + d is 0 or has the sign of s).
    function strictlyReduces(int256 s, int256 d) internal pure returns (bool) {
        if (s == 0 || d == 0) return false;
        if ((s > 0) == (d > 0)) return false;
        return DivMath.abs(d) <= DivMath.abs(s);
    }

    /// @dev ceil_div(positivePnl * haircutPpm, PPM). Unchecked: callers pass a sum of at most 32 position terms
    ///      max(PV - openNotional, 0), each below 2**176 (§7 ranges, prices < 2**128), and a uint32 rate, so the
    ///      product stays below 2**213.
    function haircut(uint256 positivePnl, uint256 haircutPpm) internal pure returns (uint256 h) {
        unchecked {
            h = positivePnl * haircutPpm;
            if (h != 0) h = (h - 1) / PPM + 1;
        }
    }
}
