"""Design variants and mutants: named sets of hook overrides, discoverable and user-extensible.

A variant is one small module exposing `VARIANT = Variant(...)`. Built-ins live in this package
(designs) and in `bugs/` (mutants named `bug-*`, each re-introducing one real mistake). Users add
their own without touching septlab: pass `--variant path/to/my_variant.py`, or register a module
under the `septlab.variants` entry-point group.

Loading rules (so that a result always says which code produced it):

* The registry holds the built-ins and the entry-point variants, and nothing else. Loading a user
  file never changes it; a user variant may not reuse a registered name, and a built-in is never
  replaced by an entry point (that one is skipped and noted in `REGISTRY_WARNINGS`).
* Names are short and safe (`NAME_PATTERN`): they end up in file names and on terminals.
* Every variant is checked when it is loaded, not when a schedule first calls a hook: each override
  must have the shape of the kernel's default (generator or plain function, accepting the same
  arguments; a flag of the same type), and `base` must name a registered variant with no cycle.
* Whatever a user's file does at import (raise, `sys.exit()`, a syntax error) is a `VariantError`
  naming the file: exit status 2 and one line, never a traceback or a silent exit.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import inspect
import itertools
import pkgutil
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

from ..host.task import USER_VARIANT_PREFIX, add_chain_modules


class VariantError(Exception):
    """Unknown or malformed variant (a user error: exit status 2)."""


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # a registered variant whose overrides apply first
    kind: str = "design"  # "design" or "mutant"
    reference: str = ""  # the patch / thread / commit it models
    catches: tuple[str, ...] = ()  # for mutants: invariants expected to catch it
    source: str = ""  # file a user variant was loaded from (recorded in traces for replay)
    check_scenario: str = "seed"  # built-in whose small configuration `septlab check` finds a mutant in

    def build_ops(self) -> SimpleNamespace:
        """The hook table for one world: the defaults, then the base chain's overrides, then ours.

        Runs once per schedule, so it does not re-validate (loading did); it only refuses what
        would otherwise fail obscurely later: an unknown hook or an unknown base.
        """
        from ..kvm.x86_ops import HOOKS, default_ops

        if self.base is None:
            ops = default_ops()
        else:
            reg = registry()
            if self.base not in reg:
                raise VariantError(_clean(f"variant {self.name}: unknown base {self.base!r}"))
            ops = reg[self.base].build_ops()
        from ..kernel import kernel_functions

        for name, fn in self.overrides.items():
            if name in HOOKS:
                setattr(ops, name, fn)
            elif name not in kernel_functions():
                raise VariantError(_clean(f"variant {self.name}: unknown hook {name!r} (see `septlab hooks`; "
                                          f"known hooks: {', '.join(HOOKS)})"))
        return ops

    def patches(self) -> Any:
        """The kernel functions this variant (and its base chain) replaces outside the hook table: a
        `septlab.kernel.PatchSet`, made active whenever one of its worlds is built or stepped."""
        from ..kernel import PatchSet, kernel_functions
        from ..kvm.x86_ops import HOOKS

        hit = _PATCHES.get(id(self))
        if hit is not None and hit[0] is self:
            return hit[1]
        chain: list[Variant] = [self]
        reg = registry()
        while chain[-1].base is not None and chain[-1].base in reg and len(chain) < 64:
            chain.append(reg[chain[-1].base])
        table = kernel_functions()
        merged: dict[str, Any] = {}
        for v in reversed(chain):
            merged.update({n: f for n, f in v.overrides.items() if n not in HOOKS and n in table})
        ps = PatchSet(merged)
        _PATCHES[id(self)] = (self, ps)
        return ps


_PATCHES: dict[int, tuple[Variant, Any]] = {}  # id(variant) -> (variant, its PatchSet): one per variant object


# --- names and printable text -------------------------------------------------------------------

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}", re.IGNORECASE)  # used with fullmatch
KINDS = ("design", "mutant")
# Format characters that reorder or hide text on a terminal (bidi overrides/isolates, marks).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe_char(c: str) -> bool:
    """A character that must not reach a terminal or a one-line message: it could move the cursor,
    recolour the screen (ESC, CSI), break the line, or reorder what the reader sees."""
    return unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in _BIDI


def _clean(text: str, limit: int | None = None) -> str:
    """`text` made safe for one terminal line: unsafe characters escaped, optionally shortened.

    Every VariantError message passes through here because parts of it (paths, names, exception
    text) come from files we do not control, and the CLI promises one line.
    """
    out = "".join(c.encode("unicode_escape").decode("ascii") if _unsafe_char(c) else c for c in text)
    if limit is not None and len(out) > limit:
        out = out[: limit - 1] + "…"
    return out


def _first_unsafe(text: str) -> str | None:
    return next((c for c in text if _unsafe_char(c)), None)


def _short(value: Any, limit: int = 60) -> str:
    """repr() of a user's value, bounded: a message must stay one readable line whatever it is."""
    try:
        r = repr(value)
    except BaseException as e:  # noqa: BLE001 -- a user's __repr__ may do anything
        if isinstance(e, KeyboardInterrupt):
            raise
        r = f"<{type(value).__name__}>"
    return _clean(r, limit)


