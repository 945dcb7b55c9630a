"""``tally verify``: the suite's cross-service invariants, checked read-only."""
