// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Clearinghouse} from "../../src/Clearinghouse.sol";
import {ClearinghouseStorage as S} from "../../src/impl/ClearinghouseStorage.sol";

/// @title ClearinghouseHarness
/// @notice TEST ONLY. A Clearinghouse with setters that write sub-account state directly, used by the Python
///         differential tests (health() vs crossbook's margin math) and by gas benchmarks. It breaks
///         conservation on purpose; never deploy it anywhere real.
contract ClearinghouseHarness is Clearinghouse {
    error HarnessBadInput();

    constructor(address admin, address oracle_, address quoteToken_, uint64 escapeDelay_)
        Clearinghouse(admin, oracle_, quoteToken_, escapeDelay_)
    {}

    /// @notice Replaces the whole portfolio of `(owner, sub)`: quote balance, collateral balances (asset ids
    ///         >= 1, listed) and positions (listed markets). Everything not listed is cleared. Zero amounts
    ///         and zero sizes are allowed and mean "none". Values must fit docs/protocol.md §7 ranges.
    function harnessSetPortfolio(
        address owner,
        uint32 sub,
        int256 quote,
        uint16[] memory assets,
        uint256[] memory amounts,
        uint32[] memory markets,
        int256[] memory sizes,
        int256[] memory openNotionals,
        int256[] memory fundingSnapshots
    ) external {
        if (!S.inQuoteRange(quote)) revert HarnessBadInput();
        uint256 id = S.acctId(owner, sub);
        _harnessClear(id);
        uint256 abits = _harnessAssets(id, assets, amounts);
        uint256 mbits = _harnessMarkets(id, markets, sizes, openNotionals, fundingSnapshots);
        S.storeHeader(id, uint256(uint128(int128(quote))) | (mbits << 128) | (abits << 160));
    }

    function _harnessClear(uint256 id) internal {
        S.Layout storage l = S.store();
        uint256 hdr = S.loadHeader(id);
        uint256 bits = S.marketBits(hdr);
        for (uint256 m = 0; bits != 0; ++m) {
            if (bits & 1 != 0) S.storePosition(id, m, 0);
            bits >>= 1;
        }
        bits = S.assetBits(hdr);
        for (uint256 a = 0; bits != 0; ++a) {
            if (bits & 1 != 0) delete l.acct[S.collateralKey(id, a)];
            bits >>= 1;
        }
    }

    function _harnessAssets(uint256 id, uint16[] memory assets, uint256[] memory amounts)
        internal
        returns (uint256 abits)
    {
        S.Layout storage l = S.store();
        if (assets.length != amounts.length) revert HarnessBadInput();
        for (uint256 i = 0; i < assets.length; ++i) {
            uint256 a = assets[i];
            if (a == 0 || a >= l.collateralCount) revert HarnessBadInput();
            l.acct[S.collateralKey(id, a)] = amounts[i];
            if (amounts[i] != 0) abits |= uint256(1) << a;
            else abits &= ~(uint256(1) << a);
        }
    }

    function _harnessMarkets(
        uint256 id,
        uint32[] memory markets,
        int256[] memory sizes,
        int256[] memory openNotionals,
        int256[] memory fundingSnapshots
    ) internal returns (uint256 mbits) {
        S.Layout storage l = S.store();
        if (
            markets.length != sizes.length || markets.length != openNotionals.length
                || markets.length != fundingSnapshots.length
        ) revert HarnessBadInput();
        for (uint256 i = 0; i < markets.length; ++i) {
            uint256 m = markets[i];
            if (m >= l.marketCount || !S.positionInRange(sizes[i], openNotionals[i], fundingSnapshots[i])) {
                revert HarnessBadInput();
            }
            S.storePosition(id, m, S.packPosition(sizes[i], openNotionals[i], fundingSnapshots[i]));
            if (sizes[i] != 0) mbits |= uint256(1) << m;
            else mbits &= ~(uint256(1) << m);
        }
    }

    /// @notice Sets a market's cumulative funding index (must fit int88).
    function harnessSetCumulativeFunding(uint32 market, int256 index) external {
        if (index < S.ON_MIN || index > S.ON_MAX) revert HarnessBadInput();
        S.setCumulativeFunding(market, index);
    }

    /// @notice Sets a market's open interest.
    function harnessSetOpenInterest(uint32 market, uint128 oi) external {
        S.store().markets[market].openInterest = oi;
    }
}
