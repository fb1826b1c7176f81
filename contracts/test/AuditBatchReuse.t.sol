// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";
import {Order} from "../src/interfaces/ICrossbookTypes.sol";

/// @dev Differential audit of the settlement caches where BatchCache.t.sol does not reach: a small pool of signed
///      orders filled again and again (resting orders on either side, per-side order copies, the order table's
///      signature cache), orders of one owner sharing a nonce (one budget), fills between two sub-accounts of one
///      owner, transfers between them, collateral withdrawals and FUNDING items in between. The same items settled
///      in one batch and one per batch must give the same outcome per item and the same final state (balances,
///      positions, filled amounts, open interest, fee pool, funding balances).
contract AuditBatchReuseTest is Fixture {
    uint256 constant N = 48;
    uint256 constant NO = 16; // orders in the pool
    uint256[4] internal pks = [ALICE_PK, BOB_PK, CAROL_PK, uint256(0xD00D)];

    function _r(uint256 seed, uint256 i, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return bound(uint256(keccak256(abi.encode(seed, i))), lo, hi);
    }

    function _mkt(uint256 m) internal pure returns (uint64 px, uint64 lot) {
        if (m == 0) return (ETH_PX, 1e7);
        if (m == 1) return (BTC_PX, 1e5);
        return (SOL_PX, 1e8);
    }

    function _setUpAccounts(uint256 seed) internal {
        for (uint256 a = 0; a < 8; ++a) {
            uint16[] memory assets = new uint16[](1);
            uint256[] memory amounts = new uint256[](1);
            assets[0] = 1;
            amounts[0] = _r(seed, 100 + a, 0, 3e18);
            uint32[] memory markets = new uint32[](3);
            int256[] memory sizes = new int256[](3);
            int256[] memory ons = new int256[](3);
            int256[] memory snaps = new int256[](3);
            for (uint256 m = 0; m < 3; ++m) {
                markets[m] = uint32(m);
                (uint64 px, uint64 lot) = _mkt(m);
                sizes[m] = (int256(_r(seed, 200 + a * 3 + m, 0, 20)) - 10) * int256(uint256(lot));
                ons[m] = sizes[m] * int256(uint256(px)) / 1e10;
                snaps[m] = 0;
            }
            int256 quote = int256(_r(seed, 400 + a, 0, 6000e6)) - 1000e6;
            ch.harnessSetPortfolio(vm.addr(pks[a % 4]), uint32(a / 4), quote, assets, amounts, markets, sizes, ons, snaps);
        }
        weth.mint(address(ch), 24e18); // backs the harness's collateral balances, so withdrawals can pay
        ch.harnessSetOpenInterest(0, 1e15 - 3e8);
        ch.harnessSetOpenInterest(1, 1e13);
        ch.harnessSetOpenInterest(2, 1e13);
    }

    /// @dev Order i of the pool: owner pks[i % 4], sub-account (i / 4) % 2; orders 8.. reuse the nonce of order
    ///      i - 8 (same owner): a second order on one budget, possibly another sub-account, market or side.
    function _pool(uint256 seed) internal view returns (Order[] memory os) {
        os = new Order[](NO);
        for (uint256 i = 0; i < NO; ++i) {
            uint32 m = uint32(_r(seed, 600 + i, 0, 2));
            (uint64 px, uint64 lot) = _mkt(m);
            bool buy = _r(seed, 700 + i, 0, 1) == 1;
            uint64 size = lot * uint64(_r(seed, 800 + i, 4, 30));
            // limits from 2% through to never binding
            uint64 slack = uint64(_r(seed, 900 + i, 0, 3)) * px / 50;
            uint64 limit = buy ? px + slack : px - slack;
            if (_r(seed, 950 + i, 0, 3) == 0) limit = buy ? type(uint64).max : 1;
            os[i] = Order(vm.addr(pks[i % 4]), uint32((i / 4) % 2), m, buy, _r(seed, 1000 + i, 0, 5) == 0, limit, size,
                uint64(1 + i % 8), FAR, 1000);
        }
    }

    function _fill(uint256 seed, uint256 i, Order[] memory os) internal view returns (bytes memory) {
        uint256 ti = _r(seed, 4000 + i, 0, NO - 1);
        for (uint256 tries = 0; tries < 16; ++tries) {
            uint256 ki = _r(seed, 5000 + i * 16 + tries, 0, NO - 1);
            if (os[ki].market != os[ti].market || os[ki].isBuy == os[ti].isBuy) continue;
            return _fillOf(seed, i, os, ti, ki);
        }
        return _fundingItem(os[ti].market, int32(int256(_r(seed, 3000 + i, 0, 2000))) - 1000);
    }

    function _fillOf(uint256 seed, uint256 i, Order[] memory os, uint256 ti, uint256 ki)
        internal
        view
        returns (bytes memory)
    {
        uint64[3] memory spf; // size, price, taker fee
        {
            (uint64 px, uint64 lot) = _mkt(os[ti].market);
            spf[0] = lot * uint64(_r(seed, 7000 + i, 1, 6));
            spf[1] = px - px / 50 + uint64(_r(seed, 8000 + i, 0, 8)) * (px / 200);
            spf[2] = uint64(_r(seed, 8500 + i, 0, 1200));
        }
        return _fillItem(os[ti], pks[ti % 4], os[ki], pks[ki % 4], spf[0], spf[1], uint32(spf[2]), 100);
    }

    function _items(uint256 seed) internal view returns (bytes[] memory items) {
        Order[] memory os = _pool(seed);
        items = new bytes[](N);
        for (uint256 i = 0; i < N; ++i) {
            uint256 kind = _r(seed, 1100 + i, 0, 19);
            uint256 w = _r(seed, 2000 + i, 0, 3);
            if (kind == 0) {
                items[i] = _fundingItem(uint32(_r(seed, 2100 + i, 0, 2)), int32(int256(_r(seed, 3000 + i, 0, 2000))) - 1000);
            } else if (kind == 1) {
                items[i] = _withdrawItem(pks[w], uint32(_r(seed, 2200 + i, 0, 1)), 1, uint128(_r(seed, 3100 + i, 1, 1e18)), uint64(100 + i), FAR);
            } else if (kind == 2) {
                uint32 from = uint32(_r(seed, 2200 + i, 0, 1));
                uint16 asset = uint16(_r(seed, 2300 + i, 0, 1));
                uint128 amt = asset == 0 ? uint128(_r(seed, 3200 + i, 1, 2000e6)) : uint128(_r(seed, 3200 + i, 1, 1e18));
                items[i] = _transferItem(pks[w], from, 1 - from, asset, amt, uint64(200 + i));
            } else {
                items[i] = _fill(seed, i, os);
            }
        }
    }

    function _state() internal view returns (int256[] memory st) {
        Order[] memory os = _pool(0); // owners and nonces do not depend on the seed
        st = new int256[](8 * 5 + NO + 3 + 1 + 3);
        uint256 j;
        for (uint256 a = 0; a < 8; ++a) {
            address who = vm.addr(pks[a % 4]);
            uint32 sub = uint32(a / 4);
            st[j++] = ch.quoteBalance(who, sub);
            st[j++] = int256(ch.collateralBalance(who, sub, 1));
            for (uint32 m = 0; m < 3; ++m) {
                (int256 s, int256 o,) = ch.position(who, sub, m);
                st[j++] = s + o * 7;
            }
        }
        for (uint256 i = 0; i < NO; ++i) {
            st[j++] = int256(ch.filledAmount(os[i].owner, os[i].nonce));
        }
        for (uint32 m = 0; m < 3; ++m) {
            st[j++] = int256(ch.openInterest(m));
            st[j++] = ch.fundingBalance(m);
        }
        st[j++] = int256(ch.feePool());
        assertEq(j, st.length, "state length");
    }

    function _conserved() internal view {
        int256 q;
        for (uint256 a = 0; a < 8; ++a) {
            q += ch.quoteBalance(vm.addr(pks[a % 4]), uint32(a / 4));
        }
        // harness portfolios are not backed by tokens: compare the changes, not the levels
        q += int256(ch.insuranceFund()) + int256(ch.feePool()) + ch.fundingBalance(0) + ch.fundingBalance(1)
            + ch.fundingBalance(2);
        assertEq(q - int256(usdc.balanceOf(address(ch))), _base, "quote conservation");
    }

    int256 internal _base;

    function test_reusePinnedSeeds() public {
        for (uint256 s = 1; s <= 8; ++s) {
            uint256 snap = vm.snapshotState();
            testFuzz_reusedOrdersBatchEqualsOneItemPerBatch(s);
            vm.revertToState(snap);
        }
    }

    function testFuzz_reusedOrdersBatchEqualsOneItemPerBatch(uint256 seed) public {
        _setUpAccounts(seed);
        bytes[] memory items = _items(seed);
        _base = 0;
        for (uint256 x = 0; x < 8; ++x) {
            _base += ch.quoteBalance(vm.addr(pks[x % 4]), uint32(x / 4));
        }
        _base -= int256(usdc.balanceOf(address(ch)));
        uint256 snap = vm.snapshotState();
        uint8[] memory together = _settle(items);
        int256[] memory a = _state();
        _conserved();
        vm.revertToState(snap);
        uint256 applied;
        uint256 fills;
        for (uint256 i = 0; i < N; ++i) {
            uint8 r = _settleOne(items[i]);
            assertEq(r, together[i], "item outcome");
            if (r == 0 && items[i].length == 285) ++fills;
            if (r == 0) ++applied;
        }
        int256[] memory b = _state();
        _conserved();
        for (uint256 i = 0; i < a.length; ++i) {
            assertEq(a[i], b[i], "final state");
        }
        assertTrue(applied > 0, "some items applied");
        emit log_named_uint("fills applied", fills);
    }
}
