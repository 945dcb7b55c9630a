"""Tuning CPython's cyclic garbage collector for a long-lived server process.

A service that allocates many short-lived objects per request (usage
ingestion: a few per event, alive for the whole batch) runs the collector
often, and every few batches a full collection walks the whole start-up heap
(modules, protobuf descriptors, SQLAlchemy metadata) again, although none of
it will ever be garbage. Freezing what exists once start-up is done keeps it
out of every later collection, and a larger first generation threshold lets a
batch's objects die by reference counting before a collection looks at them.
Reference counting, which frees almost everything, is untouched.
"""

from __future__ import annotations

import gc

# Objects allocated (net) before a first-generation collection; CPython's default is 700.
SERVING_GEN0_THRESHOLD = 10_000

_frozen = False


def tune_for_serving(gen0_threshold: int = SERVING_GEN0_THRESHOLD) -> None:
    """Freeze the start-up heap (once per process) and raise the gen0 threshold."""
    global _frozen
    if not _frozen:
        # Collect first, so garbage from start-up is freed rather than frozen.
        gc.collect()
        gc.freeze()
        _frozen = True
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0_threshold, 1), gen1, gen2)
