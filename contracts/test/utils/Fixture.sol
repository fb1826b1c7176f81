// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BatchEncoder} from "./BatchEncoder.sol";
import {Test, Vm} from "./Test.sol";
import {ClearinghouseHarness} from "../harness/ClearinghouseHarness.sol";
import {Clearinghouse} from "../../src/Clearinghouse.sol";
import {LiquidationModule} from "../../src/impl/LiquidationModule.sol";
import {OracleAdapter} from "../../src/oracles/OracleAdapter.sol";
import {SettableFeed} from "../../src/oracles/SettableFeed.sol";
import {TestToken} from "../../src/test-tokens/TestToken.sol";
import {IClearinghouseEvents} from "../../src/interfaces/IClearinghouseEvents.sol";
import {Tier, MarketConfig, Health, Order} from "../../src/interfaces/ICrossbookTypes.sol";

/// @dev Common deployment: quote USDC (6), WETH (18, asset 1), WBTC (8, asset 2); markets 0 ETH, 1 BTC, 2 SOL.
abstract contract Fixture is Test, IClearinghouseEvents {
    uint8 constant BAD_SIGNATURE = 1;
    uint8 constant EXPIRED = 2;
    uint8 constant OVERFILL = 3;
    uint256 constant SPENT = type(uint64).max; // filledAmount of a spent nonce (docs/protocol.md §4)
    uint8 constant PRICE_LIMIT = 4;
    uint8 constant FEE_TOO_HIGH = 5;
    uint8 constant REDUCE_ONLY = 6;
    uint8 constant INSUFFICIENT_MARGIN = 7;
    uint8 constant INVALID_ITEM = 8;
    uint8 constant ORACLE_UNAVAILABLE = 9;
    uint8 constant OPEN_INTEREST_CAP = 10;
    uint8 constant REPLAYED = 11;
    uint8 constant INSUFFICIENT_BALANCE = 12;
    uint8 constant TRANSFER_FAILED = 13;

    uint256 constant PPM = 1_000_000;
    uint64 constant ETH_PX = 2000e8;
    uint64 constant BTC_PX = 60000e8;
    uint64 constant SOL_PX = 100e8;
    uint64 constant FAR = 4_000_000_000;
    uint64 constant DELAY = 7 days;

    ClearinghouseHarness ch;
    OracleAdapter oracle;
    TestToken usdc;
    TestToken weth;
    TestToken wbtc;
    SettableFeed fEth;
    SettableFeed fBtc;
    SettableFeed fSol;

    address admin = address(this);
    address operator = address(0x0BEEF);

    uint256 constant ALICE_PK = 0xA11CE;
    uint256 constant BOB_PK = 0xB0B;
    uint256 constant CAROL_PK = 0xCA201;
    uint256 constant AGENT_PK = 0xA6E27;
    address alice;
    address bob;
    address carol;
    address agent;

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        alice = vm.addr(ALICE_PK);
        bob = vm.addr(BOB_PK);
        carol = vm.addr(CAROL_PK);
        agent = vm.addr(AGENT_PK);

        usdc = new TestToken("USD Coin", "USDC", 6);
        weth = new TestToken("Wrapped Ether", "WETH", 18);
        wbtc = new TestToken("Wrapped BTC", "WBTC", 8);
        fEth = new SettableFeed(8, "ETH / USD");
        fBtc = new SettableFeed(18, "BTC / USD");
        fSol = new SettableFeed(6, "SOL / USD");
        fEth.setAnswer(int256(uint256(ETH_PX)));
        fBtc.setAnswer(int256(uint256(BTC_PX)) * 1e10);
        fSol.setAnswer(int256(uint256(SOL_PX)) / 100);
        oracle = new OracleAdapter(admin);
        oracle.setFeed(1, address(fEth), 3600, 1, type(uint64).max);
        oracle.setFeed(2, address(fBtc), 3600, 1, type(uint64).max);
        oracle.setFeed(3, address(fSol), 3600, 1, type(uint64).max);

        ch = new ClearinghouseHarness(admin, address(oracle), address(usdc), DELAY);
        ch.setLiquidationModule(address(new LiquidationModule(address(oracle))));
        ch.grantRole(ch.OPERATOR_ROLE(), operator);
        ch.listCollateral(address(weth), 1, 800_000, 900_000, type(uint128).max);
        ch.listCollateral(address(wbtc), 2, 700_000, 850_000, type(uint128).max);
        ch.listMarket(_cfg(1, 1e6, 1e5, 1e15));
        ch.listMarket(_cfg(2, 1e8, 1e4, 1e15));
        ch.listMarket(_cfg(3, 1e4, 1e6, 1e15));
        ch.setPnlHaircut(500_000);
    }

    function _cfg(uint16 feedId, uint64 tick, uint64 lot, uint64 oiCap) internal pure returns (MarketConfig memory c) {
        c.feedId = feedId;
        c.tickSize = tick;
        c.lotSize = lot;
        c.openInterestCap = oiCap;
        c.maxFundingPpm = 1000;
        c.fundingPeriod = 0; // items clamped one by one; FundingBudget.t.sol tests the time budget
        c.tiers = new Tier[](3);
        c.tiers[0] = Tier(1e12, 50_000, 30_000);
        c.tiers[1] = Tier(5e12, 100_000, 60_000);
        c.tiers[2] = Tier(0, 200_000, 120_000);
    }

    // ------------------------------------------------------------------ funding of accounts

    function _depositQuote(address who, uint32 sub, uint256 amount) internal {
        usdc.mint(address(this), amount);
        usdc.approve(address(ch), amount);
        ch.deposit(who, sub, 0, amount);
    }

    function _depositWeth(address who, uint32 sub, uint256 amount) internal {
        weth.mint(address(this), amount);
        weth.approve(address(ch), amount);
        ch.deposit(who, sub, 1, amount);
    }

    // ------------------------------------------------------------------ orders and items

    function _order(address owner, uint32 sub, uint32 market, bool isBuy, uint64 price, uint64 size, uint64 nonce)
        internal
        pure
        returns (Order memory o)
    {
        o = Order(owner, sub, market, isBuy, false, price, size, nonce, FAR, 1000);
    }

    function _packOrder(Order memory o) internal pure returns (bytes memory) {
        uint8 flags = (o.isBuy ? 1 : 0) | (o.reduceOnly ? 2 : 0);
        return abi.encodePacked(
            o.owner, o.subaccount, o.market, flags, o.price, o.size, o.nonce, o.expiry, o.maxFeePpm
        );
    }

    function _sig(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    function _signedOrder(Order memory o, uint256 pk) internal view returns (bytes memory) {
        return abi.encodePacked(_packOrder(o), _sig(pk, ch.orderDigest(o)));
    }

    function _fillItem(
        Order memory taker,
        uint256 takerPk,
        Order memory maker,
        uint256 makerPk,
        uint64 size,
        uint64 price,
        uint32 takerFee,
        uint32 makerFee
    ) internal view returns (bytes memory) {
        return abi.encodePacked(
            uint8(1), _signedOrder(taker, takerPk), _signedOrder(maker, makerPk), size, price, takerFee, makerFee
        );
    }

    /// @dev Simple fill: alice(sub 0) takes `isBuy` against bob(sub 0) at `price`, nonces given.
    function _simpleFill(uint32 market, bool takerBuys, uint64 price, uint64 size, uint64 tNonce, uint64 mNonce)
        internal
        view
        returns (bytes memory)
    {
        Order memory t = _order(alice, 0, market, takerBuys, price, size, tNonce);
        Order memory m = _order(bob, 0, market, !takerBuys, price, size, mNonce);
        return _fillItem(t, ALICE_PK, m, BOB_PK, size, price, 500, 100);
    }

    function _withdrawItem(uint256 pk, uint32 sub, uint16 asset, uint128 amount, uint64 nonce, uint64 expiry)
        internal
        view
        returns (bytes memory)
    {
        bytes memory sig = _sig(pk, ch.withdrawalDigest(vm.addr(pk), sub, asset, amount, nonce, expiry));
        return abi.encodePacked(uint8(2), vm.addr(pk), sub, asset, amount, nonce, expiry, sig);
    }

    function _transferItem(uint256 pk, uint32 fromSub, uint32 toSub, uint16 asset, uint128 amount, uint64 nonce)
        internal
        view
        returns (bytes memory)
    {
        bytes memory sig = _sig(pk, ch.transferDigest(vm.addr(pk), fromSub, toSub, asset, amount, nonce, FAR));
        return abi.encodePacked(uint8(3), vm.addr(pk), fromSub, toSub, asset, amount, nonce, FAR, sig);
    }

    function _fundingItem(uint32 market, int32 rate) internal pure returns (bytes memory) {
        return abi.encodePacked(uint8(4), market, rate);
    }

    function _forcedItem(uint64 requestId) internal pure returns (bytes memory) {
        return abi.encodePacked(uint8(5), requestId);
    }

    function _batch(bytes[] memory items) internal view returns (bytes memory b) {
        return BatchEncoder.encode(ch.nextSeq(), items);
    }

    function _one(bytes memory item) internal pure returns (bytes[] memory items) {
        items = new bytes[](1);
        items[0] = item;
    }

    /// @dev Settles the items; returns the reject reason per item (0 = applied).
    function _settle(bytes[] memory items) internal returns (uint8[] memory reasons) {
        return _settleBatch(_batch(items), items.length);
    }

    /// @dev Settles an encoded batch of `n` items starting at the next seq; returns the reject reason per item.
    function _settleBatch(bytes memory b, uint256 n) internal returns (uint8[] memory reasons) {
        uint64 first = ch.nextSeq();
        vm.recordLogs();
        vm.prank(operator);
        ch.settle(b);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        reasons = new uint8[](n);
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].topics.length == 2 && logs[i].topics[0] == ItemRejected.selector) {
                uint256 seq = uint256(logs[i].topics[1]);
                reasons[seq - first] = abi.decode(logs[i].data, (uint8));
            }
        }
        assertEq(ch.nextSeq(), first + n, "nextSeq");
    }

    function _settleOne(bytes memory item) internal returns (uint8) {
        return _settle(_one(item))[0];
    }

    function _size(address owner, uint32 sub, uint32 market) internal view returns (int256 s) {
        (s,,) = ch.position(owner, sub, market);
    }
}
