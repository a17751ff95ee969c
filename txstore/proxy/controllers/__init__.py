"""The proxy's controllers: one per level of the Swift API (account, container, object)."""
