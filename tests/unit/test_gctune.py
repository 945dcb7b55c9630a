"""The serving GC tuning freezes the start-up heap once and raises gen0's threshold."""

from __future__ import annotations

import gc

from services.kit import gctune


def test_freezes_once_and_sets_the_first_generation_threshold() -> None:
    before = gc.get_threshold()
    try:
        gctune.tune_for_serving(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        frozen = gc.get_freeze_count()
        assert frozen > 0
        later: list[list[int]] = [[] for _ in range(100)]  # tracked, made after the freeze
        gctune.tune_for_serving()
        assert gc.get_freeze_count() == frozen  # not frozen again: they stay collectable
        assert gc.get_threshold()[0] == gctune.SERVING_GEN0_THRESHOLD
        del later
    finally:
        gc.set_threshold(*before)
