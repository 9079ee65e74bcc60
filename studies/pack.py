"""Trial packs: many trials of one study trained as one vectorized model (torch.func).

A sensitivity study is hundreds of small trainings of one shape that differ only in lr, β3,
warmup and seed. Trained one at a time, a small model leaves the machine idle in Python
overhead; trained as a pack, one `vmap` of the workload's loss over K stacked copies of the
parameters does the work of K trials in one pass (HFTA, Wang et al. 2021, did this by rewriting
models; torch.func does it for any module).

What stays per member, so that a packed trial means what its unfused trial means:
- initial weights and batches: each member's problem is built by `prepare_problem` from its own
  config and seed, exactly as `run_trial` builds it, and its batches are stacked, not shared;
- hyperparameters: lr (with its warmup and schedule multiplier), β3 and the rest are 1-D tensors
  of K values in the optimizer (adamod's member mode), so one step updates K models;
- divergence, evaluation and results: a TrialLog per member applies run_trial's rules; a member
  that diverges (or is stopped) is frozen — its parameters and optimizer state are put back
  after every later step — and the others go on. Nothing reduces across members.

Members must share a `TrialConfig.pack_key()` (workload, workload_config, budget, optimizer,
schedule, betas, eps, weight decay) and their workload must be packable (Workload.packable).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from studies.optimizers import build_pack_optimizer
from studies.pack_size import MAX_PACK_SIZE, parse_pack_size
from studies.spec import TrialConfig
from studies.trial import lr_multiplier, prepare_problem, resolve_device
from studies.trial_result import (
    EvalPoint,
    TrialLog,
    TrialResult,
    eval_due,
    initial_loss,
    summarize_bounds,
)
from studies.workloads.base import Problem
from studies.workloads.common import ShuffledBatches
from studies.workloads.registry import get_workload

__all__ = [
    "MAX_PACK_SIZE",
    "auto_pack_size",
    "check_pack",
    "packable",
    "parse_pack_size",
    "run_pack",
]

# Bytes per parameter element and member during training: the parameter, its gradient, up to
# four optimizer state tensors, the frozen copy and vmap's temporaries.
_BYTES_PER_PARAM_COPY = 10
_MEMORY_SHARE = 0.25  # of the memory available now, what a pack may plan to use

# Every running member's evaluation of one round, [(k, point)] in member order -> the members
# to stop. One call per round, not per member: a trainer child answers a pack's round in one
# round trip to its supervisor (one per member was ~0.3 s of a pack of 64).
Report = Callable[[list[tuple[int, EvalPoint]]], Collection[int]]


def packable(config: TrialConfig) -> bool:
    """Whether trials of this config can train in a pack (its workload says so)."""
    workload = get_workload(config.workload)
    return workload.why_not_packable(_workload_config(config)) is None


def _workload_config(config: TrialConfig) -> Any:
    return get_workload(config.workload).config_model.model_validate(config.workload_config)


def check_pack(configs: Sequence[TrialConfig]) -> None:
    """A ValueError naming `configs` unless they can train together as one pack."""
    if not configs:
        raise ValueError("configs: a pack needs at least one trial")
    if len(configs) > MAX_PACK_SIZE:
        raise ValueError(f"configs: at most {MAX_PACK_SIZE} trials per pack, got {len(configs)}")
    key = configs[0].pack_key()
    for index, config in enumerate(configs[1:], start=1):
        if config.pack_key() != key:
            raise ValueError(
                f"configs[{index}]: differs from configs[0] in more than lr, beta3, "
                "warmup_steps and seed (workload, budget, optimizer, schedule, betas, eps and "
                "weight decay must be shared by a pack)"
            )
    workload = get_workload(configs[0].workload)
    reason = workload.why_not_packable(_workload_config(configs[0]))
    if reason is not None:
        raise ValueError(f"configs: {reason}")


def auto_pack_size(config: TrialConfig, device: torch.device | str = "cpu") -> int:
    """The largest pack (at most MAX_PACK_SIZE) whose parameters, gradients and optimizer state
    fit in a quarter of the memory available now on `device`; 1 when the workload cannot pack.

    An estimate from the parameter count (activations are not counted): packs are meant for
    the small models of sensitivity studies, where parameters dominate.
    """
    if not packable(config):
        return 1
    dev = resolve_device(device)
    cache_key = (config.pack_key(), str(dev))
    if cache_key not in _AUTO_SIZES:  # one build per kind of pack and device
        problem, _ = prepare_problem(config, dev)
        param_bytes = sum(p.numel() * p.element_size() for p in problem.model.parameters())
        per_member = max(1, param_bytes * _BYTES_PER_PARAM_COPY)
        budget = int(_available_bytes(dev) * _MEMORY_SHARE)
        _AUTO_SIZES[cache_key] = max(1, min(MAX_PACK_SIZE, budget // per_member))
    return _AUTO_SIZES[cache_key]


_AUTO_SIZES: dict[tuple[str, str], int] = {}


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume 4 GiB
        return 4 << 30


class _Calls(nn.Module):
    """A module whose forward is `fn(model, *args)`, so that functional_call can run a
    workload's loss or metrics (which take the model) with stacked parameters swapped in."""

    def __init__(self, model: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(self.model, *args)


def _stack_named(problems: list[Problem], named: str) -> dict[str, Tensor]:
    """{name: the members' tensors stacked on a new leading dim} for parameters or buffers."""
    tables = [dict(getattr(p.model, named)()) for p in problems]
    return {
        name: torch.stack([table[name].detach() for table in tables]).contiguous()
        for name in tables[0]
    }


def _stack_batches(batches: Sequence[Any]) -> tuple[Any, Any]:
    """The members' batches stacked on a new leading dim, and vmap's in_dims for them.

    Tensors are stacked; tuples and lists are stacked element by element; anything else (a
    step counter, None) is the same for every member and passed as it is.
    """
    first = batches[0]
    if isinstance(first, Tensor):
        return torch.stack(list(batches)), 0
    if isinstance(first, tuple | list):
        pairs = [_stack_batches([b[i] for b in batches]) for i in range(len(first))]
        return type(first)(p[0] for p in pairs), type(first)(p[1] for p in pairs)
    return first, None


def _shared_shuffled_data(problems: list[Problem]) -> tuple[Tensor, ...] | None:
    """The training tensors all members shuffle, when each member's batches are ShuffledBatches
    of equal tensors and one batch size (the same data in different seeds' orders); else None."""
    samplers = [problem.train_batches for problem in problems]
    first = samplers[0]
    if not isinstance(first, ShuffledBatches):
        return None
    for other in samplers[1:]:
        if not (
            isinstance(other, ShuffledBatches)
            and other.batch_size == first.batch_size
            and len(other.data) == len(first.data)
            and all(
                a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
                for a, b in zip(other.data, first.data, strict=True)
            )
        ):
            return None
    return first.data


def _distinct_orders(samplers: list[ShuffledBatches], epoch: int) -> tuple[Tensor, Tensor]:
    """The epoch's row permutations of the members' distinct seeds, [S, n], and for each
    member the row of its own, [K] (an index tensor on the permutations' device).

    A sampler's order is a function of its seed, the epoch, the row count and the device, and
    the last two are shared here (_shared_shuffled_data), so members of one seed, common in a
    sensitivity study (many lrs per seed), draw their permutation once: the same values."""
    rows: dict[int, int] = {}
    orders: list[Tensor] = []
    for sampler in samplers:
        if sampler.seed not in rows:
            rows[sampler.seed] = len(orders)
            orders.append(sampler.order(epoch))
    stacked = torch.stack(orders)
    member_order = torch.tensor([rows[s.seed] for s in samplers], device=stacked.device)
    return stacked, member_order


class _Freezer:
    """Holds stopped members where they stopped: their slices of every per-member tensor (the
    parameters and the optimizer state shaped like them) are put back after each step."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[Tensor]) -> None:
        self._optimizer = optimizer
        self._params = params
        self._members: list[int] = []
        self._index: Tensor | None = None
        self._saved: dict[int, Tensor] = {}

    def _tensors(self) -> list[Tensor]:
        k = self._params[0].shape[0]
        found = list(self._params)
        for p in self._params:
            for value in self._optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.dim() >= 1 and value.shape[0] == k:
                    found.append(value)
        return found

    @torch.no_grad()
    def freeze(self, members: list[int]) -> None:
        """Keep `members` as they are now (with those frozen before)."""
        if not members:
            return
        self._members = sorted(set(self._members) | set(members))
        self._index = torch.tensor(self._members, device=self._params[0].device)
        self._saved = {id(t): t.index_select(0, self._index) for t in self._tensors()}

    @torch.no_grad()
    def restore(self) -> None:
        """Put the frozen members back after an optimizer step (state created by that step is
        kept from then on)."""
        if self._index is None:
            return
        for tensor in self._tensors():
            saved = self._saved.get(id(tensor))
            if saved is None:
                self._saved[id(tensor)] = tensor.index_select(0, self._index)
            else:
                tensor.index_copy_(0, self._index, saved)


# Which Problem field holds the stacked form of each tensor metrics field (see Problem).
_PACK_METRICS = {"metrics": "pack_metrics", "test_metrics": "pack_test_metrics"}


class _PackModel:
    """The members' parameters and buffers stacked, and the vmapped loss and metrics on them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        template = problems[0]
        self.module = template.model
        self.params = {
            name: stacked.requires_grad_(True)
            for name, stacked in _stack_named(problems, "named_parameters").items()
        }
        self.buffers = _stack_named(problems, "named_buffers")
        self._loss = _Calls(template.model, template.loss_fn)
        self._pack_loss = template.pack_loss
        self._shuffled = _shared_shuffled_data(problems)

    def _swapped(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return (
            {f"model.{n}": t for n, t in self.params.items()},
            {f"model.{n}": t for n, t in self.buffers.items()},
        )

    def epoch_batches(self, epoch: int) -> Iterator[tuple[Any, Any]]:
        """Each step of `epoch`: every member's batch stacked on a leading member dim, and
        vmap's in_dims for it.

        Members that shuffle equal tensors (ShuffledBatches) are gathered with one indexing per
        tensor for the whole epoch, once per distinct seed (members of one seed share their
        order), then each step's slice is picked for every member; others batch by batch,
        member by member. The batches are the same values either way, laid out alike
        (contiguous)."""
        if self._shuffled is None:
            epochs = [problem.train_batches(epoch) for problem in self.problems]
            for batches in zip(*epochs, strict=True):
                yield _stack_batches(batches)
            return
        samplers = [cast(ShuffledBatches, problem.train_batches) for problem in self.problems]
        orders, member_order = _distinct_orders(samplers, epoch)  # [S, n], [K] indices into S
        gathered = [tensor[orders] for tensor in self._shuffled]  # each [S, n, ...]
        size, dims = samplers[0].batch_size, (0,) * len(gathered)
        for start in range(0, orders.shape[1], size):
            yield (
                tuple(g[:, start : start + size].index_select(0, member_order) for g in gathered),
                dims,
            )

    def backward(self, batch: Any, batch_dims: Any) -> Tensor:
        """Every member's training loss on its own batch (one step of `epoch_batches`); each
        stacked parameter's `.grad` then holds every member's gradient.

        The forward is vmapped and the backward is autograd's own, from the sum of the members'
        losses: each member's parameters reach only its own loss, so the sum's backward gives
        each exactly the gradient of its own loss (times 1.0: bit for bit), and a diverged
        member's inf or NaN reaches no other. Plain autograd costs about 60% of a vmapped
        `grad_and_value`, whose per-call transform was most of a small model's step.
        A workload's `pack_loss` replaces the vmapped forward (studies/workloads/stacked.py).
        """
        loss_module = self._loss

        def member_loss(params: dict[str, Tensor], buffers: dict[str, Tensor], b: Any) -> Tensor:
            return functional_call(loss_module, (params, buffers), (b,))

        for param in self.params.values():
            param.grad = None
        if self._pack_loss is not None:  # the workload's stacked loss: no vmap
            losses = self._pack_loss(self.params, batch)
        else:
            params, buffers = self._swapped()
            losses = vmap(member_loss, in_dims=(0, 0, batch_dims), randomness="different")(
                params, buffers, batch
            )
        losses.sum().backward()
        return losses.detach()

    def metrics(self, which: str) -> list[dict[str, float]]:
        """Every member's validation ("metrics") or test ("test_metrics") metrics, as floats.

        Through the workload's stacked metrics when it gives them (Problem.pack_metrics,
        pack_test_metrics: no vmap), else its tensor metrics vmapped over the members, else
        each member's own evaluate."""
        self.module.eval()
        try:
            first = self.problems[0]
            stacked = getattr(first, _PACK_METRICS[which])
            if stacked is not None:
                return self._stacked_metrics(stacked)
            fn = getattr(first, which)
            if fn is not None:
                return self._vmapped_metrics(fn)
            return self._one_by_one(which)
        finally:
            self.module.train()

    def _stacked_metrics(
        self, fn: Callable[[dict[str, Tensor]], dict[str, Tensor]]
    ) -> list[dict[str, float]]:
        """The workload's metrics of all members at once from the stacked parameters. The
        first member's closes over the split; every member shares it (one pack_key)."""
        with torch.no_grad():
            return self._per_member(fn(self.params))

    def _vmapped_metrics(
        self, fn: Callable[[nn.Module], dict[str, Tensor]]
    ) -> list[dict[str, float]]:
        module = _Calls(self.module, fn)

        def member_metrics(params: dict[str, Tensor], buffers: dict[str, Tensor]) -> Any:
            return functional_call(module, (params, buffers), ())

        params, buffers = self._swapped()
        with torch.no_grad():
            table = vmap(member_metrics, randomness="different")(params, buffers)
        return self._per_member(table)

    def _per_member(self, table: dict[str, Tensor]) -> list[dict[str, float]]:
        """{key: [K] tensor} -> one {key: float} per member (one host transfer per key)."""
        columns = {key: value.tolist() for key, value in table.items()}
        return [
            {key: values[k] for key, values in columns.items()} for k in range(len(self.problems))
        ]

    def _one_by_one(self, which: str) -> list[dict[str, float]]:
        """A workload without tensor metrics: each member's own evaluate on its slices."""
        legacy = "evaluate" if which == "metrics" else "evaluate_test"
        out = []
        params, buffers = self._swapped()
        for k, problem in enumerate(self.problems):
            module = _Calls(self.module, getattr(problem, legacy))
            sliced = ({n: t[k] for n, t in params.items()}, {n: t[k] for n, t in buffers.items()})
            with torch.no_grad():
                out.append(functional_call(module, sliced, ()))
        return out

    def has_test(self) -> bool:
        first = self.problems[0]
        return first.test_metrics is not None or first.evaluate_test is not None


def _vmap_friendly_kernels() -> ExitStack:
    """Attention through the math kernels, which vmap batches, instead of the fused CPU/CUDA
    ones it would loop over member by member (and the MHA fast path that has no batching rule)."""
    stack = ExitStack()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    if hasattr(torch.backends, "mha"):
        was = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        stack.callback(torch.backends.mha.set_fastpath_enabled, was)
    return stack


def run_pack(
    configs: Sequence[TrialConfig],
    device: str | torch.device = "cpu",
    report: Report | None = None,
) -> list[TrialResult]:
    """Train the trials of `configs` as one pack; one TrialResult per member, in order.

    `report(points)` is called after each evaluation with every running member's point,
    [(k, point)]; the members k it returns stop (their results are "cancelled"), the others go
    on. Each result's `duration_s` is the pack's time
    divided by its members, and `pack_size` says how many trained together. Any exception
    (a workload that raises, say) ends the whole pack.
    """
    started = time.perf_counter()
    configs = list(configs)
    check_pack(configs)
    dev = resolve_device(device)
    built = [prepare_problem(config, dev) for config in configs]
    problems = [problem for problem, _ in built]
    total_steps = built[0][1]
    with _vmap_friendly_kernels():
        pack = _PackModel(problems)
        logs, loss0s, optimizer = _train(configs, pack, total_steps, report)
        tests: list[dict[str, float] | None] = [None] * len(configs)
        if pack.has_test() and any(log.state == "completed" for log in logs):
            tests = list(pack.metrics("test_metrics"))
    series = None
    if hasattr(optimizer, "member_bound_stats"):
        series = optimizer.member_bound_stats()
    return _results(configs, pack, logs, loss0s, tests, series, started, str(dev))


def _train(
    configs: list[TrialConfig], pack: _PackModel, total_steps: int, report: Report | None
) -> tuple[list[TrialLog], list[float], torch.optim.Optimizer]:
    """The training loop of a pack: run_trial's loop with a vector of members."""
    first, first_config = pack.problems[0], configs[0]
    loss0s = [
        initial_loss(c.workload, m) for c, m in zip(configs, pack.metrics("metrics"), strict=True)
    ]
    params = list(pack.params.values())
    optimizer = build_pack_optimizer(configs, params)
    freezer = _Freezer(optimizer, params)
    logs = [TrialLog(first.steps_per_epoch) for _ in configs]
    base_lr = torch.tensor([c.lr for c in configs], dtype=torch.float64)
    # Members differ in warmup only (the schedule is in the pack key): each step's multipliers
    # are computed once per distinct warmup, not once per member (64 calls a step were 2% of a
    # digits pack), and the lr tensor is rewritten only when one of them moved.
    warmups = sorted({c.warmup_steps for c in configs})
    member_warmup = [warmups.index(c.warmup_steps) for c in configs]
    applied = tuple(1.0 for _ in warmups)
    step, epoch = 0, 0
    pack.module.train()
    while step < total_steps and any(log.running for log in logs):
        for batch, batch_dims in pack.epoch_batches(epoch):
            step += 1
            scales = tuple(
                lr_multiplier(
                    step, warmup_steps=w, total_steps=total_steps, schedule=first_config.schedule
                )
                for w in warmups
            )
            if scales != applied:
                per_member = [scales[i] for i in member_warmup]
                lr = base_lr * torch.tensor(per_member, dtype=torch.float64)
                for group in optimizer.param_groups:
                    group["lr"].copy_(lr)
                applied = scales
            losses = pack.backward(batch, batch_dims)
            values = losses.tolist()  # one host sync per step, as in run_trial
            stopped = [
                k
                for k, log in enumerate(logs)
                if log.running and not log.train_loss(step, values[k])
            ]
            freezer.freeze(stopped)  # before the step: a diverged member is not updated
            if not any(log.running for log in logs):
                break
            optimizer.step()
            freezer.restore()
            if eval_due(step, eval_every=first.eval_every, total_steps=total_steps):
                freezer.freeze(_evaluate(pack, logs, step, report))
                if not any(log.running for log in logs):
                    break
            if step >= total_steps:
                break
        epoch += 1
    return logs, loss0s, optimizer


def _evaluate(
    pack: _PackModel, logs: list[TrialLog], step: int, report: Report | None
) -> list[int]:
    """Evaluate every member; the members that stop here (diverged or told to stop)."""
    stopped, points = [], []
    for k, metrics in enumerate(pack.metrics("metrics")):
        log = logs[k]
        if not log.running:
            continue
        point = log.evaluation(step, metrics)
        if point is None:
            stopped.append(k)
        else:
            points.append((k, point))
    if report is not None and points:
        told = set(report(points))
        for k, _point in points:
            if k in told:
                logs[k].cancel()
                stopped.append(k)
    return sorted(stopped)


def _results(
    configs: list[TrialConfig],
    pack: _PackModel,
    logs: list[TrialLog],
    loss0s: list[float],
    tests: list[dict[str, float] | None],
    series: list[dict[str, list[float]]] | None,
    started: float,
    device: str,
) -> list[TrialResult]:
    """One TrialResult per member; `series` is each member's bound telemetry (AdaMod, DiffMod)."""
    duration = (time.perf_counter() - started) / len(configs)
    results = []
    for k, log in enumerate(logs):
        bound_stats = None
        if series is not None:
            bound_stats = summarize_bounds(_until(series[k], log.updates))
        results.append(
            log.result(
                loss0=loss0s[k],
                test=tests[k],
                bound_stats=bound_stats,
                duration_s=duration,
                device=device,
                torch_version=torch.__version__,
                extras=dict(pack.problems[k].extras),
                pack_size=len(configs),
            )
        )
    return results


def _until(series: dict[str, list[float]], last_step: int) -> dict[str, list[float]]:
    """A member's bound series up to its last applied optimizer step (frozen steps dropped)."""
    keep = sum(1 for s in series.get("step", []) if s <= last_step)
    return {key: values[:keep] for key, values in series.items()}
