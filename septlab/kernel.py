"""The kernel-function table: every function of the kvm/ and virt/ layers, replaceable by its kernel name.

A patch under review can touch any kernel function, not only the `kvm_x86_ops` members and decision
points in `kvm/x86_ops.py:HOOKS`. So a variant may override any function defined in `septlab.kvm.*` or
`septlab.virt.*` by the name it has in the kernel (`handle_removed_pt`, `tdx_pamt_put`,
`tdx_sept_reclaim_or_leak`, ...). HOOKS overrides go through `kvm.ops` as before (they are real
indirection points in the kernel); every other override is a *patch set*: when a world of that variant
is built or stepped, each module-level binding of the original function in septlab's own modules is
rebound to the override, and the previous variant's bindings are restored. The model keeps calling
plain functions, so the hot path pays nothing; only one variant's patch set is active at a time, and
the runtime re-activates its world's set before stepping it.

A variant module's own references (`from septlab.kvm.tdx import x as orig`) are never rebound, so an
override can wrap the original; `original(name)` returns it too.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from types import FunctionType
from typing import Any

LAYERS = ("septlab.kvm", "septlab.virt")
# Modules whose bindings are never rebound: variants keep the originals they import; checkers and
# explorers never call model functions by name.
_NEVER_PATCH = ("septlab.variants", "septlab.check", "septlab.explore", "septlab.kernel", "septlab.cli")

MODULE_FILE = {
    "septlab.kvm.tdp_mmu": "arch/x86/kvm/mmu/tdp_mmu.c",
    "septlab.kvm.tdx": "arch/x86/kvm/vmx/tdx.c",
    "septlab.kvm.x86": "arch/x86/kvm/x86.c",
    "septlab.kvm.guest_memfd": "virt/kvm/guest_memfd.c",
    "septlab.kvm.kvm_main": "virt/kvm/kvm_main.c",
    "septlab.kvm.spte": "arch/x86/kvm/mmu/spte.h",
    "septlab.kvm.mmu_page": "arch/x86/kvm/mmu/mmu_internal.h",
    "septlab.kvm.kvm_host": "include/linux/kvm_host.h",
    "septlab.kvm.x86_ops": "arch/x86/include/asm/kvm-x86-ops.h",
    "septlab.virt.seamcall": "arch/x86/virt/vmx/tdx/tdx.c",
    "septlab.virt.dpamt": "arch/x86/virt/vmx/tdx/tdx.c",
}
# Functions that live in another file than the rest of their septlab module (by name prefix).
PREFIX_FILE = (
    ("septlab.kvm.x86", "kvm_mmu_", "arch/x86/kvm/mmu/mmu.c"),
    ("septlab.kvm.x86", "kvm_tdp_page_fault", "arch/x86/kvm/mmu/mmu.c"),
    ("septlab.kvm.x86", "is_page_fault_stale", "arch/x86/kvm/mmu/mmu.c"),
    ("septlab.kvm.x86", "mmu_topup_memory_caches", "arch/x86/kvm/mmu/mmu.c"),
    ("septlab.kvm.x86", "tdx_", "arch/x86/kvm/vmx/tdx.c"),
    ("septlab.kvm.x86", "kvm_destroy_vm", "virt/kvm/kvm_main.c"),
    ("septlab.kvm.x86", "kvm_vcpu_create", "virt/kvm/kvm_main.c"),
    ("septlab.kvm.guest_memfd", "kvm_mmu_invalidate_", "virt/kvm/kvm_main.c"),
    ("septlab.kvm.x86", "mmu_invalidate_retry_gfn", "include/linux/kvm_host.h"),
    ("septlab.kvm.x86", "kvm_tdp_mmu_map_private_pfn", "arch/x86/kvm/mmu/mmu.c"),
    ("septlab.kvm.tdx", "kvm_arch_vcpu_load", "arch/x86/kvm/x86.c"),
    ("septlab.kvm.x86", "check_hung_srcu", "kernel/hung_task.c"),
    ("septlab.kvm.kvm_main", "srcu_", "kernel/rcu/srcutree.c"),
    ("septlab.kvm.kvm_main", "synchronize_srcu", "kernel/rcu/srcutree.c"),
    ("septlab.kvm.kvm_main", "kvm_mmu_zap_all", "arch/x86/kvm/mmu/mmu.c"),
    ("septlab.kvm.kvm_main", "kvm_unmap_gfn_range", "arch/x86/kvm/mmu/mmu.c"),
    ("septlab.kvm.kvm_main", "kvm_arch_flush_shadow_memslot", "arch/x86/kvm/mmu/mmu.c"),
    ("septlab.kvm.kvm_main", "mmu_notifier_unregister", "mm/mmu_notifier.c"),
)


_NOT_KERNEL = frozenset({"default_ops", "cause_desc", "tdx_fault_cause",  # checker bookkeeping
                         "present_indices"})  # a model accelerator of the TDP iterator, not a kernel function


@dataclass(frozen=True, slots=True)
class KernelFunction:
    name: str
    module: str
    kernel_file: str
    func: Callable[..., Any]

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.func) or ""
        return doc.splitlines()[0] if doc else ""

    @property
    def is_generator(self) -> bool:
        return inspect.isgeneratorfunction(self.func)


def _kernel_file(module: str, name: str) -> str:
    for mod, prefix, path in PREFIX_FILE:
        if mod == module and name.startswith(prefix):
            return path
    return MODULE_FILE.get(module, module.replace(".", "/") + ".py")


@cache
def kernel_functions() -> Mapping[str, KernelFunction]:
    """Every function defined in the kvm/ and virt/ layers, by its (kernel) name, sorted by file then name."""
    found: dict[str, KernelFunction] = {}
    for pkg in LAYERS:
        mod = importlib.import_module(pkg)
        for info in pkgutil.iter_modules(mod.__path__):
            name = f"{pkg}.{info.name}"
            m = importlib.import_module(name)
            for attr, obj in vars(m).items():
                if attr in _NOT_KERNEL or (attr.startswith("_") and not attr.startswith("__")):
                    continue  # septlab's own helpers, not kernel functions
                if isinstance(obj, FunctionType) and obj.__module__ == name and attr not in found:
                    found[attr] = KernelFunction(attr, name, _kernel_file(name, attr), obj)
    return dict(sorted(found.items(), key=lambda kv: (kv[1].kernel_file, kv[0])))


def original(name: str) -> Callable[..., Any]:
    """The model's own implementation of a kernel function, whatever patch set is active."""
    return kernel_functions()[name].func


