"""altcraft.heap: the objects that exist before a delivery are frozen while it runs, and only then."""

from __future__ import annotations

import gc
import threading
import weakref

from altcraft.heap import YOUNG_THRESHOLD, frozen_heap


def test_objects_made_before_the_block_are_frozen_inside_it_and_released_after():
    before = [object() for _ in range(10)]
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        # frozen objects may still be freed by their last reference going (other threads), never added
        assert gc.get_freeze_count() >= len(before)
        with frozen_heap():  # nested: the same freeze, not undone by the inner block
            pass
        assert gc.get_freeze_count() >= len(before)
    assert gc.get_freeze_count() == 0


def test_garbage_made_inside_the_block_is_still_collected():
    class Node:
        pass

    with frozen_heap():
        cycle = Node()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None


def test_threads_share_one_freeze_until_the_last_leaves():
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with frozen_heap():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    with frozen_heap():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() > 0, "the other thread's delivery is still running"
    leave.set()
    thread.join(10)
    assert gc.get_freeze_count() == 0


def test_the_young_threshold_is_raised_inside_the_block_and_restored_after():
    before = gc.get_threshold()
    gc.set_threshold(700, 11, 12)
    try:
        with frozen_heap():
            assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)
            with frozen_heap():
                assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)
            assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)
        assert gc.get_threshold() == (700, 11, 12)
        gc.set_threshold(0, 11, 12)  # automatic collection off stays off
        with frozen_heap():
            assert gc.get_threshold() == (0, 11, 12)
        gc.set_threshold(50_000, 10, 10)  # a higher threshold is kept
        with frozen_heap():
            assert gc.get_threshold() == (50_000, 10, 10)
        assert gc.get_threshold() == (50_000, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_cyclic_garbage_made_inside_the_block_is_collected_without_asking():
    class Node:
        pass

    assert gc.isenabled()
    with frozen_heap():
        first = Node()
        first.me = first
        gone = weakref.ref(first)
        del first
        for _ in range(5 * YOUNG_THRESHOLD):  # cycles pile up until the collector passes on its own
            node = Node()
            node.me = node
            if gone() is None:
                break
        assert gone() is None
