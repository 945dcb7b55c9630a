"""Use cases of the usage service. None commits: the caller owns the transaction.

``ingest`` records batches, ``projections`` follows catalog and subscriptions
events, ``queries`` answers reads, ``emitter`` publishes throttled aggregates,
``backfill`` recomputes aggregates from the stored events.
"""
