// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {MarginEngine} from "./impl/MarginEngine.sol";
import {SettlementModule} from "./impl/SettlementModule.sol";
import {ClearinghouseStorage as S} from "./impl/ClearinghouseStorage.sol";
import {OrderHashing as H} from "./lib/OrderHashing.sol";
import {Tier, MarketConfig, CollateralConfig, Health, Order, ForcedRequest} from "./interfaces/ICrossbookTypes.sol";

/// @title Clearinghouse
/// @notice Crossbook's cross-margin perpetual-futures clearinghouse: collateral vault, sub-accounts, markets,
///         funding, sequenced batch settlement of signed orders/withdrawals/transfers, insurance fund, fee pool
///         and an escape hatch. The spec is docs/protocol.md. Batch settlement runs in a SettlementModule
///         (deployed by the constructor) through delegatecall, to keep both under the EIP-170 size limit.
contract Clearinghouse is AccessControl, EIP712, ReentrancyGuardTransient, MarginEngine {
    using SafeERC20 for IERC20;

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    uint32 internal constant PPM32 = 1_000_000;

    uint64 internal immutable _escapeDelay;
    address internal immutable _module;

    /// @param admin Holder of DEFAULT_ADMIN_ROLE (grants OPERATOR_ROLE, lists assets and markets).
    /// @param oracle_ OracleAdapter used for every price.
    /// @param quoteToken_ The 6-decimal quote asset (asset id 0).
    /// @param escapeDelay_ Seconds between a forced-withdrawal request and its on-chain execution.
    constructor(address admin, address oracle_, address quoteToken_, uint64 escapeDelay_)
        EIP712("Crossbook", "1")
        MarginEngine(oracle_, quoteToken_)
    {
        if (admin == address(0) || oracle_ == address(0) || quoteToken_ == address(0)) revert ZeroAddress();
        uint8 dec = IERC20Metadata(quoteToken_).decimals();
        if (dec != 6) revert InvalidDecimals(dec);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _escapeDelay = escapeDelay_;
        _module = address(new SettlementModule(oracle_, quoteToken_));
        S.Layout storage l = S.store();
        // liquidation defaults (protocol §9.1): 2% penalty, half to insurance, 10% buffer, tier 2 below 50%
        l.penaltyPpm = 20_000;
        l.insuranceSharePpm = 500_000;
        l.bufferPpm = 100_000;
        l.criticalPpm = 500_000;
        l.nextSeq = 1;
        l.nextRequestId = 1;
        l.collateralCount = 1;
        l.collaterals[0] = S.Collateral(quoteToken_, 0, 6, PPM32, PPM32, type(uint128).max, 0);
        l.tokenListed[quoteToken_] = true;
    }

    // ------------------------------------------------------------------------------------------ admin

    /// @notice Lists a collateral token (asset ids 1..15). Reads its decimals.
    /// @param token ERC20 token.
    /// @param feedId Oracle feed id of its USD price.
    /// @param weightInitPpm Initial weight, <= weightMaintPpm.
    /// @param weightMaintPpm Maintenance weight, <= 1e6.
    /// @param depositCap Cap on the total deposited balance (token atoms).
    /// @return assetId The new asset id.
    function listCollateral(
        address token,
        uint16 feedId,
        uint32 weightInitPpm,
        uint32 weightMaintPpm,
        uint128 depositCap
    ) external onlyRole(DEFAULT_ADMIN_ROLE) returns (uint16 assetId) {
        S.Layout storage l = S.store();
        if (token == address(0)) revert ZeroAddress();
        if (l.tokenListed[token]) revert TokenAlreadyListed(token);
        assetId = l.collateralCount;
        if (assetId >= S.MAX_ASSETS) revert TooManyAssets();
        _checkWeights(weightInitPpm, weightMaintPpm);
        uint8 dec = IERC20Metadata(token).decimals();
        if (dec > 36) revert InvalidDecimals(dec);
        l.collaterals[assetId] = S.Collateral(token, feedId, dec, weightInitPpm, weightMaintPpm, depositCap, 0);
        l.tokenListed[token] = true;
        l.collateralCount = assetId + 1;
        emit CollateralListed(assetId, token, feedId, weightInitPpm, weightMaintPpm, depositCap);
    }

    /// @notice Updates weights and deposit cap of an asset. For the quote asset (id 0) both weights must be 1e6.
    function setCollateralParams(uint16 assetId, uint32 weightInitPpm, uint32 weightMaintPpm, uint128 depositCap)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        S.Layout storage l = S.store();
        if (assetId >= l.collateralCount) revert UnknownAsset(assetId);
        _checkWeights(weightInitPpm, weightMaintPpm);
        if (assetId == 0 && (weightInitPpm != PPM32 || weightMaintPpm != PPM32)) revert InvalidWeights();
        S.Collateral storage col = l.collaterals[assetId];
        col.weightInitPpm = weightInitPpm;
        col.weightMaintPpm = weightMaintPpm;
        col.depositCap = depositCap;
        emit CollateralParamsSet(assetId, weightInitPpm, weightMaintPpm, depositCap);
    }

    /// @notice Lists a perpetual market (ids 0..31).
    /// @return marketId The new market id.
    function listMarket(MarketConfig calldata cfg) external onlyRole(DEFAULT_ADMIN_ROLE) returns (uint32 marketId) {
        S.Layout storage l = S.store();
        marketId = l.marketCount;
        if (marketId >= S.MAX_MARKETS) revert TooManyMarkets();
        _writeMarket(marketId, cfg);
        // the funding time budget starts full (as after a quiet day), so settlement delays never cut honest funding
        uint256 full = uint256(cfg.fundingPeriod) * S.FUNDING_BACKLOG;
        l.markets[marketId].fundingClock = uint40(full < block.timestamp ? block.timestamp - full : 0);
        l.marketCount = marketId + 1;
        emit MarketListed(marketId);
    }

    /// @notice Replaces the configuration of a listed market (state: funding index, open interest, funding
    ///         balance are kept).
    function setMarketConfig(uint32 marketId, MarketConfig calldata cfg) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (marketId >= S.store().marketCount) revert UnknownMarket(marketId);
        _writeMarket(marketId, cfg);
        emit MarketConfigSet(marketId);
    }

    /// @notice Sets the haircut applied to positive unrealized PnL in initial equity (ppm, <= 1e6).
    function setPnlHaircut(uint32 ppm) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (ppm > PPM32) revert InvalidHaircut();
        S.store().pnlHaircutPpm = ppm;
        emit PnlHaircutSet(ppm);
    }

    /// @notice Withdraws accumulated trading fees (quote asset) from the fee pool.
    function withdrawFees(address to, uint256 amount) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        S.Layout storage l = S.store();
        uint256 pool = l.feePool;
        if (amount > pool) revert InsufficientFees(pool);
        l.feePool = uint128(pool - amount);
        IERC20(_quoteToken).safeTransfer(to, amount);
        emit FeesWithdrawn(to, amount);
    }

    function _checkWeights(uint32 wInit, uint32 wMaint) internal pure {
        if (wMaint > PPM32 || wInit > wMaint) revert InvalidWeights();
    }

    function _writeMarket(uint32 marketId, MarketConfig calldata cfg) internal {
        uint256 n = cfg.tiers.length;
        if (cfg.tickSize == 0 || cfg.lotSize == 0 || cfg.maxFundingPpm > PPM32) revert InvalidMarketConfig();
        if (n == 0 || n > 4) revert InvalidTiers();
        S.Market storage sm = S.store().markets[marketId];
        uint256 prevCap;
        uint256 prevImf;
        uint256 prevMmf;
        for (uint256 i = 0; i < n; ++i) {
            Tier calldata t = cfg.tiers[i];
            if (i + 1 < n && t.notionalCap <= prevCap) revert InvalidTiers();
            if (t.mmfPpm == 0 || t.mmfPpm > t.imfPpm || t.imfPpm > PPM32) revert InvalidTiers();
            if (t.imfPpm < prevImf || t.mmfPpm < prevMmf) revert InvalidTiers();
            prevCap = t.notionalCap;
            prevImf = t.imfPpm;
            prevMmf = t.mmfPpm;
            sm.tiers[i] = S.TierSlot(t.notionalCap, t.imfPpm, t.mmfPpm);
        }
        for (uint256 i = n; i < 4; ++i) {
            delete sm.tiers[i];
        }
        sm.feedId = cfg.feedId;
        sm.tickSize = cfg.tickSize;
        sm.lotSize = cfg.lotSize;
        sm.openInterestCap = cfg.openInterestCap;
        sm.maxFundingPpm = cfg.maxFundingPpm;
        sm.fundingPeriod = cfg.fundingPeriod;
        sm.tierCount = uint8(n);
    }

    // ------------------------------------------------------------------------------------------ users

    // Deposits run in the SettlementModule (delegatecall, same storage and token balances): the Clearinghouse's
    // runtime code is near EIP-170's limit. Arguments travel verbatim in msg.data.

    /// @notice Deposits `amount` of asset `asset` into `(owner, subaccount)`, paid by the caller. Credits what
    ///         actually arrived (balance delta), subject to the asset's deposit cap. Args: owner, subaccount,
    ///         asset, amount.
    function deposit(address, uint32, uint16, uint256) external nonReentrant {
        _delegate(_module);
    }

    /// @notice Adds quote tokens to the insurance fund (balance delta), paid by the caller. Arg: amount.
    function depositInsurance(uint256) external nonReentrant {
        _delegate(_module);
    }

    /// @notice Approves or revokes `agent` to sign orders for every sub-account of the caller.
    function setAgent(address agent, bool approved) external {
        S.store().agents[msg.sender][agent] = approved;
        emit AgentSet(msg.sender, agent, approved);
    }

    // ------------------------------------------------------------------------------------------ settlement

    /// @notice Settles a packed batch of sequenced items (docs/protocol.md §5). Operator only.
    /// @param batch firstSeq:uint64 count:uint16 [order table] item{count}, big-endian, tightly packed.
    function settle(bytes calldata batch) external onlyRole(OPERATOR_ROLE) nonReentrant {
        batch; // forwarded verbatim in msg.data
        _delegate(_module);
    }

    /// @dev Delegatecalls `module` with the original calldata; bubbles a revert, ignores return data.
    function _delegate(address module) private {
        assembly {
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), module, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            if iszero(ok) { revert(0, returndatasize()) }
        }
    }

    // ------------------------------------------------------------------------------------------ liquidation
    // Thin forwarders to the LiquidationModule (docs/protocol.md §9); the module holds the logic and NatSpec.
    // Arguments travel verbatim in msg.data, so the parameters are unnamed here. The module takes the same
    // transient reentrancy guard as nonReentrant (the forwarders return from assembly, skipping epilogues).

    /// @notice Takes over (part of) a liquidatable position at the liquidation price (protocol §9.2-9.4).
    ///         Args: owner, subaccount, market, maxSize, priceLimit, liquidatorSubaccount.
    /// @return size Size taken over. @return price Liquidation price.
    function liquidate(address, uint32, uint32, uint64, uint64, uint32)
        external
        returns (uint64 size, uint64 price)
    {
        (size, price) = (0, 0);
        _toLiq();
    }

    /// @notice Buys a liquidatable account's collateral at a discount against its negative quote (protocol §9.5).
    ///         Args: owner, subaccount, asset, maxAmount, priceLimit, liquidatorSubaccount.
    /// @return amount Collateral taken. @return price Discounted price.
    function liquidateCollateral(address, uint32, uint16, uint128, uint64, uint32)
        external
        returns (uint128 amount, uint64 price)
    {
        (amount, price) = (0, 0);
        _toLiq();
    }

    /// @notice Covers a bankrupt account's negative quote: insurance, fee pool, then unbacked debt (protocol §9.6).
    ///         Args: owner, subaccount.
    function settleBadDebt(address, uint32) external {
        _toLiq();
    }

    /// @notice Auto-deleveraging against a profitable opposite position, KEEPER_ROLE only (protocol §9.7).
    ///         Args: owner, subaccount, market, counterparty, counterpartySubaccount, size.
    function deleverage(address, uint32, uint32, address, uint32, uint64) external {
        _toLiq();
    }

    /// @notice Sets penalty, insurance share, buffer and critical fractions (ppm), admin only (protocol §9.1).
    function setLiquidationParams(uint32, uint32, uint32, uint32) external {
        _toLiq();
    }

    /// @notice Liquidation parameters (ppm).
    function liquidationParams()
        external
        view
        returns (uint32 penaltyPpm, uint32 insuranceSharePpm, uint32 bufferPpm, uint32 criticalPpm)
    {
        S.Layout storage l = S.store();
        return (l.penaltyPpm, l.insuranceSharePpm, l.bufferPpm, l.criticalPpm);
    }

    /// @notice Bad debt neither the insurance fund nor the fee pool could cover (quote atoms); the token balance
    ///         is short of the account balances by exactly this much (protocol §9.6).
    function unbackedDebt() external view returns (uint256) {
        return S.store().unbackedDebt;
    }

    /// @notice Installs the LiquidationModule, once (docs/trust-model.md "Liquidation module"). The module cannot be
    ///         embedded like the SettlementModule: the Clearinghouse initcode would exceed EIP-3860's 49,152 bytes.
    /// @param module A LiquidationModule deployed for this Clearinghouse's oracle.
    function setLiquidationModule(address module) external onlyRole(DEFAULT_ADMIN_ROLE) {
        S.Layout storage l = S.store();
        if (l.liquidationModule != address(0) || module.code.length == 0) revert LiquidationModuleLocked();
        l.liquidationModule = module;
        emit LiquidationModuleSet(module);
    }

    /// @notice The installed liquidation module (zero until setLiquidationModule).
    function liquidationModule() external view returns (address) {
        return S.store().liquidationModule;
    }

    /// @dev Delegatecalls the liquidation module with the original calldata and returns or reverts with its data.
    ///      A delegatecall to an address without code would succeed silently, hence the explicit check.
    function _toLiq() private {
        address module = S.store().liquidationModule;
        if (module == address(0)) revert LiquidationModuleLocked();
        assembly {
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), module, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            if iszero(ok) { revert(0, returndatasize()) }
            return(0, returndatasize())
        }
    }

    // ------------------------------------------------------------------------------------------ escape hatch

    /// @notice Requests an on-chain withdrawal from the caller's sub-account, executable by the caller after
    ///         escapeDelay (or earlier by the operator through a FORCED batch item).
    /// @return requestId Id of the request (ids start at 1).
    function requestForcedWithdrawal(uint32 subaccount, uint16 asset, uint128 amount)
        external
        returns (uint64 requestId)
    {
        S.Layout storage l = S.store();
        if (asset >= l.collateralCount) revert UnknownAsset(asset);
        if (amount == 0) revert ZeroAmount();
        requestId = l.nextRequestId;
        l.nextRequestId = requestId + 1;
        uint64 when = uint64(block.timestamp) + _escapeDelay;
        l.requests[requestId] = ForcedRequest(msg.sender, subaccount, asset, true, amount, when);
        emit ForcedWithdrawalRequested(requestId, msg.sender, subaccount, asset, amount, when);
    }

    /// @notice Executes the caller's pending forced-withdrawal request once its delay has passed. Requires the
    ///         balance and initial health >= 0 afterwards at oracle prices. Runs in the SettlementModule, which
    ///         already holds the debit path FORCED items use (one copy of that code instead of two).
    function executeForcedWithdrawal(uint64 requestId) external nonReentrant {
        requestId; // forwarded verbatim in msg.data
        _delegate(_module);
    }

    /// @notice A forced-withdrawal request.
    function forcedRequest(uint64 requestId) external view returns (ForcedRequest memory) {
        return S.store().requests[requestId];
    }

    // ------------------------------------------------------------------------------------------ views

    /// @notice Margin figures of a sub-account at current oracle prices (docs/protocol.md §3). Reverts with
    ///         OracleUnavailable(feedId) if a price it needs is unavailable.
    function health(address owner, uint32 subaccount) public view returns (Health memory h) {
        Ctx memory c = _newCtx();
        uint256 id = S.acctId(owner, subaccount);
        uint256 hdr = S.loadHeader(id);
        (bool ok, uint256 feed) = _pricesOk(c, hdr);
        if (!ok) revert OracleUnavailable(uint16(feed));
        _terms(c, id, hdr);
        h.equity = c.base + int256(c.wMaint);
        h.initialEquity = _initialEquity(c);
        h.initialRequirement = int256(c.rIm);
        h.maintenanceRequirement = int256(c.rMm);
        h.initialHealth = h.initialEquity - h.initialRequirement;
        h.maintenanceHealth = h.equity - h.maintenanceRequirement;
    }

    /// @notice True iff maintenance health < 0 at current oracle prices.
    function isLiquidatable(address owner, uint32 subaccount) external view returns (bool) {
        return health(owner, subaccount).maintenanceHealth < 0;
    }

    /// @notice Quote balance (atoms, may be negative).
    function quoteBalance(address owner, uint32 subaccount) external view returns (int256) {
        return S.quoteOf(S.loadHeader(S.acctId(owner, subaccount)));
    }

    /// @notice Balance of a collateral asset (id >= 1; for id 0 use quoteBalance).
    function collateralBalance(address owner, uint32 subaccount, uint16 asset) external view returns (uint256) {
        if (asset == 0) {
            int256 q = S.quoteOf(S.loadHeader(S.acctId(owner, subaccount)));
            return q > 0 ? uint256(q) : 0;
        }
        return S.store().acct[S.collateralKey(S.acctId(owner, subaccount), asset)];
    }

    /// @notice Position of a sub-account in a market.
    function position(address owner, uint32 subaccount, uint32 market)
        external
        view
        returns (int256 size, int256 openNotional, int256 fundingSnapshot)
    {
        if (market >= S.MAX_MARKETS) return (0, 0, 0);
        return S.unpackPosition(S.loadPosition(S.acctId(owner, subaccount), market));
    }

    /// @notice Cumulative filled size of the order(s) signed by `owner` with `nonce`; 2**64 - 1 once the nonce is
    ///         spent (completely filled, docs/protocol.md §4).
    function filledAmount(address owner, uint64 nonce) external view returns (uint256) {
        mapping(uint256 => uint256) storage f = S.store().filled;
        uint256 o = uint256(uint160(owner));
        uint256 w = f[S.nonceStateKey(o, nonce)];
        uint256 i = nonce & 127;
        if ((w >> i) & 1 == 0) return 0;
        for (uint256 sh = 128; sh < 256; sh += 64) {
            uint256 lane = (w >> sh) & type(uint64).max;
            if (lane & S.INLINE_AMOUNT != 0 && lane >> 57 == i) return lane & S.INLINE_AMOUNT;
        }
        uint256 a = (f[S.laneKey(o, nonce)] >> ((nonce & 3) << 6)) & type(uint64).max;
        return a == 0 ? type(uint64).max : a;
    }

    /// @notice True once a withdrawal or transfer digest has been used.
    function isDigestUsed(bytes32 digest) external view returns (bool) {
        return S.store().usedDigest[digest];
    }

    /// @notice Whether `agent` may sign orders for `owner`.
    function isAgent(address owner, address agent) external view returns (bool) {
        return S.store().agents[owner][agent];
    }

    /// @notice Cumulative funding index of a market (1e8, quote per base unit).
    function cumulativeFunding(uint32 market) external view returns (int256) {
        return S.store().markets[market].cumulativeFunding;
    }

    /// @notice Open interest (total long size, 1e8) of a market.
    function openInterest(uint32 market) external view returns (uint256) {
        return S.store().markets[market].openInterest;
    }

    /// @notice Funding settlement balance of a market (quote atoms collected minus paid).
    function fundingBalance(uint32 market) external view returns (int256) {
        return S.store().markets[market].fundingBalance;
    }

    /// @notice Configuration of a market.
    function marketConfig(uint32 marketId) external view returns (MarketConfig memory cfg) {
        if (marketId >= S.store().marketCount) revert UnknownMarket(marketId);
        S.Market storage sm = S.store().markets[marketId];
        cfg.feedId = sm.feedId;
        cfg.tickSize = sm.tickSize;
        cfg.lotSize = sm.lotSize;
        cfg.openInterestCap = sm.openInterestCap;
        cfg.maxFundingPpm = sm.maxFundingPpm;
        cfg.fundingPeriod = sm.fundingPeriod;
        cfg.tiers = new Tier[](sm.tierCount);
        for (uint256 i = 0; i < cfg.tiers.length; ++i) {
            S.TierSlot storage t = sm.tiers[i];
            cfg.tiers[i] = Tier(t.notionalCap, t.imfPpm, t.mmfPpm);
        }
    }

    /// @notice Configuration and total deposited balance of an asset (id 0 is the quote asset).
    function collateralConfig(uint16 assetId) external view returns (CollateralConfig memory) {
        if (assetId >= S.store().collateralCount) revert UnknownAsset(assetId);
        S.Collateral storage c = S.store().collaterals[assetId];
        return CollateralConfig(
            c.token, c.feedId, c.decimals, c.weightInitPpm, c.weightMaintPpm, c.depositCap, c.totalDeposited
        );
    }

    /// @notice Number of listed markets.
    function marketCount() external view returns (uint32) {
        return S.store().marketCount;
    }

    /// @notice Number of assets including the quote asset.
    function collateralCount() external view returns (uint16) {
        return S.store().collateralCount;
    }

    /// @notice Sequence number the next batch must start with (starts at 1).
    function nextSeq() external view returns (uint64) {
        return S.store().nextSeq;
    }

    /// @notice Insurance fund (quote atoms).
    function insuranceFund() external view returns (uint256) {
        return S.store().insuranceFund;
    }

    /// @notice Fee pool (quote atoms).
    function feePool() external view returns (uint256) {
        return S.store().feePool;
    }

    /// @notice PnL haircut (ppm).
    function pnlHaircut() external view returns (uint32) {
        return S.store().pnlHaircutPpm;
    }

    /// @notice Escape-hatch delay in seconds.
    function escapeDelay() external view returns (uint64) {
        return _escapeDelay;
    }

    /// @notice The oracle adapter.
    function oracle() external view returns (address) {
        return address(_oracle);
    }

    /// @notice The quote token (asset id 0).
    function quoteToken() external view returns (address) {
        return _quoteToken;
    }

    /// @notice The settlement module the constructor deployed.
    function settlementModule() external view returns (address) {
        return _module;
    }

    /// @notice EIP-712 domain separator.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice EIP-712 digest of an order.
    function orderDigest(Order calldata o) external view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    H.ORDER_TYPEHASH,
                    o.owner,
                    o.subaccount,
                    o.market,
                    o.isBuy,
                    o.reduceOnly,
                    o.price,
                    o.size,
                    o.nonce,
                    o.expiry,
                    o.maxFeePpm
                )
            )
        );
    }

    /// @notice EIP-712 digest of a withdrawal.
    function withdrawalDigest(
        address owner,
        uint32 subaccount,
        uint16 asset,
        uint128 amount,
        uint64 nonce,
        uint64 expiry
    ) external view returns (bytes32) {
        return _hashTypedDataV4(H.withdrawalStructHash(owner, subaccount, asset, amount, nonce, expiry));
    }

    /// @notice EIP-712 digest of a transfer.
    function transferDigest(
        address owner,
        uint32 fromSubaccount,
        uint32 toSubaccount,
        uint16 asset,
        uint128 amount,
        uint64 nonce,
        uint64 expiry
    ) external view returns (bytes32) {
        return _hashTypedDataV4(
            H.transferStructHash(owner, fromSubaccount, toSubaccount, asset, amount, nonce, expiry)
        );
    }
}
