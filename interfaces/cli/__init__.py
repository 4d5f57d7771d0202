"""The `authledger` command line."""
