// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {DivMath} from "../src/lib/DivMath.sol";
import {MarginMath} from "../src/lib/MarginMath.sol";

contract MathTest is Test {
    uint256[4] caps = [uint256(1e12), 5e12, 2e13, 0];
    uint256[4] imf = [uint256(50_000), 100_000, 200_000, 500_000];

    /// @dev Reference floor division through unsigned arithmetic on magnitudes.
    function _refFloor(int256 a, int256 b) internal pure returns (int256) {
        if (a >= 0) return int256(uint256(a) / uint256(b));
        uint256 m = uint256(-a);
        uint256 q = m / uint256(b);
        if (q * uint256(b) != m) q += 1;
        return -int256(q);
    }

    function testFuzz_floorDiv(int128 a, uint64 b) public pure {
        vm.assume(b != 0);
        int256 q = DivMath.floorDiv(a, int256(uint256(b)));
        assertEq(q, _refFloor(a, int256(uint256(b))));
        // q * b <= a < (q + 1) * b
        assertLe(q * int256(uint256(b)), int256(a));
        assertLt(int256(a), (q + 1) * int256(uint256(b)));
    }

    function testFuzz_ceilDiv(int128 a, uint64 b) public pure {
        vm.assume(b != 0);
        int256 bb = int256(uint256(b));
        assertEq(DivMath.ceilDiv(a, bb), -_refFloor(-int256(a), bb));
        assertEq(DivMath.truncDiv(a, bb), a >= 0 ? _refFloor(a, bb) : -_refFloor(-int256(a), bb));
    }

    function test_divExamples() public pure {
        assertEq(DivMath.floorDiv(-7, 2), -4);
        assertEq(DivMath.ceilDiv(-7, 2), -3);
        assertEq(DivMath.truncDiv(-7, 2), -3);
        assertEq(DivMath.floorDiv(7, 2), 3);
        assertEq(DivMath.ceilDiv(7, 2), 4);
        assertEq(DivMath.floorDiv(-8, 2), -4);
        assertEq(DivMath.ceilDiv(8, 2), 4);
        assertEq(DivMath.ceilDivU(0, 3), 0);
    }

    function testFuzz_tierRequirementMonotoneAndContinuous(uint64 n1, uint64 n2, uint8 tiers) public view {
        uint256 t = bound(tiers, 1, 4);
        uint256 a = n1;
        uint256 b = n2;
        if (a > b) (a, b) = (b, a);
        uint256 ra = MarginMath.tierRequirement(a, t, caps, imf);
        uint256 rb = MarginMath.tierRequirement(b, t, caps, imf);
        assertLe(ra, rb);
        // one more atom of notional adds at most ceil(max frac) = 1 atom (fractions <= PPM) per tier touched
        uint256 r1 = MarginMath.tierRequirement(a + 1, t, caps, imf);
        assertLe(r1 - ra, 2);
        // bounded by the flat highest fraction and at least the flat lowest fraction
        assertLe(rb, DivMath.ceilDivU(b * imf[t - 1], 1e6) + t);
        assertGe(rb, b * imf[0] / 1e6);
    }

    function testFuzz_tierRequirementAgainstReference(uint64 n) public view {
        uint256 r = MarginMath.tierRequirement(n, 3, caps, imf);
        uint256 ref;
        uint256 lo;
        for (uint256 i = 0; i < 3; ++i) {
            uint256 hi = i == 2 ? type(uint256).max : caps[i];
            uint256 top = n < hi ? n : hi;
            uint256 portion = top > lo ? top - lo : 0;
            ref += (portion * imf[i] + 1e6 - 1) / 1e6;
            lo = hi;
        }
        assertEq(r, ref);
    }

    function testFuzz_positionValueAndNotional(int80 size, uint64 price) public pure {
        int256 pv = MarginMath.positionValue(size, price);
        uint256 n = MarginMath.notional(size, price);
        // |PV| and N differ by at most one atom of rounding
        uint256 apv = DivMath.abs(pv);
        assertLe(apv > n ? apv - n : n - apv, 1);
        if (size >= 0) assertLe(uint256(pv), n);
    }

    function testFuzz_applyTradeConservesCostBasisSign(int64 s, int64 d, uint32 px) public pure {
        vm.assume(d != 0);
        int256 cash = int256(d) * int256(uint256(px)) / 1e10;
        int256 on = int256(s) * int256(uint256(px)) / 1e10;
        (int256 ns, int256 non) = MarginMath.applyTrade(s, on, d, cash);
        assertEq(ns, int256(s) + int256(d));
        if (ns == 0) assertEq(non, 0);
        // open notional never has the opposite sign of the position
        if (ns > 0) assertGe(non, 0);
        if (ns < 0) assertLe(non, 0);
    }

    function testFuzz_strictlyReduces(int64 s, int64 d) public pure {
        bool r = MarginMath.strictlyReduces(s, d);
        int256 ns = int256(s) + int256(d);
        bool expect = DivMath.abs(ns) < DivMath.abs(s) && (ns == 0 || (ns > 0) == (s > 0));
        assertEq(r, expect);
    }
}
