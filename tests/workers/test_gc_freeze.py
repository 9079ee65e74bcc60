"""workers.gc_freeze: full collections skip what a worker process imported, and still collect
what it makes later."""

from __future__ import annotations

from tests.fresh_interpreter import run_fresh


def test_freezing_leaves_full_collections_only_the_objects_made_afterwards() -> None:
    """After freeze_long_lived_objects, a full collection walks none of the imported modules'
    objects (gc.get_objects(2) holds only what was made later), and a cycle made afterwards
    is still collected."""
    out = run_fresh(
        """
        import gc, weakref
        import torch, optuna
        from workers.gc_freeze import freeze_long_lived_objects
        walked_before = len(gc.get_objects(2))
        frozen = freeze_long_lived_objects()

        class Node:
            pass

        node = Node()
        node.self = node  # a cycle: only the cyclic collector frees it
        alive = weakref.ref(node)
        del node
        gc.collect()
        print(walked_before, frozen, len(gc.get_objects(2)), alive() is None)
        """
    )
    walked_before, frozen, walked_after, freed = out.split()
    assert int(frozen) >= int(walked_before) > 50_000  # torch and optuna: many objects
    assert int(walked_after) < int(walked_before) // 100
    assert freed == "True"
