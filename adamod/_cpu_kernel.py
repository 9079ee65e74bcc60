"""The fused CPU kernel: compiled from _cpu_kernel.c on first use, called through ctypes.

One call per step (and dtype) updates every contiguous float32/float64 tensor in a single pass;
in member mode one call updates every member of every tensor, each with its own scalars. The work
is split into torch.get_num_threads() contiguous ranges. Where torch runs on OpenMP (its Linux
wheels), the ranges run on torch's own OpenMP threads: those spin for a while after every torch op,
so threads of our own would fight them for the cores (measured: no speed-up from a second thread,
against 1.2x fused Adam with OpenMP). Elsewhere, and in a forked child, a Python thread pool runs
them (ctypes releases the GIL).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

_SOURCE = Path(__file__).with_name("_cpu_kernel.c")
_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC"]
# tried in order: vector exp from glibc's libmvec, then plain libm
_LINK_OPTIONS = (["-lmvec", "-lm"], ["-DADAMOD_NO_MVEC", "-lm"])
# Where torch's own threads are OpenMP's, the kernel is built with OpenMP too and splits a step over
# torch's thread pool (see the note in _cpu_kernel.c); elsewhere it uses a thread pool of its own.
_USE_OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()
# DiffMod's friction ξ = a / (1 + exp(-k d)) + b with d = |Δg| (use_abs) or Δg, per version
_FRICTION = {0: (1, 1.0, 1.0, 0.0), 1: (0, 1.0, 1.0, 0.0), 2: (1, 9.0, 0.5, -4.0)}
_MIN_ELEMENTS_PER_THREAD = 1 << 16
_DTYPES = (torch.float32, torch.float64)
_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_load_error: str | None = None  # why the library did not load (default paths fall back)
_library_pid = 0  # OpenMP's thread pool does not survive fork: children use the Python pool
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child inherits the pool object but not its threads


def _cache_dir() -> Path:
    """Where compiled kernels are kept (ADAMOD_KERNEL_DIR, else ~/.cache/adamod)."""
    configured = os.environ.get("ADAMOD_KERNEL_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "adamod"


def _cpu_signature() -> str:
    """CPU features, so that a -march=native build is never reused on another CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return os.uname().machine


def load_library() -> ctypes.CDLL:
    """Compile (once per source, flags and CPU) and load the kernel library."""
    global _library
    with _lock:
        if _library is not None:
            return _library
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise ImportError(
                "fused=True on CPU needs a C compiler (cc/gcc, or set CC); "
                "use foreach=True or the default path instead"
            )
        source = _SOURCE.read_bytes()
        flags = [*_FLAGS, "-fopenmp"] if _USE_OPENMP else _FLAGS
        key = hashlib.sha256(source + " ".join(flags).encode() + _cpu_signature().encode())
        target = _cache_dir() / f"adamod_kernel_{key.hexdigest()[:16]}.so"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                built = Path(tmp) / target.name
                errors = []
                for link in _LINK_OPTIONS:
                    try:
                        result = subprocess.run(
                            [compiler, *flags, str(_SOURCE), "-o", str(built), *link],
                            capture_output=True,
                            text=True,
                        )
                    except OSError as error:  # CC names no runnable program
                        errors.append(f"{compiler}: {error}")
                        continue
                    if result.returncode == 0:
                        break
                    errors.append(result.stderr)
                else:
                    raise ImportError(
                        "compiling the fused CPU kernel failed:\n" + "\n".join(errors)
                    )
                os.replace(built, target)  # atomic: concurrent processes never see half a file
        library = ctypes.CDLL(str(target))
        for name, argtypes in (
            ("bounded_update", _KERNEL_ARGTYPES),
            ("member_update", _MEMBER_ARGTYPES),
        ):
            for dtype in ("f32", "f64"):
                fn = getattr(library, f"{name}_{dtype}")
                fn.restype = None
                fn.argtypes = argtypes
                parallel = getattr(library, f"{name}_{dtype}_parallel", None)
                if parallel is not None:
                    parallel.restype = None
                    parallel.argtypes = [ctypes.c_int64, *argtypes]
                    fn.parallel = parallel  # ctypes function objects take attributes
        global _library_pid
        _library_pid = os.getpid()
        _library = library
        return library


