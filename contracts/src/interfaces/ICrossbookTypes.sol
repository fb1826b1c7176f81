// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice One margin tier of a market: requirement fractions apply to the notional between the previous
///         tier's cap and this tier's cap (marginal, like tax brackets). The last tier's cap is ignored.
struct Tier {
    uint128 notionalCap;
    uint32 imfPpm;
    uint32 mmfPpm;
}

/// @notice Configuration of a perpetual market (docs/protocol.md §3 config rules).
struct MarketConfig {
    uint16 feedId;
    uint64 tickSize;
    uint64 lotSize;
    uint64 openInterestCap;
    uint32 maxFundingPpm;
    // seconds per funding interval: FUNDING items move the index by at most maxFundingPpm per fundingPeriod on
    // average over time (SettlementModule._fundingBudget); 0 bounds each item only (no time budget)
    uint32 fundingPeriod;
    Tier[] tiers;
}

/// @notice Configuration and running totals of a collateral asset.
struct CollateralConfig {
    address token;
    uint16 feedId;
    uint8 decimals;
    uint32 weightInitPpm;
    uint32 weightMaintPpm;
    uint128 depositCap;
    uint128 totalDeposited;
}

/// @notice Margin figures of a sub-account (docs/protocol.md §3), all in quote atoms.
struct Health {
    int256 equity;
    int256 initialEquity;
    int256 initialRequirement;
    int256 maintenanceRequirement;
    int256 initialHealth;
    int256 maintenanceHealth;
}

/// @notice The EIP-712 Order of docs/protocol.md §4.
struct Order {
    address owner;
    uint32 subaccount;
    uint32 market;
    bool isBuy;
    bool reduceOnly;
    uint64 price;
    uint64 size;
    uint64 nonce;
    uint64 expiry;
    uint32 maxFeePpm;
}

/// @notice An escape-hatch withdrawal request.
struct ForcedRequest {
    address owner;
    uint32 subaccount;
    uint16 asset;
    bool pending;
    uint128 amount;
    uint64 executableAt;
}
