// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {BatchEncoder} from "./utils/BatchEncoder.sol";
import {Test, Vm} from "./utils/Test.sol";
import {Fixture} from "./utils/Fixture.sol";
import {Clearinghouse} from "../src/Clearinghouse.sol";
import {TestToken} from "../src/test-tokens/TestToken.sol";
import {SettableFeed} from "../src/oracles/SettableFeed.sol";
import {Order} from "../src/interfaces/ICrossbookTypes.sol";

/// @dev Random deposits, signed fills, withdrawals, transfers, funding, insurance deposits, fee withdrawals,
///      escape-hatch requests and price moves. Holds OPERATOR_ROLE and DEFAULT_ADMIN_ROLE.
contract Handler is Test {
    Clearinghouse public ch;
    TestToken public usdc;
    TestToken public weth;
    SettableFeed public fEth;
    SettableFeed public fSol;
    uint256[] public pks;
    uint64 public maxSeqSeen;
    uint64 internal nonce = 1;
    uint64[] internal requests;
    uint256 public applied;
    uint256 public rejected;
    uint256 public liquidations;
    uint256 public badDebts;
    uint256 public deleverages;

    uint64 constant FAR = 4_000_000_000;

    constructor(Clearinghouse ch_, TestToken usdc_, TestToken weth_, SettableFeed fEth_, SettableFeed fSol_) {
        ch = ch_;
        usdc = usdc_;
        weth = weth_;
        fEth = fEth_;
        fSol = fSol_;
        pks.push(0x1001);
        pks.push(0x1002);
        pks.push(0x1003);
        pks.push(0x1004);
        usdc.approve(address(ch), type(uint256).max);
        weth.approve(address(ch), type(uint256).max);
    }

    function actorCount() external view returns (uint256) {
        return pks.length;
    }

    function actor(uint256 i) public view returns (address) {
        return vm.addr(pks[i]);
    }

    // ------------------------------------------------------------------ actions

    function deposit(uint256 who, uint32 sub, bool collateral, uint256 amount) external {
        address owner = actor(who % pks.length);
        sub = sub % 2;
        if (collateral) {
            amount = bound(amount, 1, 50e18);
            weth.mint(address(this), amount);
            ch.deposit(owner, sub, 1, amount);
        } else {
            amount = bound(amount, 1, 200_000e6);
            usdc.mint(address(this), amount);
            ch.deposit(owner, sub, 0, amount);
        }
    }

    function fill(uint256 seedA, uint256 seedB, bool ethMarket, bool takerBuys, uint256 lots, int256 tickOff, uint32 fee)
        external
    {
        uint256 a = seedA % 8;
        uint256 b = seedB % 8;
        if (a == b) b = (b + 1) % 8;
        fee = uint32(bound(fee, 0, 1000));
        _settle(_fillItem(a, b, ethMarket ? 0 : 2, takerBuys, _price(ethMarket, tickOff), _fillSize(ethMarket, lots), fee));
    }

    function _price(bool eth, int256 tickOff) internal pure returns (uint64) {
        (uint64 px, uint64 tick) = eth ? (2000e8, 1e6) : (100e8, 1e4);
        return uint64(uint256(int256(uint256(px)) + boundInt(tickOff, -200, 200) * int256(uint256(tick))));
    }

    function _fillSize(bool eth, uint256 lots) internal pure returns (uint64) {
        return uint64(bound(lots, 1, 20_000)) * (eth ? 1e5 : 1e6);
    }

    function _fillItem(uint256 a, uint256 b, uint32 m, bool takerBuys, uint64 price, uint64 size, uint32 fee)
        internal
        returns (bytes memory)
    {
        Order memory t = Order(actor(a / 2), uint32(a % 2), m, takerBuys, false, price, size, nonce++, FAR, 1000);
        Order memory k = Order(actor(b / 2), uint32(b % 2), m, !takerBuys, false, price, size, nonce++, FAR, 1000);
        bytes memory st = _signed(t, pks[a / 2]);
        bytes memory sk = _signed(k, pks[b / 2]);
        return abi.encodePacked(uint8(1), st, sk, size, price, fee, uint32(fee / 2));
    }

    function withdraw(uint256 who, uint32 sub, bool collateral, uint256 amount) external {
        uint256 pk = pks[who % pks.length];
        sub = sub % 2;
        uint16 asset = collateral ? 1 : 0;
        amount = bound(amount, 1, collateral ? 60e18 : 300_000e6);
        address owner = vm.addr(pk);
        bytes32 d = ch.withdrawalDigest(owner, sub, asset, uint128(amount), nonce, FAR);
        bytes memory item =
            abi.encodePacked(uint8(2), owner, sub, asset, uint128(amount), nonce++, FAR, _sig(pk, d));
        _settle(item);
    }

    function transfer(uint256 who, bool fromZero, bool collateral, uint256 amount) external {
        uint256 pk = pks[who % pks.length];
        uint32 fromSub = fromZero ? 0 : 1;
        uint32 toSub = 1 - fromSub;
        uint16 asset = collateral ? 1 : 0;
        amount = bound(amount, 1, collateral ? 60e18 : 300_000e6);
        bytes memory sig = _sig(pk, ch.transferDigest(vm.addr(pk), fromSub, toSub, asset, uint128(amount), nonce, FAR));
        bytes memory item = abi.encodePacked(
            uint8(3), vm.addr(pk), fromSub, toSub, asset, uint128(amount), nonce++, FAR, sig
        );
        _settle(item);
    }

    function funding(bool ethMarket, int32 rate) external {
        _settle(abi.encodePacked(uint8(4), uint32(ethMarket ? 0 : 2), rate));
    }

    function movePrice(bool eth, uint256 pct) external {
        pct = bound(pct, 80, 120);
        if (eth) fEth.setAnswer(int256(2000e8 * pct / 100));
        else fSol.setAnswer(int256(100e6 * pct / 100));
    }

    /// @dev The handler itself liquidates from its sub-account 0 (funded in setUp); reverts (healthy target,
    ///      price limit, ...) are expected and ignored.
    function liquidate(uint256 seed, bool ethMarket, uint64 maxSize) external {
        uint256 a = seed % 8;
        try ch.liquidate(actor(a / 2), uint32(a % 2), ethMarket ? 0 : 2, maxSize, type(uint64).max, 0) {
            ++liquidations;
        } catch {}
        try ch.liquidate(actor(a / 2), uint32(a % 2), ethMarket ? 0 : 2, maxSize, 0, 0) {
            ++liquidations;
        } catch {}
    }

    function liquidateCollateral(uint256 seed, uint128 maxAmount) external {
        uint256 a = seed % 8;
        try ch.liquidateCollateral(actor(a / 2), uint32(a % 2), 1, maxAmount, type(uint64).max, 0) {
            ++liquidations;
        } catch {}
    }

    function settleBadDebt(uint256 seed) external {
        uint256 a = seed % 8;
        try ch.settleBadDebt(actor(a / 2), uint32(a % 2)) {
            ++badDebts;
        } catch {}
    }

    function deleverage(uint256 seedA, uint256 seedB, bool ethMarket, uint64 size) external {
        uint256 a = seedA % 8;
        uint256 b = seedB % 8;
        size = uint64(bound(size, 1, 20_000)) * (ethMarket ? 1e5 : 1e6);
        try ch.deleverage(actor(a / 2), uint32(a % 2), ethMarket ? 0 : 2, actor(b / 2), uint32(b % 2), size) {
            ++deleverages;
        } catch {}
    }

    function depositInsurance(uint256 amount) external {
        amount = bound(amount, 1, 10_000e6);
        usdc.mint(address(this), amount);
        ch.depositInsurance(amount);
    }

    function withdrawFees(uint256 amount) external {
        uint256 pool = ch.feePool();
        if (pool == 0) return;
        ch.withdrawFees(address(0xFEE), bound(amount, 1, pool));
    }

    function requestForced(uint256 who, uint32 sub, uint256 amount) external {
        vm.prank(actor(who % pks.length));
        requests.push(ch.requestForcedWithdrawal(sub % 2, 0, uint128(bound(amount, 1, 100_000e6))));
    }

    function forcedItem(uint256 idx) external {
        if (requests.length == 0) return;
        _settle(abi.encodePacked(uint8(5), requests[idx % requests.length]));
    }

    // ------------------------------------------------------------------ helpers

    function _sig(uint256 pk, bytes32 d) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, d);
        return abi.encodePacked(r, s, v);
    }

    function _signed(Order memory o, uint256 pk) internal view returns (bytes memory) {
        uint8 flags = (o.isBuy ? 1 : 0) | (o.reduceOnly ? 2 : 0);
        return abi.encodePacked(
            abi.encodePacked(o.owner, o.subaccount, o.market, flags, o.price, o.size, o.nonce, o.expiry, o.maxFeePpm),
            _sig(pk, ch.orderDigest(o))
        );
    }

    function _settle(bytes memory item) internal {
        uint64 seq = ch.nextSeq();
        vm.recordLogs();
        bytes[] memory one = new bytes[](1);
        one[0] = item;
        ch.settle(BatchEncoder.encode(seq, one));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        bool rej;
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].topics[0] == keccak256("ItemRejected(uint64,uint8)")) rej = true;
        }
        if (rej) ++rejected;
        else ++applied;
        require(ch.nextSeq() == seq + 1, "seq");
        if (ch.nextSeq() > maxSeqSeen) maxSeqSeen = ch.nextSeq();
    }
}

