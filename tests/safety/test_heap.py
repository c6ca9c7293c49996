"""The long-lived heap is frozen for the GC while a backup runs, and only then."""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from typing import Any

from refserver.safety.backup import engine_of
from refserver.safety.heap import frozen_users, long_lived_frozen
from tests.safety.conftest import add_direct


def test_freeze_is_shared_and_undone() -> None:
    """Nested users share one freeze. Counts are compared with a margin: a frozen
    object freed meanwhile (refcount zero) leaves the permanent generation."""
    assert gc.get_freeze_count() == 0
    box: list[Any] = [[1], [2]]
    with long_lived_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 5000 and frozen_users() == 1
        fresh = [[i] for i in range(2000)]  # tracked after the freeze
        with long_lived_frozen():  # nested (or a second thread): not frozen again
            assert gc.get_freeze_count() < frozen + 1000 and frozen_users() == 2
        assert gc.get_freeze_count() > frozen - 1000  # the inner block did not thaw it
        assert all(gc.is_tracked(x) for x in fresh[:10])
    assert gc.get_freeze_count() == 0 and frozen_users() == 0
    assert gc.is_tracked(box)


def test_thawed_even_when_the_block_fails() -> None:
    try:
        with long_lived_frozen():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0 and frozen_users() == 0


def test_garbage_made_before_a_backup_is_still_collected_after(ctx: Any, tmp_path: Path) -> None:
    add_direct(ctx, tmp_path, 1)
    seen: list[int] = []
    lock = threading.Lock()

    def progress(_stage: str, _fraction: float) -> None:
        with lock:
            seen.append(gc.get_freeze_count())

    class Cycle:
        pass

    c = Cycle()
    c.self = c  # type: ignore[attr-defined]  # a cycle: only the cyclic GC frees it
    alive = [c]
    m = engine_of(ctx).create("full", progress=progress)
    assert m.status == "completed", m.error
    assert max(seen) > 0  # frozen while the backup ran
    assert gc.get_freeze_count() == 0
    del alive, c
    before = sum(isinstance(o, Cycle) for o in gc.get_objects())
    gc.collect()
    after = sum(isinstance(o, Cycle) for o in gc.get_objects())
    assert (before, after) == (1, 0)
