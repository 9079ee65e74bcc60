"""studies.warm: the trainer child's warm-up pays torch's lazy imports and changes no result."""

from __future__ import annotations

import sys
import textwrap

import pytest

from studies.spec import TrialConfig
from tests.fresh_interpreter import run_fresh


@pytest.mark.parametrize(
    ("already_imported", "lazy_module"),
    [
        ("torch", "torch._dynamo"),  # the first optimizer's import
        ("studies.pack", "studies.workloads.digits_mlp"),  # a pack's first workload lookup
    ],
)
def test_warm_up_pays_a_lazy_import(already_imported: str, lazy_module: str) -> None:
    out = run_fresh(
        f"""
        import sys
        import {already_imported}
        before = "{lazy_module}" in sys.modules
        from studies.warm import warm_up
        warm_up()
        print(before, "{lazy_module}" in sys.modules)
        """
    )
    assert out == "False True"


def test_warm_up_leaves_the_random_streams_and_a_trial_result_alone() -> None:
    config = TrialConfig(
        workload="quadratic", workload_config={}, optimizer="adamod", lr=0.01, beta3=0.99,
        warmup_steps=0, schedule="constant", seed=3, budget={"steps": 40},
    )  # fmt: skip
    code = f"""
        import json, torch
        from studies.spec import TrialConfig
        from studies.trial import run_trial
        config = TrialConfig.model_validate_json({config.model_dump_json()!r})
        state = torch.random.get_rng_state()
        if WARM:
            from studies.warm import warm_up
            warm_up()
        same = bool(torch.equal(state, torch.random.get_rng_state()))
        print(json.dumps([same, [[p.val_loss, p.train_loss] for p in run_trial(config).curve]]))
        """
    cold = run_fresh("WARM = False\n" + textwrap.dedent(code))
    warm = run_fresh("WARM = True\n" + textwrap.dedent(code))
    assert warm.startswith("[true,"), warm
    assert warm == cold  # the same curve, to the bit (floats printed in full by json)


_FAULTS_OF_REPEATED_ALLOCATIONS = """
    import resource, torch
    from studies.warm import keep_freed_memory
    kept = keep_freed_memory() if {keep} else False
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(30):  # what a pack's steps do: the same large temporaries, again and again
        torch.empty(12 << 20).fill_(1.0)  # 48 MiB, freed at once
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
_PAGES = (48 << 20) // 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_refaulting_the_same_temporaries() -> None:
    """A 48 MiB block is over glibc's largest adaptive mmap threshold (32 MiB): by default each
    is mapped for its allocation and unmapped at its free, so 30 rounds fault its pages in 30
    times; kept in the heap, the first two rounds do (up to six seen: the heap may have to
    move). Smaller blocks show it only until glibc adapts: a fresh trainer's first pack."""
    kept, faults_kept = run_fresh(_FAULTS_OF_REPEATED_ALLOCATIONS.format(keep=True)).split()
    _, faults_default = run_fresh(_FAULTS_OF_REPEATED_ALLOCATIONS.format(keep=False)).split()
    assert kept == "True"
    assert int(faults_default) > 25 * _PAGES  # what is fixed: every round refaults
    assert int(faults_kept) < 12 * _PAGES