contract InvariantTest is Fixture {
    Handler handler;

    function setUp() public override {
        super.setUp();
        handler = new Handler(Clearinghouse(address(ch)), usdc, weth, fEth, fSol);
        ch.grantRole(ch.OPERATOR_ROLE(), address(handler));
        ch.grantRole(ch.DEFAULT_ADMIN_ROLE(), address(handler));
        ch.grantRole(keccak256("KEEPER_ROLE"), address(handler));
        usdc.mint(address(this), 10_000_000e6);
        usdc.approve(address(ch), 10_000_000e6);
        ch.deposit(address(handler), 0, 0, 10_000_000e6); // the handler's liquidator sub-account
        ch.setMarketConfig(0, _cfg(1, 1e6, 1e5, 100_000e8));
        for (uint256 i = 0; i < 4; ++i) {
            handler.deposit(i, 0, false, 100_000e6);
            handler.deposit(i, 1, true, 20e18);
        }
        targetContract(address(handler));
    }

    function invariant_conservation() public view {
        int256 quoteSum;
        uint256 wethSum;
        for (uint256 i = 0; i < handler.actorCount(); ++i) {
            address a = handler.actor(i);
            for (uint32 s = 0; s < 2; ++s) {
                quoteSum += ch.quoteBalance(a, s);
                wethSum += ch.collateralBalance(a, s, 1);
            }
        }
        quoteSum += ch.quoteBalance(address(handler), 0);
        wethSum += ch.collateralBalance(address(handler), 0, 1);
        int256 funding = ch.fundingBalance(0) + ch.fundingBalance(1) + ch.fundingBalance(2);
        int256 expected = quoteSum + int256(ch.insuranceFund()) + int256(ch.feePool()) + funding;
        // docs/protocol.md §9.6: bad debt nobody covered is the only gap between tokens and claims
        assertEq(int256(usdc.balanceOf(address(ch))) + int256(ch.unbackedDebt()), expected, "quote conservation");
        assertEq(weth.balanceOf(address(ch)), wethSum, "weth conservation");
        assertEq(ch.collateralConfig(1).totalDeposited, wethSum, "weth total deposited");
    }

    /// @dev Reported with -vv: how many items the random runs applied vs rejected.
    function afterInvariant() public {
        emit log_named_uint("applied items", handler.applied());
        emit log_named_uint("rejected items", handler.rejected());
        emit log_named_uint("liquidations", handler.liquidations());
        emit log_named_uint("bad debts settled", handler.badDebts());
        emit log_named_uint("deleverages", handler.deleverages());
    }

    function invariant_sequenceOnlyIncreases() public view {
        assertGe(ch.nextSeq(), handler.maxSeqSeen());
        assertGe(ch.nextSeq(), 1);
    }

    function invariant_openInterestIsTotalLongs() public view {
        uint256 longs;
        for (uint256 i = 0; i < handler.actorCount(); ++i) {
            address a = handler.actor(i);
            for (uint32 s = 0; s < 2; ++s) {
                int256 size = _size(a, s, 0);
                if (size > 0) longs += uint256(size);
            }
        }
        int256 hs = _size(address(handler), 0, 0);
        if (hs > 0) longs += uint256(hs);
        assertEq(ch.openInterest(0), longs, "open interest");
    }

    function test_handlerSmoke() public {
        handler.deposit(0, 0, false, 100_000e6);
        handler.deposit(1, 0, false, 100_000e6);
        handler.deposit(1, 1, true, 10e18);
        handler.fill(0, 2, true, true, 100, 0, 500);
        handler.funding(true, 100);
        handler.fill(2, 0, true, true, 50, 3, 500);
        handler.withdraw(0, 0, false, 1000e6);
        handler.transfer(1, false, true, 1e18);
        handler.depositInsurance(5e6);
        handler.withdrawFees(1);
        handler.requestForced(0, 0, 10e6);
        handler.forcedItem(0);
        assertEq(handler.rejected(), 0, "rejected");
        // a leveraged long, a crash, then every liquidation path
        handler.fill(4, 6, true, true, 20_000, 0, 0);
        handler.movePrice(true, 80);
        handler.liquidate(4, true, type(uint64).max);
        handler.liquidateCollateral(4, type(uint128).max);
        handler.deleverage(4, 6, true, 1);
        handler.settleBadDebt(4);
        invariant_conservation();
        invariant_openInterestIsTotalLongs();
    }
}