def available() -> bool:
    """Whether the kernel library loads here; a failure is remembered, never retried.

    The default member path asks this every step and falls back to the torch path without a
    compiler, so a failed compilation must not be attempted again at the next step.
    """
    global _load_error
    if _library is not None:
        return True
    if _load_error is not None:
        return False
    try:
        load_library()
    except ImportError as error:
        _load_error = str(error)
        return False
    return True


_POINTER, _I64, _F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
_KERNEL_ARGTYPES = [
    _I64,  # number of tensors
    *[_POINTER] * 7,  # p, g, m, v, s, previous gradients (or NULL), sizes
    *[_POINTER] * 3,  # per-tensor c, eps, scale
    _I64,  # lo
    _I64,  # hi
    *[_F64] * 5,  # beta1, beta2, beta3, decay, sign
    _I64,  # use_abs
    *[_F64] * 3,  # friction a, k, b
    _POINTER,  # stats
]
_MEMBER_ARGTYPES = [
    _I64,  # number of tensors
    _I64,  # number of members K
    *[_POINTER] * 7,  # p, g, m, v, s, previous gradients (or NULL), sizes
    *[_POINTER] * 3,  # per tensor a pointer to K values of c, eps, scale
    *[_POINTER] * 4,  # K values each of beta1, beta2, beta3, decay
    _I64,  # lo
    _I64,  # hi
    _F64,  # sign
    _I64,  # use_abs
    *[_F64] * 3,  # friction a, k, b
    _POINTER,  # stats: K rows of 5
]


def eligible(*tensors: Tensor | None) -> bool:
    """Whether the kernel can update these tensors in place (contiguous CPU float32/float64)."""
    for t in tensors:
        if t is not None and not (t.is_cpu and t.dtype in _DTYPES and t.is_contiguous()):
            return False
    return True


