"""The auth domain: aggregates and their events, free of I/O."""
