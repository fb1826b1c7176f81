"""Settlement relayer and chain watcher."""
