// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Health, Order} from "../src/interfaces/ICrossbookTypes.sol";

/// @dev The compact account storage (ClearinghouseStorage: 128-bit lanes) and its fallbacks: positions whose size or
///      open notional leave int48 and quotes outside int80 are stored wide, snapshots of older funding epochs are
///      read from the history. Every value must read back exactly, whichever way it is stored.
contract LanesTest is Fixture {
    int256 constant L48 = type(int48).max;
    int256 constant Q80 = type(int80).max;

    function _setQuote(address who, uint32 sub, int256 quote) internal {
        ch.harnessSetPortfolio(who, sub, quote, new uint16[](0), new uint256[](0), new uint32[](0), new int256[](0), new int256[](0), new int256[](0));
    }

    function _setPosition(address who, int256 quote, uint32 market, int256 size, int256 on, int256 snap) internal {
        uint32[] memory markets = new uint32[](1);
        int256[] memory sizes = new int256[](1);
        int256[] memory ons = new int256[](1);
        int256[] memory snaps = new int256[](1);
        markets[0] = market;
        sizes[0] = size;
        ons[0] = on;
        snaps[0] = snap;
        ch.harnessSetPortfolio(who, 0, quote, new uint16[](0), new uint256[](0), markets, sizes, ons, snaps);
    }

    function _assertPosition(address who, uint32 sub, uint32 market, int256 size, int256 on, int256 snap) internal view {
        (int256 s, int256 o, int256 f) = ch.position(who, sub, market);
        assertEq(s, size, "size");
        assertEq(o, on, "open notional");
        assertEq(f, snap, "snapshot");
    }

    function _fill(uint32 sub, uint32 market, bool aliceBuys, uint64 price, uint64 size, uint64 nonce)
        internal
        view
        returns (bytes memory)
    {
        Order memory t = _order(alice, sub, market, aliceBuys, price, size, nonce);
        Order memory m = _order(bob, sub, market, !aliceBuys, price, size, nonce);
        return _fillItem(t, ALICE_PK, m, BOB_PK, size, price, 500, 100);
    }

    /// @dev Harness values at and beyond the lane ranges read back exactly (views and health).
    function testFuzz_positionsReadBackExactly(int80 size, int88 on, uint8 market, bool atIndex) public {
        uint32 m = uint32(market % 3);
        int256 snap = atIndex ? int256(0) : int256(on) / 3 + 1; // a snapshot that is not the index is stored wide
        _setPosition(alice, 1e12, m, size, on, snap);
        if (size == 0) {
            _assertPosition(alice, 0, m, 0, 0, 0);
        } else {
            _assertPosition(alice, 0, m, size, on, snap);
        }
        for (uint32 other = 0; other < 3; ++other) {
            if (other != m) _assertPosition(alice, 0, other, 0, 0, 0);
        }
    }

    function test_laneBoundaries() public {
        int256[6] memory sizes = [L48, -L48 - 1, L48 + 1, -L48 - 2, int256(1), int256(-1)];
        int256[6] memory ons = [-L48 - 1, L48, int256(7), int256(-7), L48 + 1, -L48 - 2];
        for (uint256 i = 0; i < 6; ++i) {
            for (uint32 m = 0; m < 3; ++m) {
                _setPosition(alice, 1e12, m, sizes[i], ons[i], 0);
                _assertPosition(alice, 0, m, sizes[i], ons[i], 0);
            }
        }
    }

    function testFuzz_quotesReadBackExactly(int128 quote) public {
        _setQuote(alice, 0, quote);
        assertEq(ch.quoteBalance(alice, 0), quote);
        assertEq(ch.collateralBalance(alice, 0, 0), quote > 0 ? uint256(uint128(quote)) : 0);
        assertEq(ch.health(alice, 0).equity, quote);
    }

    /// @dev A quote moves between the lane (int80) and the wide slot both ways through deposits and withdrawals.
    function test_quoteCrossesLaneRangeBothWays() public {
        _setQuote(alice, 0, Q80 - 1);
        usdc.mint(address(ch), 10); // back the harness balance for the withdrawal below
        _depositQuote(alice, 0, 3); // int80.max + 2: wide
        assertEq(ch.quoteBalance(alice, 0), Q80 + 2);
        assertEq(_settleOne(_withdrawItem(ALICE_PK, 0, 0, 5, 1, FAR)), 0); // int80.max - 3: lane again
        assertEq(ch.quoteBalance(alice, 0), Q80 - 3);
        _setQuote(alice, 0, type(int80).min); // the flag value itself is stored wide
        assertEq(ch.quoteBalance(alice, 0), type(int80).min);
        _setQuote(alice, 0, type(int80).min + 1);
        assertEq(ch.quoteBalance(alice, 0), type(int80).min + 1);
        _setQuote(alice, 0, type(int128).min);
        assertEq(ch.quoteBalance(alice, 0), type(int128).min);
    }

    /// @dev Fills move a position and both quotes across the lane ranges and back; every value as §3 computes it.
    function test_fillsCrossLaneRangesBothWays() public {
        int256 q0 = 1e30; // beyond int80: both headers wide from the start
        _setQuote(alice, 0, q0);
        _setQuote(bob, 0, q0);
        ch.harnessSetOpenInterest(2, 0);
        uint64 px = SOL_PX;
        int256 qa = q0;
        int256 qb = q0;
        // 1: alice buys just under the lane range (size and cash both < 2**47): compact
        uint64 s1 = 140_737_000_000_000;
        int256 c1 = int256(uint256(s1) * px / 1e10);
        assertEq(_settleOne(_fill(0, 2, true, px, s1, 1)), 0);
        qa -= c1 + c1 * 500 / 1e6;
        qb += c1 - c1 * 100 / 1e6;
        _assertPosition(alice, 0, 2, int256(uint256(s1)), c1, 0);
        _assertPosition(bob, 0, 2, -int256(uint256(s1)), -c1, 0);
        // 2: past the range: wide
        uint64 s2 = 1_000_000_000;
        int256 c2 = int256(uint256(s2) * px / 1e10);
        assertEq(_settleOne(_fill(0, 2, true, px, s2, 2)), 0);
        qa -= c2 + c2 * 500 / 1e6;
        qb += c2 - c2 * 100 / 1e6;
        int256 sa = int256(uint256(s1 + s2));
        _assertPosition(alice, 0, 2, sa, c1 + c2, 0);
        _assertPosition(bob, 0, 2, -sa, -(c1 + c2), 0);
        // 3: alice sells most of it back: compact again, open notional scaled (§3 step 3, trunc_div)
        uint64 s3 = 140_000_000_000_000;
        int256 c3 = int256(uint256(s3) * px / 1e10);
        assertEq(_settleOne(_fill(0, 2, false, px, s3, 3)), 0);
        qa += c3 - c3 * 500 / 1e6;
        qb -= c3 + c3 * 100 / 1e6;
        int256 sa3 = sa - int256(uint256(s3));
        int256 onA = (c1 + c2) * sa3 / sa;
        _assertPosition(alice, 0, 2, sa3, onA, 0);
        _assertPosition(bob, 0, 2, -sa3, -onA, 0);
        assertEq(ch.quoteBalance(alice, 0), qa);
        assertEq(ch.quoteBalance(bob, 0), qb);
        assertEq(ch.openInterest(2), uint256(sa3));
        // health reads the same values: E = quote + PV (no funding)
        assertEq(ch.health(alice, 0).equity, qa + sa3 * int256(uint256(px)) / 1e10);
    }

    /// @dev A fill brings a wide quote back into the lane range (and the other side's out of it).
    function test_fillMovesQuoteAcrossLaneRange() public {
        _setQuote(alice, 0, Q80 + 1000);
        _setQuote(bob, 0, Q80 - 1000);
        uint64 size = 1e8;
        int256 cash = int256(uint256(size) * ETH_PX / 1e10); // 2000e6
        assertEq(_settleOne(_fill(0, 0, true, ETH_PX, size, 1)), 0);
        assertEq(ch.quoteBalance(alice, 0), Q80 + 1000 - cash - cash * 500 / 1e6);
        assertEq(ch.quoteBalance(bob, 0), Q80 - 1000 + cash - cash * 100 / 1e6);
        _assertPosition(alice, 0, 0, 1e8, cash, 0);
        _assertPosition(bob, 0, 0, -1e8, -cash, 0);
    }

    /// @dev Positions written in different funding epochs keep their own snapshots; fills settle from them.
    function test_fundingEpochSnapshots() public {
        _depositQuote(alice, 0, 1e12);
        _depositQuote(bob, 0, 1e12);
        _depositQuote(alice, 1, 1e12);
        _depositQuote(bob, 1, 1e12);
        assertEq(_settleOne(_fill(0, 0, true, ETH_PX, 2e8, 1)), 0); // epoch 0, index 0
        assertEq(_settleOne(_fundingItem(0, 300)), 0); // index 6e7, epoch 1
        assertEq(_settleOne(_fill(1, 0, true, ETH_PX, 1e8, 2)), 0); // sub 1 positions at epoch 1
        assertEq(_settleOne(_fundingItem(0, 300)), 0); // index 12e7, epoch 2
        ch.harnessSetCumulativeFunding(0, 15e7); // epoch 3
        _assertPosition(alice, 0, 0, 2e8, 4000e6, 0);
        _assertPosition(alice, 1, 0, 1e8, 2000e6, 6e7);
        _assertPosition(bob, 1, 0, -1e8, -2000e6, 6e7);
        int256 q1 = ch.quoteBalance(alice, 1);
        // accrued A = ceil(1e8 * (15e7 - 6e7) / 1e10) = 9e5
        assertEq(ch.health(alice, 1).equity, q1 + 2000e6 - 9e5);
        // a fill on sub 0 settles funding from snapshot 0: ceil(2e8 * 15e7 / 1e10) = 3e6
        int256 q0 = ch.quoteBalance(alice, 0);
        assertEq(_settleOne(_fill(0, 0, true, ETH_PX, 1e5, 3)), 0);
        uint256 cash = 1e5 * uint256(ETH_PX) / 1e10;
        assertEq(ch.quoteBalance(alice, 0), q0 - 3e6 - int256(cash) - int256(cash * 500 / PPM));
        _assertPosition(alice, 0, 0, 2e8 + 1e5, 4000e6 + int256(cash), 15e7);
        // the sub-1 positions still read their epoch-1 snapshot
        _assertPosition(alice, 1, 0, 1e8, 2000e6, 6e7);
    }
}