# --- hook shapes ----------------------------------------------------------------------------------

def _layers(fn: Any) -> Iterable[Any]:
    """`fn` and what it wraps: functools.partial, bound methods, functools.wraps (`__wrapped__`),
    callable instances (`__call__`). A generator hook hidden behind one of these is still one."""
    seen: set[int] = set()
    f = fn
    while f is not None and id(f) not in seen and len(seen) < 32:
        seen.add(id(f))
        yield f
        if isinstance(f, functools.partial):
            f = f.func
        elif inspect.ismethod(f):
            f = f.__func__
        elif (w := inspect.getattr_static(f, "__wrapped__", None)) is not None:
            f = w
        elif not (inspect.isfunction(f) or inspect.isbuiltin(f) or isinstance(f, type)):
            f = inspect.getattr_static(type(f), "__call__", None)
        else:
            f = None


def _is_generator_function(fn: Any) -> bool:
    """Calling `fn` gives a generator: the model drives such hooks with `yield from`."""
    return any(inspect.isgeneratorfunction(f) for f in _layers(fn))


def _is_async(fn: Any) -> bool:
    return any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in _layers(fn))


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: nothing to check against
        return None


def _sig_text(fn: Any) -> str:
    """`(kvm, sp)`: the parameters without annotations, which would only add noise to a message."""
    sig = _signature(fn)
    if sig is None:
        return "(...)"
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def _call_arities(default: Callable[..., Any]) -> list[int]:
    """Positional argument counts the model may call a hook with, judged from the default:
    from its required count to its total, plus a few more when it takes *args."""
    sig = _signature(default)
    if sig is None:
        return []
    ps = sig.parameters.values()
    pos = [p for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(1 for p in pos if p.default is p.empty)
    extra = 3 if any(p.kind is p.VAR_POSITIONAL for p in ps) else 0
    return list(range(required, len(pos) + extra + 1))


def _check_hook(where: str, hook: str, fn: Any, default: Any) -> None:
    """One override against the kernel's default for that hook (see the module docstring)."""
    if not callable(default):
        if default is None:
            return
        want = type(default)
        ok = type(fn) is bool if want is bool else isinstance(fn, want) and not isinstance(fn, bool)
        if not ok:
            raise VariantError(_clean(f"{where}: hook {hook} must be a {want.__name__} like the kernel's "
                                      f"({default!r}), not {type(fn).__name__} {_short(fn)}"))
        return
    dsig = f"{hook}{_sig_text(default)}"
    if not callable(fn):
        raise VariantError(_clean(f"{where}: hook {hook} must be a function like the kernel's {dsig}, "
                                  f"not {type(fn).__name__} {_short(fn)}"))
    fname = getattr(fn, "__name__", None)
    shown = f"{hook}{_sig_text(fn)}" if fname == hook else f"{hook} = {fname or type(fn).__name__}{_sig_text(fn)}"
    if _is_generator_function(default):
        if not _is_generator_function(fn):
            why = "it is async" if _is_async(fn) else "it has no yield"
            raise VariantError(_clean(f"{where}: hook {shown} must be a generator function like the kernel's "
                                      f"{dsig}: {why}"))
    elif _is_generator_function(fn) or _is_async(fn):
        raise VariantError(_clean(f"{where}: hook {shown} must be a plain function like the kernel's {dsig}: "
                                  "it yields, so calling it would run none of its body"))
    sig = _signature(fn)
    if sig is None:
        return
    for n in _call_arities(default):
        try:
            sig.bind(*[None] * n)
        except TypeError as e:
            raise VariantError(_clean(f"{where}: hook {shown} cannot be called like the kernel's {dsig} "
                                      f"(with {n} argument{'s' if n != 1 else ''}): {e}")) from None


# --- whole-variant checks ----------------------------------------------------------------------

def _check_fields(v: Variant, where: str) -> None:
    """Types and printable text of everything a variant shows or stores, before anything uses it."""
    if not isinstance(v.name, str):
        raise VariantError(_clean(f"{where}: variant name must be a string, not {type(v.name).__name__}"))
    if not NAME_PATTERN.fullmatch(v.name):
        raise VariantError(_clean(f"{where}: variant name {v.name!r} is not allowed: use 1-64 letters, digits, "
                                  "'.', '_', '+' or '-', starting with a letter or digit"))
    texts = [("description", v.description), ("reference", v.reference), ("check_scenario", v.check_scenario)]
    if not isinstance(v.catches, (tuple, list)):
        raise VariantError(_clean(f"{where}: variant {v.name}: catches must be a tuple of invariant names, "
                                  f"not {type(v.catches).__name__}"))
    texts += [("catches", c) for c in v.catches]
    for what, text in texts:
        if not isinstance(text, str):
            raise VariantError(_clean(f"{where}: variant {v.name}: {what} must be a string, "
                                      f"not {type(text).__name__}"))
        if (c := _first_unsafe(text)) is not None:
            raise VariantError(_clean(f"{where}: variant {v.name}: {what} contains the control character "
                                      f"{c!r}; it is printed on terminals"))
    if v.kind not in KINDS:
        raise VariantError(_clean(f"{where}: variant {v.name}: kind must be 'design' or 'mutant', not {_short(v.kind)}"))
    if v.base is not None and not isinstance(v.base, str):
        raise VariantError(_clean(f"{where}: variant {v.name}: base must be a variant name, "
                                  f"not {type(v.base).__name__}"))
    if not isinstance(v.overrides, Mapping):
        raise VariantError(_clean(f"{where}: variant {v.name}: overrides must be a dict of hook name -> function, "
                                  f"not {type(v.overrides).__name__}"))


def _check_hooks(v: Variant, where: str) -> None:
    from ..kernel import kernel_functions
    from ..kvm.x86_ops import HOOKS, default_ops

    defaults = vars(default_ops())
    table = kernel_functions()
    for hook, fn in v.overrides.items():
        if hook in HOOKS:
            _check_hook(where, hook, fn, defaults[hook])
        elif hook in table:
            _check_hook(where, hook, fn, table[hook].func)
        else:
            near = difflib.get_close_matches(hook, [*HOOKS, *table], n=3, cutoff=0.75)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise VariantError(_clean(f"{where}: unknown hook {hook!r}: neither a kvm_x86_ops hook ({', '.join(HOOKS)}) "
                                      "nor a kernel function the model has in its kvm/ or virt/ layers (the kernel "
                                      f"function may not be modelled: `septlab hooks --grep` searches){hint}"))


def _check_base_chain(v: Variant, where: str, reg: Mapping[str, Variant]) -> None:
    """`base` names a registered variant, and following bases ends: build_ops() must terminate."""
    chain = [v.name]
    b = v.base
    while b is not None:
        if b in chain:
            raise VariantError(_clean(f"{where}: variant {v.name}: base cycle {' -> '.join([*chain, b])}"))
        if b not in reg:
            raise VariantError(_clean(f"{where}: variant {v.name}: unknown base {b!r} (a base is a built-in or "
                                      f"registered variant name: {', '.join(reg)})"))
        chain.append(b)
        b = reg[b].base


def validate_variant(v: Variant, where: str | None = None) -> None:
    """Check a variant as loading does (fields, hooks, base chain against the registry).

    For variants built in code rather than loaded (tests, embedding); `where` names it in errors.
    """
    if not isinstance(v, Variant):
        raise VariantError(_clean(f"{where or 'variant'}: not a septlab.variants.Variant ({type(v).__name__})"))
    where = where or v.source or _ORIGINS.get(v.name, (f"variant {v.name}", False))[0]
    _check_fields(v, where)
    _check_hooks(v, where)
    _check_base_chain(v, where, registry())


# --- the registry ----------------------------------------------------------------------------------

_REGISTRY: Mapping[str, Variant] | None = None
_ORIGINS: dict[str, tuple[str, bool]] = {}  # name -> (module or entry point, is a built-in)
REGISTRY_WARNINGS: list[str] = []  # entry-point variants skipped, and why (one line each)


def _load_module_variants(modname: str) -> list[Variant]:
    mod = importlib.import_module(modname)
    v = getattr(mod, "VARIANT", None)
    return [v] if isinstance(v, Variant) else []


def _same_name(name: str, names: Iterable[str]) -> str | None:
    """The name in `names` equal to `name` but for case: traces and JSON files are named after
    variants, and on a case-insensitive file system 'Foo' and 'foo' would overwrite each other."""
    return next((n for n in names if n.casefold() == name.casefold()), None)


def _builtins() -> dict[str, tuple[Variant, str]]:
    """This package's variants. A broken built-in is our bug, so it raises rather than being skipped."""
    found: dict[str, tuple[Variant, str]] = {}
    for pkg in (__name__, __name__ + ".bugs"):
        path = Path(importlib.import_module(pkg).__file__).parent  # type: ignore[arg-type]
        for info in sorted(pkgutil.iter_modules([str(path)]), key=lambda m: m.name):
            if info.ispkg:
                continue
            modname = f"{pkg}.{info.name}"
            for v in _load_module_variants(modname):
                _check_fields(v, modname)
                if (other := _same_name(v.name, found)) is not None:
                    raise VariantError(f"{modname}: variant name {v.name!r} is also used by {found[other][1]}")
                _check_hooks(v, modname)
                found[v.name] = (v, modname)
    for v, modname in found.values():
        _check_base_chain(v, modname, {n: f[0] for n, f in found.items()})
    return found


def _entry_point_variants(taken: set[str]) -> dict[str, tuple[Variant, str]]:
    """Installed plug-ins. One broken plug-in must not take `septlab variants` (or every command)
    down, nor shadow a built-in: each problem skips that plug-in with a line in REGISTRY_WARNINGS."""
    found: dict[str, tuple[Variant, str]] = {}
    try:
        eps = list(entry_points(group="septlab.variants"))
    except Exception as e:  # broken installed metadata: still list the built-ins
        REGISTRY_WARNINGS.append(f"entry points: skipped all: cannot list them: {_describe_exc(e)}")
        return found
    for ep in eps:
        where = _clean(f"entry point {getattr(ep, 'name', '?')} ({getattr(ep, 'value', '?')})", 200)
        try:
            obj = ep.load()
            v = getattr(obj, "VARIANT", obj)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 -- a plug-in's import may do anything, even sys.exit()
            REGISTRY_WARNINGS.append(f"{where}: skipped: cannot load: {_describe_exc(e)}")
            continue
        if not isinstance(v, Variant):
            REGISTRY_WARNINGS.append(f"{where}: skipped: not a septlab.variants.Variant ({type(v).__name__})")
            continue
        try:
            _check_fields(v, where)
            folded = v.name.casefold()
            if folded in taken:
                raise VariantError(f"{where}: variant name {v.name!r} is already a built-in variant")
            if (other := _same_name(v.name, found)) is not None:
                raise VariantError(f"{where}: variant name {v.name!r} is already used by {found[other][1]}")
            _check_hooks(v, where)
        except VariantError as e:
            REGISTRY_WARNINGS.append(f"{e}; skipped")
            continue
        found[v.name] = (v, where)
        # The plug-in's functions appear in reports' call chains like the model's own.
        add_chain_modules(getattr(fn, "__module__", "") or "" for fn in v.overrides.values() if callable(fn))
    return found


def registry() -> Mapping[str, Variant]:
    """Every built-in and entry-point variant, by name (designs first, then mutants; by name).

    Read-only: a user's file is loaded beside the registry, never into it, so one command cannot
    end up reporting a built-in name for somebody else's hooks.
    """
    global _REGISTRY, _ORIGINS
    if _REGISTRY is None:
        REGISTRY_WARNINGS.clear()
        builtin = _builtins()
        plugins = _entry_point_variants({n.casefold() for n in builtin})
        # A plug-in's base may be another plug-in: drop those with a bad chain until none is left.
        while True:
            known = {n: f[0] for n, f in itertools.chain(builtin.items(), plugins.items())}
            bad: list[str] = []
            for n, (v, where) in plugins.items():
                try:
                    _check_base_chain(v, where, known)
                except VariantError as e:
                    REGISTRY_WARNINGS.append(f"{e}; skipped")
                    bad.append(n)
            if not bad:
                break
            for n in bad:
                del plugins[n]
        entries = [(v, where, True) for v, where in builtin.values()]
        entries += [(v, where, False) for v, where in plugins.values()]
        entries.sort(key=lambda e: (e[0].kind != "design", e[0].name))
        _ORIGINS = {v.name: (where, is_builtin) for v, where, is_builtin in entries}
        _REGISTRY = MappingProxyType({v.name: v for v, _, _ in entries})
    return _REGISTRY


# --- user files --------------------------------------------------------------------------------

_LOADS = itertools.count()


def _describe_exc(e: BaseException) -> str:
    """What went wrong at import, in one bounded line (SystemExit says what it was called with)."""
    if isinstance(e, SystemExit):
        return f"it called sys.exit({_short(e.code)}) while being imported"
    try:
        text = str(e)
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 -- a user's exception's __str__ may itself fail
        text = "<unprintable>"
    return _clean(f"{type(e).__name__}: {text}" if text else type(e).__name__, 300)


def load_variant_file(path: str | Path) -> Variant:
    """Import a user's variant file and check it; the registry is left as it was.

    The module is importable under a unique name while it runs (dataclasses and pickling look
    modules up in sys.modules), and stays so if it loads; a failed load leaves no trace.
    """
    path = Path(path)
    where = _clean(str(path), 300)
    stem = re.sub(r"\W", "_", path.stem)
    modname = f"{USER_VARIANT_PREFIX}{next(_LOADS)}_{stem}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise VariantError(f"{where}: not a Python file")
    try:
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
        v = getattr(mod, "VARIANT", None)
        if isinstance(v, Variant):
            v = replace(v, source=str(path.resolve()))
    except KeyboardInterrupt:
        sys.modules.pop(modname, None)
        raise
    except BaseException as e:  # noqa: BLE001 -- a user's file: report it in one line, don't trace back or exit
        sys.modules.pop(modname, None)
        raise VariantError(f"{where}: cannot load variant: {_describe_exc(e)}") from None
    if v is None:
        sys.modules.pop(modname, None)
        raise VariantError(f"{where}: defines no VARIANT = septlab.variants.Variant(...)")
    if not isinstance(v, Variant):
        sys.modules.pop(modname, None)
        raise VariantError(f"{where}: VARIANT is a {_clean(type(v).__name__, 60)}, "
                           "not a septlab.variants.Variant(...)")
    try:
        _check_fields(v, where)
        reg = registry()
        if (clash := _same_name(v.name, reg)) is not None:
            origin, is_builtin = _ORIGINS.get(clash, ("", True))
            what = "a built-in variant" if is_builtin else f"a registered variant ({origin})"
            raise VariantError(_clean(f"{where}: variant name {v.name!r} is already {what}; "
                                      "give yours another name"))
        _check_hooks(v, where)
        _check_base_chain(v, where, reg)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return v


def get_variant(name: str | None, *, allow_files: bool = True) -> Variant:
    """A registered variant by name, or (if `allow_files`) a user's `.py` file loaded and checked.

    `allow_files=False` is for names that come from data rather than from the user's command line
    (a trace to replay): reading a file must never be a way to run code.
    """
    if name is None:
        raise VariantError("no variant given")
    if not isinstance(name, str):
        raise VariantError(f"a variant is a name or a .py file, not {_clean(type(name).__name__, 60)}")
    if name.endswith(".py"):
        if not allow_files:
            raise VariantError(_clean(f"{name}: names a variant file; a trace never loads code: "
                                      "pass --variant FILE on the command line"))
        p = Path(name)
        if not p.is_file():
            raise VariantError(_clean(f"{name}: no such variant file"))
        return load_variant_file(p)
    reg = registry()
    if name not in reg:
        raise VariantError(_clean(f"unknown variant {name!r}; known: {', '.join(reg)} (or a path to a .py file)"))
    return reg[name]


def resolve_variants(specs: list[str], *, allow_files: bool = True) -> list[Variant]:
    """Load several names/files (e.g. `compare --variants`), refusing two that share a name:
    results are reported and traced by name, so two rows called the same would be ambiguous."""
    out: list[Variant] = []
    seen: dict[str, tuple[str, Variant]] = {}
    for spec in specs:
        v = get_variant(spec, allow_files=allow_files)
        key = v.name.casefold()
        if key in seen:
            first, prev = seen[key]
            if (prev.name, prev.source) == (v.name, v.source):
                raise VariantError(_clean(f"variant {spec} is listed twice"))
            raise VariantError(_clean(f"two variants are named {v.name!r}: {first} and {spec}; "
                                      "give one of them another name"))
        seen[key] = (spec, v)
        out.append(v)
    return out
