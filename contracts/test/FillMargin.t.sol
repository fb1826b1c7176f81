// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Order, Health} from "../src/interfaces/ICrossbookTypes.sol";

/// @dev Differential test of the settlement module's fast initial-health path (unchecked, tier table) against
///      the health() view: a fill that opens a new position is applied iff the resulting portfolio, set up on a
///      twin sub-account through the harness, has initial health >= 0 per health().
contract FillMarginTest is Fixture {
    int256[3] internal sz;
    int256[3] internal on;
    int256[3] internal snap;
    uint256 internal wethAmt;

    function _set(address who, uint32 sub, int256 quote) internal {
        uint16[] memory assets = new uint16[](1);
        uint256[] memory amounts = new uint256[](1);
        assets[0] = 1;
        amounts[0] = wethAmt;
        uint32[] memory markets = new uint32[](3);
        int256[] memory sizes = new int256[](3);
        int256[] memory ons = new int256[](3);
        int256[] memory snaps = new int256[](3);
        for (uint256 i = 0; i < 3; ++i) {
            markets[i] = uint32(i);
            sizes[i] = sz[i];
            ons[i] = on[i];
            snaps[i] = snap[i];
        }
        ch.harnessSetPortfolio(who, sub, quote, assets, amounts, markets, sizes, ons, snaps);
    }

    function _r(uint256 seed, uint256 i, int256 lo, int256 hi) internal pure returns (int256) {
        return boundInt(int256(uint256(keccak256(abi.encode(seed, i)))), lo, hi);
    }

    function testFuzz_fillMarginMatchesHealthView(uint256 seed) public {
        sz = [int256(0), _r(seed, 1, -2e10, 2e10), _r(seed, 2, -2e13, 2e13)];
        on = [int256(0), _r(seed, 3, -2e12, 2e12), _r(seed, 4, -2e13, 2e13)];
        snap = [int256(777e8), _r(seed, 5, -1e12, 1e12), _r(seed, 6, -1e12, 1e12)];
        wethAmt = uint256(_r(seed, 7, 0, 1e22));
        uint64 fs = uint64(uint256(_r(seed, 8, 1, 5000)) * 1e7); // up to 500 ETH: crosses both tier caps
        int256 delta = _r(seed, 9, -3, 3);
        bool sell = seed & 1 == 1;
        ch.harnessSetCumulativeFunding(0, 777e8);
        ch.harnessSetCumulativeFunding(1, _r(seed, 10, -1e12, 1e12));
        ch.harnessSetCumulativeFunding(2, _r(seed, 11, -1e12, 1e12));
        // bob: a deep maker without positions
        ch.harnessSetPortfolio(bob, 0, 1e16, new uint16[](0), new uint256[](0), new uint32[](0), new int256[](0), new int256[](0), new int256[](0));

        int256 signedCash = int256(uint256(fs) * ETH_PX / 1e10);
        if (sell) signedCash = -signedCash;
        // twin: the portfolio after the fill (funding of markets 1, 2 stays lazily accrued)
        sz[0] = sell ? -int256(uint256(fs)) : int256(uint256(fs));
        on[0] = signedCash;
        _set(carol, 1, 0);
        int256 q = delta - ch.health(carol, 1).initialHealth;
        _set(carol, 1, q);
        assertEq(ch.health(carol, 1).initialHealth, delta, "twin health");
        // carol before the fill
        sz[0] = 0;
        on[0] = 0;
        _set(carol, 0, q + signedCash);

        Order memory t = _order(carol, 0, 0, !sell, ETH_PX, fs, 1);
        Order memory m = _order(bob, 0, 0, sell, ETH_PX, fs, 1);
        uint8 r = _settleOne(_fillItem(t, CAROL_PK, m, BOB_PK, fs, ETH_PX, 0, 0));
        if (delta >= 0) {
            assertEq(uint256(r), 0, "applied");
            assertEq(ch.quoteBalance(carol, 0), q, "quote");
            assertEq(ch.health(carol, 0).initialHealth, delta, "health after");
        } else {
            assertEq(uint256(r), uint256(INSUFFICIENT_MARGIN), "rejected");
        }
    }
}
