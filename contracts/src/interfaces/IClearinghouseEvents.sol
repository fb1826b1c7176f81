// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Events and custom errors shared by the Clearinghouse and its settlement module, so that they all
///         appear in the Clearinghouse ABI (the module runs through delegatecall).
interface IClearinghouseEvents {
    event CollateralListed(
        uint16 indexed assetId, address token, uint16 feedId, uint32 weightInitPpm, uint32 weightMaintPpm, uint128 depositCap
    );
    event CollateralParamsSet(uint16 indexed assetId, uint32 weightInitPpm, uint32 weightMaintPpm, uint128 depositCap);
    event MarketListed(uint32 indexed marketId);
    event MarketConfigSet(uint32 indexed marketId);
    event PnlHaircutSet(uint32 ppm);
    event Deposit(address indexed owner, uint32 subaccount, uint16 asset, uint256 amount);
    event AgentSet(address indexed owner, address indexed agent, bool approved);
    event BatchSettled(uint64 firstSeq, uint16 count, uint16 rejected);
    event ItemRejected(uint64 indexed seq, uint8 reason);
    /// @dev seq is 0 for an escape-hatch withdrawal executed on-chain (sequence numbers start at 1).
    event Withdrawn(address indexed owner, uint32 subaccount, uint16 asset, uint256 amount, uint64 seq);
    event FundingUpdated(uint32 market, int32 ratePpm, int256 cumulativeIndex);
    event ForcedWithdrawalRequested(
        uint64 indexed requestId, address indexed owner, uint32 subaccount, uint16 asset, uint128 amount, uint64 executableAt
    );
    event ForcedWithdrawalExecuted(uint64 requestId);
    event InsuranceDeposited(address indexed from, uint256 amount);
    event FeesWithdrawn(address indexed to, uint256 amount);
    /// @dev sizeDelta is the liquidated account's size change (negative when a long was taken over); the
    ///      liquidator's is its negation. penalty = liquidator's price discount + insuranceShare (protocol §9).
    event Liquidated(
        address indexed owner,
        uint32 subaccount,
        uint32 market,
        address indexed liquidator,
        uint32 liquidatorSubaccount,
        int256 sizeDelta,
        uint64 price,
        uint256 penalty,
        uint256 insuranceShare
    );
    event CollateralLiquidated(
        address indexed owner,
        uint32 subaccount,
        uint16 asset,
        address indexed liquidator,
        uint32 liquidatorSubaccount,
        uint256 amount,
        uint64 price,
        uint256 paid
    );
    event BadDebtSettled(
        address indexed owner, uint32 subaccount, uint256 insurancePaid, uint256 feePoolPaid, uint256 unbacked
    );
    /// @dev sizeDelta is the deleveraged account's size change; the counterparty's is its negation.
    event Deleveraged(
        address indexed owner,
        uint32 subaccount,
        uint32 market,
        address indexed counterparty,
        uint32 counterpartySubaccount,
        int256 sizeDelta,
        uint64 price
    );
    event LiquidationModuleSet(address module);
    event LiquidationParamsSet(uint32 penaltyPpm, uint32 insuranceSharePpm, uint32 bufferPpm, uint32 criticalPpm);

    error BatchOutOfOrder(uint64 expected, uint64 got);
    error MalformedBatch(uint256 offset);
    error UnknownAsset(uint16 asset);
    error UnknownMarket(uint32 market);
    error ZeroAmount();
    error ZeroAddress();
    error DepositCapExceeded(uint16 asset, uint256 total, uint256 cap);
    error BalanceOverflow();
    error TooManyAssets();
    error TooManyMarkets();
    error TokenAlreadyListed(address token);
    error InvalidWeights();
    error InvalidTiers();
    error InvalidMarketConfig();
    error InvalidHaircut();
    error InvalidDecimals(uint8 decimals);
    error OracleUnavailable(uint16 feedId);
    error RequestNotPending(uint64 requestId);
    error NotRequestOwner(uint64 requestId);
    error TooEarly(uint64 executableAt);
    error InsufficientBalance();
    error InsufficientMargin();
    error TransferFailed();
    error InsufficientFees(uint256 available);
    error DirectCallForbidden();
    error NotLiquidatable();
    error PriceLimit();
    error LiquidatorUnhealthy();
    error NothingToLiquidate();
    error SelfLiquidation();
    error InvalidLiquidationParams();
    error InvalidLiquidationPrice();
    error NoBadDebt();
    error NotDeleveragable();
    error InvalidCounterparty();
    /// @dev setLiquidationModule called twice or with a non-contract, or a liquidation call before it.
    error LiquidationModuleLocked();
}
