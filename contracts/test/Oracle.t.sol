// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {OracleAdapter} from "../src/oracles/OracleAdapter.sol";
import {SettableFeed} from "../src/oracles/SettableFeed.sol";
import {IOracleAdapter} from "../src/interfaces/IOracleAdapter.sol";

contract RevertingFeed {
    function decimals() external pure returns (uint8) {
        return 8;
    }

    function latestRoundData() external pure returns (uint80, int256, uint256, uint256, uint80) {
        revert("down");
    }
}

contract OracleTest is Test {
    OracleAdapter oracle;
    SettableFeed f8;
    SettableFeed f18;
    SettableFeed f6;

    function setUp() public {
        vm.warp(1_700_000_000);
        oracle = new OracleAdapter(address(this));
        f8 = new SettableFeed(8, "A");
        f18 = new SettableFeed(18, "B");
        f6 = new SettableFeed(6, "C");
        oracle.setFeed(1, address(f8), 60, 1, type(uint64).max);
        oracle.setFeed(2, address(f18), 60, 1, type(uint64).max);
        oracle.setFeed(3, address(f6), 60, 100e8, 200e8);
    }

    function test_scaling() public {
        f8.setAnswer(123456789);
        f18.setAnswer(1234567891234567891); // 1.234567891234567891 -> 1.23456789 (truncated)
        f6.setAnswer(150_123456);
        assertEq(oracle.price(1), 123456789);
        assertEq(oracle.price(2), 123456789);
        assertEq(oracle.price(3), 150_12345600);
        (bool ok, uint256 p) = oracle.tryPrice(3);
        assertTrue(ok);
        assertEq(p, 150_12345600);
    }

    function test_stale() public {
        f8.setAnswerAt(5, block.timestamp - 60);
        assertEq(oracle.price(1), 5);
        f8.setAnswerAt(5, block.timestamp - 61);
        vm.expectRevert(abi.encodeWithSelector(IOracleAdapter.OracleStale.selector, uint16(1), block.timestamp - 61));
        oracle.price(1);
        (bool ok,) = oracle.tryPrice(1);
        assertFalse(ok);
    }

    function test_nonPositive() public {
        f8.setAnswer(0);
        vm.expectRevert(abi.encodeWithSelector(IOracleAdapter.OracleNonPositive.selector, uint16(1), int256(0)));
        oracle.price(1);
        f8.setAnswer(-1);
        (bool ok,) = oracle.tryPrice(1);
        assertFalse(ok);
    }

    function test_band() public {
        f6.setAnswer(99_999999);
        vm.expectRevert(abi.encodeWithSelector(IOracleAdapter.OracleOutOfBand.selector, uint16(3), uint256(99_99999900)));
        oracle.price(3);
        f6.setAnswer(200_000001);
        (bool ok,) = oracle.tryPrice(3);
        assertFalse(ok);
        f6.setAnswer(200_000000);
        assertEq(oracle.price(3), 200e8);
        // a price truncating to 0 is out of band
        f18.setAnswer(1);
        (ok,) = oracle.tryPrice(2);
        assertFalse(ok);
    }

    function test_unknownAndReverting() public {
        vm.expectRevert(abi.encodeWithSelector(IOracleAdapter.OracleUnknownFeed.selector, uint16(9)));
        oracle.price(9);
        RevertingFeed r = new RevertingFeed();
        oracle.setFeed(4, address(r), 60, 1, 2);
        (bool ok,) = oracle.tryPrice(4);
        assertFalse(ok);
    }

    function test_onlyOwnerAndValidation() public {
        vm.prank(address(0xdead));
        vm.expectRevert();
        oracle.setFeed(5, address(f8), 60, 1, 2);
        vm.expectRevert(OracleAdapter.InvalidFeedConfig.selector);
        oracle.setFeed(5, address(f8), 60, 0, 2);
        vm.expectRevert(OracleAdapter.InvalidFeedConfig.selector);
        oracle.setFeed(5, address(f8), 60, 3, 2);
    }

    function test_settableFeedRounds() public {
        f8.setAnswer(10);
        vm.warp(block.timestamp + 5);
        f8.setAnswer(11);
        (uint80 id, int256 a,, uint256 u, uint80 air) = f8.latestRoundData();
        assertEq(uint256(id), 2);
        assertEq(a, 11);
        assertEq(u, block.timestamp);
        assertEq(uint256(air), 2);
        (, a,,,) = f8.getRoundData(1);
        assertEq(a, 10);
        vm.expectRevert(abi.encodeWithSelector(SettableFeed.UnknownRound.selector, uint80(3)));
        f8.getRoundData(3);
        assertEq(f8.version(), 1);
        assertEq(f8.decimals(), 8);
    }
}
