"""Health monitor, liquidator, oracle feeder, funding poster."""
