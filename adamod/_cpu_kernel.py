"""The fused CPU kernel: compiled from _cpu_kernel.c on first use, called through ctypes.

One call per step updates every contiguous float32/float64 tensor in a single pass; the work is
split into torch.get_num_threads() contiguous ranges. Where torch runs on OpenMP (its Linux
wheels), the ranges run on torch's own OpenMP threads: those spin for a while after every torch op,
so threads of our own would fight them for the cores (measured: no speed-up from a second thread,
against 1.2x fused Adam with OpenMP). Elsewhere, and in a forked child, a Python thread pool runs
them (ctypes releases the GIL).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
        for name in ("bounded_update_f32", "bounded_update_f64"):
            fn = getattr(library, name)
            fn.restype = None
            fn.argtypes = _KERNEL_ARGTYPES
            parallel = getattr(library, f"{name}_parallel", None)
            if parallel is not None:
                parallel.restype = None
                parallel.argtypes = [ctypes.c_int64, *_KERNEL_ARGTYPES]
                fn.parallel = parallel  # ctypes function objects take attributes
        global _library_pid
        _library_pid = os.getpid()
        _library = library
        return library


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


def eligible(*tensors: Tensor | None) -> bool:
    """Whether the kernel can update these tensors in place (contiguous CPU float32/float64)."""
    for t in tensors:
        if t is not None and not (t.is_cpu and t.dtype in _DTYPES and t.is_contiguous()):
            return False
    return True


def _pointers(tensors: list[Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def _kernel(dtype: torch.dtype) -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    """The kernel function for float32 or float64 tensors (compiling the library on first use)."""
    library = load_library()
    return library.bounded_update_f64 if dtype == torch.float64 else library.bounded_update_f32


def _launch(
    fn: ctypes._CFuncPtr,  # type: ignore[name-defined]
    n_tensors: int,
    arrays: list[ctypes.Array],
    prev: ctypes.Array | None,
    sizes: ctypes.Array,
    per_tensor: list[ctypes.Array],
    total: int,
    tail: tuple[float, ...],
    with_stats: bool,
) -> list[list[float]] | None:
    """Run the kernel over `total` elements, split over threads; return each chunk's stats."""
    global _pool, _pool_pid
    n_chunks = max(1, min(torch.get_num_threads(), total // _MIN_ELEMENTS_PER_THREAD))
    bounds = [total * k // n_chunks for k in range(n_chunks + 1)]
    stats = [(ctypes.c_double * 5)() for _ in range(n_chunks)] if with_stats else None

    def run(k: int) -> None:
        chunk_stats = None if stats is None else stats[k]
        fn(
            n_tensors,
            *arrays,
            prev,
            sizes,
            *per_tensor,
            bounds[k],
            bounds[k + 1],
            *tail,
            chunk_stats,
        )

    parallel = getattr(fn, "parallel", None)
    if n_chunks == 1:
        run(0)
    elif parallel is not None and _library_pid == os.getpid():
        flat_stats = (ctypes.c_double * (5 * n_chunks))() if with_stats else None
        parallel(
            n_chunks, n_tensors, *arrays, prev, sizes, *per_tensor, 0, total, *tail, flat_stats
        )
        if flat_stats is not None and stats is not None:
            return [list(flat_stats[5 * k : 5 * k + 5]) for k in range(n_chunks)]
    else:
        if _pool is None or _pool_pid != os.getpid() or _pool._max_workers < n_chunks - 1:
            _pool = ThreadPoolExecutor(max_workers=n_chunks - 1, thread_name_prefix="adamod")
            _pool_pid = os.getpid()
        futures = [_pool.submit(run, k) for k in range(1, n_chunks)]
        run(0)
        for future in futures:
            future.result()
    return None if stats is None else [list(row) for row in stats]


def _reduce(rows: list[list[float]]) -> list[float]:
    """[active, Σ η, max η, Σ eff, max eff] of the chunks together."""
    return [
        sum(r[0] for r in rows),
        sum(r[1] for r in rows),
        max(r[2] for r in rows),
        sum(r[3] for r in rows),
        max(r[4] for r in rows),
    ]


def _tail(
    beta1: float, beta2: float, beta3: float, decay: float, maximize: bool, version: int | None
) -> tuple[float, ...]:
    """The kernel's scalar arguments after the element range."""
    friction = _FRICTION[0 if version is None else version]
    return (beta1, beta2, beta3, decay, -1.0 if maximize else 1.0, *friction)


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
    per_tensor = [(ctypes.c_double * len(x))(*x) for x in (c, eps, scale)]
    tail = _tail(beta1, beta2, beta3, decay, maximize, version)
    rows = _launch(fn, len(params), arrays, prev, sizes, per_tensor, sum(numels), tail, with_stats)
    return None if rows is None else torch.tensor(_reduce(rows), dtype=torch.float64)


def fused_cpu_update_members(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    exp_avg_lrs: list[Tensor],
    prev_grads: list[Tensor] | None,
    *,
    c: list[list[float]],
    eps: list[list[float]],
    scale: list[list[float]],
    beta1: list[float],
    beta2: list[float],
    beta3: list[float],
    decay: list[float],
    maximize: bool,
    version: int | None,
    with_stats: bool,
) -> Tensor | None:
    """Member mode: the kernel once per member k on the slices t[k], with member k's scalars.

    Every tensor leads with the member dim K and is contiguous, so slice k starts k rows into
    it: the pointers are computed, not sliced (a view per tensor per member would cost more
    than the update of a small pack). c[k], eps[k], scale[k] are member k's per-tensor values;
    the other lists hold one value per member. Returns the (K, 5) stats.
    """
    fn = _kernel(params[0].dtype)
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    members = len(beta1)
    lists = [params, grads, exp_avgs, exp_avg_sqs, exp_avg_lrs]
    if prev_grads is not None:
        lists.append(prev_grads)
    bases = [[t.data_ptr() for t in ts] for ts in lists]
    numels = [p.numel() // members for p in params]
    rows_bytes = [n * p.element_size() for n, p in zip(numels, params, strict=True)]
    sizes = (ctypes.c_int64 * len(numels))(*numels)
    n = len(params)
    out = []
    for k in range(members):
        arrays = [
            (ctypes.c_void_p * n)(*[b + k * r for b, r in zip(base, rows_bytes, strict=True)])
            for base in bases
        ]
        prev = arrays.pop() if prev_grads is not None else None
        per_tensor = [(ctypes.c_double * n)(*x[k]) for x in (c, eps, scale)]
        tail = _tail(beta1[k], beta2[k], beta3[k], decay[k], maximize, version)
        rows = _launch(fn, n, arrays, prev, sizes, per_tensor, sum(numels), tail, with_stats)
        if rows is not None:
            out.append(_reduce(rows))
    return torch.tensor(out, dtype=torch.float64) if with_stats else None
