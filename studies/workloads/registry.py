"""The workload registry: built-ins plus third-party workloads from the `adamod_lab.workloads`
entry-point group (installed on the server side, never named by a client as code)."""

from __future__ import annotations

import importlib
import threading
import warnings
from importlib.metadata import entry_points

from studies.workloads.base import Workload

__all__ = [
    "ENTRY_POINT_GROUP",
    "UnknownWorkloadError",
    "WorkloadPluginWarning",
    "get_workload",
    "list_workloads",
    "plugin_errors",
    "register_workload",
]

ENTRY_POINT_GROUP = "adamod_lab.workloads"

# Built-ins are imported lazily so that `import studies` stays cheap; each module exposes WORKLOAD.
_BUILTIN_MODULES = {
    "quadratic": "studies.workloads.quadratic",
    "digits_mlp": "studies.workloads.digits_mlp",
    "tiny_transformer": "studies.workloads.tiny_transformer",
    "cifar10_resnet": "studies.workloads.cifar10_resnet",
    "mnist1d": "studies.workloads.mnist1d",
    "noop": "studies.workloads.noop",
}

_lock = threading.Lock()
_registry: dict[str, Workload] = {}
_loaded = False
_plugin_errors: dict[str, str] = {}


class UnknownWorkloadError(KeyError, ValueError):
    """A workload name that is not registered (a ValueError for pydantic, a KeyError for dicts)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown workload"


class WorkloadPluginWarning(UserWarning):
    """A third-party workload entry point that could not be loaded (it is skipped)."""


def register_workload(workload: Workload, *, replace: bool = False) -> Workload:
    """Add a workload to the registry (for tests and in-process plugins); returns it."""
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a studies.workloads.Workload, got {type(workload)!r}")
    if not workload.name or not workload.name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(
            f"workload name must be letters, digits, '_' or '-', got {workload.name!r}"
        )
    with _lock:
        if workload.name in _registry and not replace and _registry[workload.name] is not workload:
            raise ValueError(f"workload {workload.name!r} is already registered")
        _registry[workload.name] = workload
    return workload


def _load_builtins() -> None:
    for name, module in _BUILTIN_MODULES.items():
        try:
            workload = importlib.import_module(module).WORKLOAD
        except Exception as exc:  # one broken built-in must not hide the others
            _plugin_errors[name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"built-in workload {name!r} ({module}) skipped: {type(exc).__name__}: {exc}",
                WorkloadPluginWarning,
                stacklevel=3,
            )
            continue
        _registry.setdefault(name, workload)


def _load_plugins() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        label = f"{ep.name} = {ep.value}"
        try:
            obj = ep.load()
            workload = obj() if callable(obj) and not isinstance(obj, Workload) else obj
            if not isinstance(workload, Workload):
                raise TypeError(f"loads to {type(workload).__name__}, not a Workload")
            if workload.name != ep.name:
                raise ValueError(
                    f"entry point is named {ep.name!r} but the workload {workload.name!r}"
                )
            if workload.name in _registry:
                raise ValueError(f"name {workload.name!r} is already taken by another workload")
        except Exception as exc:  # a broken plugin must never break listing or the service
            _plugin_errors[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"workload plugin {label!r} (group {ENTRY_POINT_GROUP}) skipped: "
                f"{type(exc).__name__}: {exc}",
                WorkloadPluginWarning,
                stacklevel=3,
            )
            continue
        _registry[workload.name] = workload


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if not _loaded:
            _load_builtins()
            _load_plugins()
            _loaded = True


def get_workload(name: str) -> Workload:
    """The registered workload `name`; UnknownWorkloadError naming the known ones otherwise."""
    _ensure_loaded()
    try:
        return _registry[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_registry))
        raise UnknownWorkloadError(
            f"unknown workload {name!r}; registered workloads: {known}"
        ) from None


def list_workloads() -> list[Workload]:
    """Every registered workload, sorted by name (broken plugins are skipped with a warning)."""
    _ensure_loaded()
    return [_registry[name] for name in sorted(_registry)]


def plugin_errors() -> dict[str, str]:
    """Entry points that failed to load, by name, with the reason."""
    _ensure_loaded()
    return dict(_plugin_errors)
