"""Crossbook shared package: protocol types, EIP-712, margin math, chain access, config, CLI."""
