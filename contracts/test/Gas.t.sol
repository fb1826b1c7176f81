// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BatchEncoder} from "./utils/BatchEncoder.sol";
import {Fixture} from "./utils/Fixture.sol";
import {Order} from "../src/interfaces/ICrossbookTypes.sol";

/// @dev Gas per fill of settle() in the steady state of the brief: 3 markets, quote + 2 collateral assets,
///      50 makers and 200 takers already holding positions in every market and both collateral assets.
///      Run with `forge test --match-contract GasTest -vv` to see the figures.
contract GasTest is Fixture {
    uint256 constant MAKERS = 50;
    uint256 constant TAKERS = 200;
    uint256 constant MAKER_PK0 = 0x10000;
    uint256 constant TAKER_PK0 = 0x20000;
    uint256 constant FRESH_PK0 = 0x30000;

    function setUp() public override {
        super.setUp();
        for (uint256 i = 0; i < MAKERS; ++i) {
            _portfolio(vm.addr(MAKER_PK0 + i), i);
        }
        for (uint256 i = 0; i < TAKERS; ++i) {
            _portfolio(vm.addr(TAKER_PK0 + i), i + 1);
        }
        for (uint256 i = 0; i < 100; ++i) {
            ch.harnessSetPortfolio(vm.addr(FRESH_PK0 + i), 0, 1e11, new uint16[](0), new uint256[](0), new uint32[](0), new int256[](0), new int256[](0), new int256[](0));
        }
        ch.harnessSetOpenInterest(0, 1e12);
        ch.harnessSetOpenInterest(1, 1e12);
        ch.harnessSetOpenInterest(2, 1e12);
        // warm-up: every maker's resting orders are already partially filled, every taker has traded before
        _run(_fills(100, 0, TAKER_PK0, 1), false);
        _run(_fills(100, 100, TAKER_PK0, 1), false);
    }

    function _portfolio(address who, uint256 salt) internal {
        uint16[] memory assets = new uint16[](2);
        uint256[] memory amounts = new uint256[](2);
        assets[0] = 1;
        assets[1] = 2;
        amounts[0] = 10e18;
        amounts[1] = 1e8;
        uint32[] memory markets = new uint32[](3);
        int256[] memory sizes = new int256[](3);
        int256[] memory ons = new int256[](3);
        int256 sign = salt % 2 == 0 ? int256(1) : -1;
        markets[0] = 0;
        markets[1] = 1;
        markets[2] = 2;
        sizes[0] = sign * 5e8;
        sizes[1] = sign * 1e7;
        sizes[2] = sign * 100e8;
        ons[0] = sign * 10_000e6;
        ons[1] = sign * 6_000e6;
        ons[2] = sign * 10_000e6;
        ch.harnessSetPortfolio(who, 0, 1e12, assets, amounts, markets, sizes, ons, new int256[](3));
    }

    function _marketParams(uint256 m) internal pure returns (uint64 px, uint64 size) {
        if (m == 0) return (ETH_PX, 1e7);
        if (m == 1) return (BTC_PX, 1e5);
        return (SOL_PX, 1e8);
    }

    /// @dev `n` fills; fill i: taker (takerBase + firstTaker + i) with `takerNonce`, maker i % 50 (resting order
    ///      nonce 1000 + market), market i % 3, taker buys on even i.
    function _fills(uint256 n, uint256 firstTaker, uint256 takerBase, uint64 takerNonce)
        internal
        view
        returns (bytes[] memory items)
    {
        items = new bytes[](n);
        for (uint256 i = 0; i < n; ++i) {
            items[i] = _fillAt(i, takerBase + firstTaker + i, takerNonce);
        }
    }

    function _fillAt(uint256 i, uint256 tpk, uint64 takerNonce) internal view returns (bytes memory) {
        uint32 m = uint32(i % 3);
        (uint64 px, uint64 size) = _marketParams(m);
        bool buy = i % 2 == 0;
        uint256 mpk = MAKER_PK0 + (i % MAKERS);
        Order memory t = _order(vm.addr(tpk), 0, m, buy, px, size, takerNonce);
        Order memory k = _order(vm.addr(mpk), 0, m, !buy, px, 1e18, 1000 + 2 * m + (buy ? 1 : 0));
        return _fillItem(t, tpk, k, mpk, size, px, 500, 100);
    }

    function _build(bytes[] memory items) internal view returns (bytes memory) {
        return BatchEncoder.encode(ch.nextSeq(), items);
    }

    function _run(bytes[] memory items, bool expectAllApplied) internal returns (uint256 gasUsed, uint256 cdGas) {
        bytes memory b = _build(items);
        for (uint256 i = 0; i < b.length; ++i) {
            cdGas += b[i] == 0 ? 4 : 16;
        }
        vm.recordLogs();
        vm.prank(operator);
        ch.settle(b);
        gasUsed = vm.lastCallGas().gasTotalUsed;
        if (expectAllApplied) {
            uint256 rejected;
            Vm_Log[] memory logs = _logs();
            for (uint256 i = 0; i < logs.length; ++i) {
                if (logs[i].topics[0] == ItemRejected.selector) ++rejected;
            }
            assertEq(rejected, 0, "rejected items");
        }
    }

    struct Vm_Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function _logs() internal returns (Vm_Log[] memory out) {
        bytes memory raw = abi.encode(vm.getRecordedLogs());
        out = abi.decode(raw, (Vm_Log[]));
    }

    function _report(string memory label, uint256 n, uint256 gasUsed, uint256 cdGas) internal {
        emit log_named_uint(string.concat(label, ": execution gas per fill"), gasUsed / n);
        emit log_named_uint(string.concat(label, ": calldata gas per fill (16/4 per byte)"), cdGas / n);
        emit log_named_uint(string.concat(label, ": total per fill incl. 21000/tx"), (gasUsed + cdGas + 21000) / n);
    }

    function test_gas_steady_1() public {
        (uint256 g, uint256 cd) = _run(_fills(1, 0, TAKER_PK0, 2), true);
        _report("steady 1 fill", 1, g, cd);
    }

    function test_gas_steady_10() public {
        (uint256 g, uint256 cd) = _run(_fills(10, 0, TAKER_PK0, 2), true);
        _report("steady 10 fills", 10, g, cd);
    }

    function test_gas_steady_100() public {
        (uint256 g, uint256 cd) = _run(_fills(100, 0, TAKER_PK0, 2), true);
        _report("steady 100 fills", 100, g, cd);
    }

    function test_gas_fresh_takers_100() public {
        (uint256 g, uint256 cd) = _run(_fills(100, 0, FRESH_PK0, 1), true);
        _report("100 fills, fresh takers", 100, g, cd);
    }

    /// @dev `n` fills among 10 makers and 10 takers (all with positions), a fresh order on both sides filled
    ///      completely: the same accounts trading many times in one batch (`bench gas` gas_per_fill_1000_20acct).
    function _repeatFills(uint256 n) internal view returns (bytes[] memory items) {
        items = new bytes[](n);
        for (uint256 i = 0; i < n; ++i) {
            uint32 m = uint32(i % 3);
            (uint64 px, uint64 size) = _marketParams(m);
            bool buy = (i / 3) % 2 == 0;
            uint256 tpk = TAKER_PK0 + (i * 7) % 10;
            uint256 mpk = MAKER_PK0 + (i * 3) % 10;
            // nonces sequential per owner, as the SDK issues them
            uint64 nonce = uint64(5000 + i / 10);
            Order memory t = _order(vm.addr(tpk), 0, m, buy, px, size, nonce);
            Order memory k = _order(vm.addr(mpk), 0, m, !buy, px, size, nonce);
            items[i] = _fillItem(t, tpk, k, mpk, size, px, 500, 100);
        }
    }

    function test_gas_repeat_accounts_1000() public {
        (uint256 g, uint256 cd) = _run(_repeatFills(1000), true);
        _report("1000 fills, 20 accounts, fresh orders", 1000, g, cd);
    }

    function test_gas_repeat_breakdown_1000() public {
        _breakdown("repeat breakdown", _repeatFills(1000));
    }

    function test_gas_repeat_accounts_100() public {
        (uint256 g, uint256 cd) = _run(_repeatFills(100), true);
        _report("100 fills, 20 accounts, fresh orders", 100, g, cd);
    }

    /// @dev Breakdown: the same 100 fills rejected at different stages.
    function test_gas_breakdown_100() public {
        _breakdown("breakdown", _fills(100, 0, TAKER_PK0, 2));
    }

    /// @dev Settles `items` three times: rejected INVALID_ITEM before signatures (fill size 0), rejected
    ///      FEE_TOO_HIGH after signatures, expiry, filled-amount reads and limits (nothing signed is changed),
    ///      then applied; reports the per-fill differences.
    function _breakdown(string memory label, bytes[] memory items) internal {
        uint256 n = items.length;
        bytes[] memory invalid = new bytes[](n);
        bytes[] memory fee = new bytes[](n);
        for (uint256 i = 0; i < n; ++i) {
            bytes memory it = bytes.concat(items[i]);
            for (uint256 j = 261; j < 269; ++j) {
                it[j] = 0;
            }
            invalid[i] = it;
            it = bytes.concat(items[i]);
            it[277] = 0xff;
            fee[i] = it;
        }
        uint256[3] memory g;
        (g[0],) = _run(invalid, false);
        (g[1],) = _run(fee, false);
        (g[2],) = _run(items, true);
        emit log_named_uint(string.concat(label, ": parse + loop per fill"), g[0] / n);
        emit log_named_uint(string.concat(label, ": + 2 EIP-712 hashes, 2 ecrecover, filled reads"), (g[1] - g[0]) / n);
        emit log_named_uint(string.concat(label, ": + state load, margin (2 sides), stores"), (g[2] - g[1]) / n);
        emit log_named_uint(string.concat(label, ": total per fill"), g[2] / n);
    }
}
