"""Design variants and mutants: named sets of hook overrides, discoverable and user-extensible.

A variant is one small module exposing `VARIANT = Variant(...)`. Built-ins live in this package
(designs) and in `bugs/` (mutants named `bug-*`, each re-introducing one real mistake). Users add
their own without touching septlab: pass `--variant path/to/my_variant.py`, or register a module
under the `septlab.variants` entry-point group.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class VariantError(Exception):
    """Unknown or malformed variant (a user error: exit status 2)."""


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # apply this variant's overrides first
    kind: str = "design"  # "design" or "mutant"
    reference: str = ""  # the patch / thread / commit it models
    catches: tuple[str, ...] = ()  # for mutants: invariants expected to catch it
    source: str = ""  # file a user variant was loaded from (recorded in traces for replay)
    check_scenario: str = "seed"  # built-in whose small configuration `septlab check` finds a mutant in

    def build_ops(self) -> SimpleNamespace:
        from ..kvm.x86_ops import HOOKS, default_ops

        ops = get_variant(self.base).build_ops() if self.base else default_ops()
        for name, fn in self.overrides.items():
            if name not in HOOKS:
                raise VariantError(f"variant {self.name}: unknown hook {name!r} (known: {', '.join(HOOKS)})")
            setattr(ops, name, fn)
        return ops


_REGISTRY: dict[str, Variant] | None = None


def _load_module_variants(modname: str) -> list[Variant]:
    mod = importlib.import_module(modname)
    v = getattr(mod, "VARIANT", None)
    return [v] if isinstance(v, Variant) else []


def registry() -> dict[str, Variant]:
    """Every built-in and entry-point variant, by name (sorted: designs first, then mutants)."""
    global _REGISTRY
    if _REGISTRY is None:
        found: list[Variant] = []
        for pkg in (__name__, __name__ + ".bugs"):
            path = Path(importlib.import_module(pkg).__file__).parent  # type: ignore[arg-type]
            for info in sorted(pkgutil.iter_modules([str(path)]), key=lambda m: m.name):
                if not info.ispkg:
                    found += _load_module_variants(f"{pkg}.{info.name}")
        for ep in entry_points(group="septlab.variants"):
            obj = ep.load()
            v = getattr(obj, "VARIANT", obj)
            if isinstance(v, Variant):
                found.append(v)
        found.sort(key=lambda v: (v.kind != "design", v.name))
        _REGISTRY = {v.name: v for v in found}
    return _REGISTRY


def load_variant_file(path: Path) -> Variant:
    spec = importlib.util.spec_from_file_location(f"septlab_user_variant_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise VariantError(f"{path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # a user's file: report, don't trace back
        raise VariantError(f"{path}: cannot load variant: {type(e).__name__}: {e}") from None
    v = getattr(mod, "VARIANT", None)
    if not isinstance(v, Variant):
        raise VariantError(f"{path}: defines no VARIANT = septlab.variants.Variant(...)")
    v = replace(v, source=str(path.resolve()))
    v.build_ops()  # reject unknown hooks now, with the file's name
    registry()[v.name] = v
    return v


def get_variant(name: str | None) -> Variant:
    if name is None:
        raise VariantError("no variant given")
    if name.endswith(".py"):
        p = Path(name)
        if not p.is_file():
            raise VariantError(f"{name}: no such variant file")
        return load_variant_file(p)
    reg = registry()
    if name not in reg:
        raise VariantError(f"unknown variant {name!r}; known: {', '.join(reg)} (or a path to a .py file)")
    return reg[name]
