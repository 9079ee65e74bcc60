"""studies.warm: the trainer child's warm-up pays torch's lazy imports and changes no result."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from studies.spec import TrialConfig


def _fresh(code: str) -> str:
    """Run `code` in a fresh interpreter (lazy imports are per process); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_warm_up_imports_what_the_first_optimizer_would_import() -> None:
    out = _fresh(
        """
        import sys
        import torch
        before = "torch._dynamo" in sys.modules
        from studies.warm import warm_up
        warm_up()
        print(before, "torch._dynamo" in sys.modules)
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
    cold = _fresh("WARM = False\n" + textwrap.dedent(code))
    warm = _fresh("WARM = True\n" + textwrap.dedent(code))
    assert warm.startswith("[true,"), warm
    assert warm == cold  # the same curve, to the bit (floats printed in full by json)