def _pointers(tensors: list[Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def _doubles(values: Sequence[float]) -> ctypes.Array:
    return (ctypes.c_double * len(values))(*values)


def _kernel(dtype: torch.dtype, name: str = "bounded_update") -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    """A kernel function for float32 or float64 tensors (compiling the library on first use)."""
    library = load_library()
    return getattr(library, f"{name}_{'f64' if dtype == torch.float64 else 'f32'}")


def _launch(
    fn: ctypes._CFuncPtr,  # type: ignore[name-defined]
    head: tuple[Any, ...],
    total: int,
    tail: tuple[Any, ...],
    stats_width: int | None,
) -> Tensor | None:
    """Run fn(*head, lo, hi, *tail, stats) over `total` elements, split over threads.

    Returns each chunk's stats as rows of `stats_width` doubles (None without stats).
    """
    global _pool, _pool_pid
    n_chunks = max(1, min(torch.get_num_threads(), total // _MIN_ELEMENTS_PER_THREAD))
    bounds = [total * k // n_chunks for k in range(n_chunks + 1)]
    stats = None if stats_width is None else torch.zeros(n_chunks, stats_width, dtype=torch.float64)
    address = 0 if stats is None else stats.data_ptr()
    row_bytes = 0 if stats_width is None else 8 * stats_width

    def run(k: int) -> None:
        fn(*head, bounds[k], bounds[k + 1], *tail, address + k * row_bytes if address else None)

    parallel = getattr(fn, "parallel", None)
    if n_chunks == 1:
        run(0)
    elif parallel is not None and _library_pid == os.getpid():
        parallel(n_chunks, *head, 0, total, *tail, address or None)
    else:
        if _pool is None or _pool_pid != os.getpid() or _pool._max_workers < n_chunks - 1:
            _pool = ThreadPoolExecutor(max_workers=n_chunks - 1, thread_name_prefix="adamod")
            _pool_pid = os.getpid()
        futures = [_pool.submit(run, k) for k in range(1, n_chunks)]
        run(0)
        for future in futures:
            future.result()
    return stats


def _reduce(stats: Tensor) -> Tensor:
    """[active, Σ η, max η, Σ eff, max eff] (last dim) of the chunks (first dim) together."""
    if stats.shape[0] == 1:
        return stats[0]
    out = stats.sum(0)
    out[..., 2] = stats[..., 2].amax(0)
    out[..., 4] = stats[..., 4].amax(0)
    return out


def _friction(maximize: bool, version: int | None) -> tuple[float, ...]:
    """sign, use_abs and DiffMod's friction a, k, b (AdaMod: unused)."""
    use_abs, a, k, b = _FRICTION[0 if version is None else version]
    return (-1.0 if maximize else 1.0, use_abs, a, k, b)


def fused_cpu_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor],
    prev_grads: list[Tensor] | None,
    *,
    c: list[float],
    eps: list[float],
    scale: list[float],
    beta1: float,
    beta2: float,
    beta3: float,
    decay: float,
    maximize: bool,
    version: int | None,
    with_stats: bool,
) -> Tensor | None:
    """Update same-dtype tensors in one pass; return [active, Σ η, max η, Σ eff, max eff]."""
    fn = _kernel(params[0].dtype)
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    arrays = [_pointers(ts) for ts in (params, grads, exp_avgs, exp_avg_sqs, exp_avg_lrs)]
    prev = _pointers(prev_grads) if prev_grads is not None else None
    numels = [p.numel() for p in params]
    sizes = (ctypes.c_int64 * len(numels))(*numels)
    head = (len(params), *arrays, prev, sizes, _doubles(c), _doubles(eps), _doubles(scale))
    sign, *friction = _friction(maximize, version)
    tail = (beta1, beta2, beta3, decay, sign, *friction)
    stats = _launch(fn, head, sum(numels), tail, 5 if with_stats else None)
    return None if stats is None else _reduce(stats)


def member_cpu_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor] | None,
    prev_grads: list[Tensor] | None,
    *,
    members: int,
    c: list[Sequence[float]],
    eps: list[Sequence[float]],
    scale: list[Sequence[float]],
    beta1: Sequence[float],
    beta2: Sequence[float],
    beta3: Sequence[float],
    decay: Sequence[float],
    maximize: bool,
    version: int | None,
    with_stats: bool,
) -> Tensor | None:
    """Member mode: every member of same-dtype tensors in one kernel call; (K, 5) stats.

    Every tensor leads with the member dim K and is contiguous, so element i of a tensor of n
    elements belongs to member i // (n / K): the kernel derives it, with no slicing here.
    c[t], eps[t], scale[t] are the K values for tensor t (tensors of one step count pass the
    same sequences, which are then converted once); beta1..decay hold one value per member.
    exp_avg_lrs None is Adam (β3 taken as 0, no bound state; neither DiffMod nor stats).
    """
    if exp_avg_lrs is None and (prev_grads is not None or with_stats):
        raise ValueError("exp_avg_lrs: None (Adam) takes neither prev_grads nor stats")
    fn = _kernel(params[0].dtype, "member_update")
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    arrays = [_pointers(ts) for ts in (params, grads, exp_avgs, exp_avg_sqs)]
    bounds = None if exp_avg_lrs is None else _pointers(exp_avg_lrs)
    prev = _pointers(prev_grads) if prev_grads is not None else None
    numels = [p.numel() for p in params]
    sizes = (ctypes.c_int64 * len(numels))(*numels)
    converted: dict[int, ctypes.Array] = {}  # by id: the arrays live until the call returns

    def per_tensor(values: list[Sequence[float]]) -> ctypes.Array:
        for v in values:
            if id(v) not in converted:
                converted[id(v)] = _doubles(v)
        return (ctypes.c_void_p * len(values))(
            *[ctypes.addressof(converted[id(v)]) for v in values]
        )

    head = (
        len(params),
        members,
        *arrays,
        bounds,
        prev,
        sizes,
        per_tensor(c),
        per_tensor(eps),
        per_tensor(scale),
        *(_constant_doubles(tuple(x)) for x in (beta1, beta2, beta3, decay)),
    )
    stats = _launch(
        fn, head, sum(numels), _friction(maximize, version), 5 * members if with_stats else None
    )
    return None if stats is None else _reduce(stats.view(-1, members, 5))


@functools.lru_cache(maxsize=64)
def _constant_doubles(values: tuple[float, ...]) -> ctypes.Array:
    """_doubles(values), kept for the next step with the same values (read-only to the kernel):
    member values that stay the same from step to step (betas; decay without a schedule), so a
    pack's step converts only its step-dependent scalars."""
    return _doubles(values)
