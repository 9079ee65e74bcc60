"""Independent float64 reference of AdaMod and DiffMod, written from the equations (NumPy)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RefState:
    """Per-parameter state of the reference: moments, bound, previous gradient, step count."""

    m: np.ndarray
    v: np.ndarray
    s: np.ndarray
    prev: np.ndarray
    t: int = 0


@dataclass
class RefStats:
    """Bound telemetry of one step, aggregated over every parameter."""

    active: float = 0.0
    numel: int = 0
    eta_sum: float = 0.0
    eta_max: float = -np.inf
    eff_sum: float = 0.0
    eff_max: float = -np.inf

    def row(self) -> tuple[float, float, float, float, float]:
        """(bound_active_frac, eta_max, eta_mean, eff_lr_max, eff_lr_mean)."""
        n = self.numel
        return self.active / n, self.eta_max, self.eta_sum / n, self.eff_max, self.eff_sum / n


@dataclass
class Reference:
    """AdaMod (kind="adamod", form code/paper) or DiffMod (kind="diffmod") on float64 arrays.

    groups: list of dicts with "params" (list of float64 arrays, updated in place) and the
    hyperparameters lr, betas, beta3 (or len_memory and version), eps, weight_decay, maximize,
    form.
    """

    kind: str
    groups: list[dict]
    states: dict[int, RefState] = field(default_factory=dict)
    stats: list[RefStats] = field(default_factory=list)

    def step(self, grads: list[list[np.ndarray | None]]) -> None:
        """Apply one step; grads[i][j] is the gradient of groups[i]["params"][j] (None: skip)."""
        stats = RefStats()
        for group, group_grads in zip(self.groups, grads, strict=True):
            for p, g in zip(group["params"], group_grads, strict=True):
                if g is not None:
                    self._update(p, np.asarray(g, dtype=np.float64), group, stats)
        self.stats.append(stats)

    def _update(self, p: np.ndarray, g: np.ndarray, h: dict, stats: RefStats) -> None:
        zeros = np.zeros_like(p)
        st = self.states.setdefault(
            id(p), RefState(zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy())
        )
        lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
        b3 = h["beta3"] if self.kind == "adamod" else 1.0 - 1.0 / h["len_memory"]
        if h.get("maximize", False):
            g = -g
        st.t += 1
        t = st.t
        p -= lr * wd * p  # decoupled weight decay first
        st.m = b1 * st.m + (1.0 - b1) * g
        st.v = b2 * st.v + (1.0 - b2) * g * g
        if h.get("form", "code") == "code":
            eta = lr * np.sqrt(1.0 - b2**t) / (1.0 - b1**t) / (np.sqrt(st.v) + eps)
            direction = st.m
        else:  # printed Algorithm 1: bias-corrected moments
            v_hat = st.v / (1.0 - b2**t)
            eta = lr / (np.sqrt(v_hat) + eps)
            direction = st.m / (1.0 - b1**t)
        st.s = b3 * st.s + (1.0 - b3) * eta
        eff = np.minimum(eta, st.s)
        stats.active += float(np.sum(st.s < eta))
        stats.numel += p.size
        stats.eta_sum += float(eta.sum())
        stats.eta_max = max(stats.eta_max, float(eta.max()))
        stats.eff_sum += float(eff.sum())
        stats.eff_max = max(stats.eff_max, float(eff.max()))
        if self.kind == "diffmod":
            diff = st.prev - g
            version = h.get("version", 0)
            if version == 0:
                xi = 1.0 / (1.0 + np.exp(-np.abs(diff)))
            elif version == 1:
                xi = 1.0 / (1.0 + np.exp(-diff))
            else:
                xi = 9.0 / (1.0 + np.exp(-0.5 * np.abs(diff))) - 4.0
            direction = direction * xi
            st.prev = g.copy()
        p -= eff * direction

    def state_of(self, p: np.ndarray) -> RefState:
        """The reference state of one parameter array."""
        return self.states[id(p)]
