from __future__ import annotations

import random

from gateway.runtime.backoff import Backoff
from gateway.runtime.dedupe import OverlapDeduper
from gateway.runtime.statestore import StateStore, TenantState
from gateway.settings import BackoffSettings


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(BackoffSettings(initial_s=1, max_s=8, factor=2, jitter=0.1), random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert base * 0.9 <= delay <= base * 1.1


def test_backoff_resets_after_a_healthy_period() -> None:
    backoff = Backoff(BackoffSettings(initial_s=1, max_s=8, jitter=0, reset_after_s=0))
    for _ in range(4):
        backoff.next_delay()
    backoff.healthy()
    assert backoff.next_delay() == 1


def test_backoff_keeps_growing_when_the_link_flaps() -> None:
    backoff = Backoff(BackoffSettings(initial_s=1, max_s=8, jitter=0, reset_after_s=3600))
    backoff.next_delay()
    backoff.healthy()
    assert backoff.next_delay() == 2


def test_dedupe_passes_everything_outside_a_handover() -> None:
    dedupe = OverlapDeduper()
    assert not dedupe.is_copy(1, "a") and not dedupe.is_copy(1, "a")


def test_dedupe_passes_each_overlapping_frame_once_in_either_order() -> None:
    dedupe = OverlapDeduper()
    dedupe.begin(1, 2)
    assert not dedupe.is_copy(1, "x")
    assert dedupe.is_copy(2, "x")
    assert not dedupe.is_copy(2, "y")  # the new socket was first this time
    assert dedupe.is_copy(1, "y")


def test_dedupe_keeps_genuine_repeats() -> None:
    dedupe = OverlapDeduper()
    dedupe.begin(1, 2)
    passed = [not dedupe.is_copy(gen, "same") for gen in (1, 1, 2, 2)]
    assert passed.count(True) == 2


def test_dedupe_pre_overlap_frame_does_not_swallow_a_later_repeat() -> None:
    dedupe = OverlapDeduper()
    dedupe.begin(1, 2)
    assert not dedupe.is_copy(1, "a")  # sent before the new socket subscribed: old socket only
    assert dedupe.is_copy(2, "a")  # the repeat, first seen on the new socket...
    assert not dedupe.is_copy(1, "a")  # ...still passes once, from the old socket
    dedupe.end()
    assert not dedupe.active


def test_tenant_state_signals_writes_and_adopts_only_newer_values() -> None:
    store = StateStore(":memory:")
    state = TenantState(store, "acme")
    state.set("k", "1")
    assert state.changed.is_set() and state.snapshot() == {"k": "1"}
    state.changed.clear()
    state.set("k", "1")  # no change: nothing to share
    assert not state.changed.is_set()
    written_at = store.updated_at("k")
    assert written_at is not None
    assert state.merge({"k": "old", "other": "x"}, written_at - 10) == 1  # ours is newer
    assert state.snapshot() == {"k": "1", "other": "x"}
    assert state.merge({"k": "new"}, written_at + 10) == 1
    assert store.get("k") == "new"