class PatchSet:
    """A variant's overrides of kernel functions that are not kvm_x86_ops hooks."""

    __slots__ = ("overrides", "_bound")

    def __init__(self, overrides: Mapping[str, Callable[..., Any]]):
        self.overrides = dict(overrides)
        self._bound: list[tuple[dict[str, Any], str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self.overrides)

    def _apply(self) -> None:
        table = kernel_functions()
        by_orig = {id(table[n].func): fn for n, fn in self.overrides.items()}
        for modname, mod in list(sys.modules.items()):
            if not modname.startswith("septlab.") or modname.startswith(_NEVER_PATCH) or mod is None:
                continue
            ns = vars(mod)
            for attr, val in list(ns.items()):
                new = by_orig.get(id(val))
                if new is not None and isinstance(val, FunctionType):
                    self._bound.append((ns, attr, val))
                    ns[attr] = new

    def _restore(self) -> None:
        for ns, attr, val in reversed(self._bound):
            ns[attr] = val
        self._bound.clear()


_ACTIVE: PatchSet | None = None
EMPTY = PatchSet({})


def activate(ps: PatchSet | None) -> None:
    """Make `ps` the patch set in force (restoring the previous one's bindings first); cheap if it already is."""
    global _ACTIVE
    if ps is _ACTIVE or (not ps and not _ACTIVE):
        return
    if _ACTIVE is not None:
        _ACTIVE._restore()
    _ACTIVE = None
    if ps:
        ps._apply()
        _ACTIVE = ps


def active() -> PatchSet | None:
    return _ACTIVE


def markdown_table() -> str:
    """The model-to-kernel map of docs/fidelity.md: every replaceable function, its kernel file, what it models."""
    from .kvm.x86_ops import HOOKS

    rows = ["| model function (kernel name) | septlab module | kernel file | models | hook |", "|---|---|---|---|---|"]
    for k in kernel_functions().values():
        what = k.summary.replace("|", "\\|")
        rows.append(f"| `{k.name}` | `{k.module.removeprefix('septlab.')}` | `{k.kernel_file}` | {what} | "
                    f"{'kvm.ops' if k.name in HOOKS else ''} |")
    return "\n".join(rows) + "\n"
