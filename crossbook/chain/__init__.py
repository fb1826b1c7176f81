"""Chain access: compiled artifacts, a local anvil node, transaction sending, deployment."""
