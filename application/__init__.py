"""Use cases and read models of authledger, on top of the pure domain."""
