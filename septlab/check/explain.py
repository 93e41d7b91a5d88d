"""`septlab explain`: a counterexample as kernel developers draw a race -- CPU columns, then the report.

A violation names the objects it is about: the pages of its report (`Violation.pfns`, a `pfn` detail),
the guest frame (`gfn`), the locks of a lockdep splat. The trace is re-run once with every step's
footprint recorded (explore/footprint.py: the same tracing the partial-order reduction uses, so a
variant's own code is covered without annotations), and a step is drawn when it touched one of those
objects:

- a page: its allocator owner entry, its TDX-module page type/owner (PAMT), any dict entry keyed by
  its pfn, and the `kvm_mmu_page` whose `spt` or `external_spt` it is;
- a guest frame: the SPTEs (mirror or direct) that map it: its 4 KiB entry, read or written, and a write
  of the 2 MiB entry above it (every walk of the region reads that one; a page table freed under a
  walker is drawn through its page);
- a lock: acquiring or releasing it (reads of a lock -- a trylock that found it taken -- are not drawn).

Each drawn step stands in its task's column, labelled with the kernel function that announced it and
what it did (the step's announcement: a SEAMCALL leaf, `write_lock(mmu_lock)`, `tdp_mmu_set_spte`); the
violating step is marked. Columns are the tasks with a drawn step, in the world's task order. A long
race keeps its first and last rows and says how many it left out (`--all` draws every one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import GeneratorType
from typing import Any

from ..host.locks import Mutex, RwLock, RwSem, SpinLock
from ..host.task import _CHAIN_SKIP_FUNCS, _CHAIN_SKIP_MODULES
from ..kvm.mmu_page import NO_PAGE
from ..kvm.spte import SPTE_ENT_PER_PAGE
from .invariants import Violation

CELL_MAX = 64  # characters of one column's text ...
LINE_MAX = 180  # ... narrower when there are many columns
HEAD_ROWS = 6  # rows kept from the start of a long race (where the objects were set up) ...
TAIL_ROWS = 30  # ... and from its end (the race itself)
_LOCK_TYPES = (RwLock, SpinLock, Mutex, RwSem)
# Frames that announce a step on behalf of their caller: the step is labelled with the caller.
_WRAPPER_MODULES = ("septlab.virt.seamcall", "septlab.host.locks", "septlab.host.rcu")
_LOCKDEP_INTERNALS = frozenset({"used", "might_lock"})  # how lockdep's usage records start, not kernel frames
_WRAPPER_FUNCS = frozenset({"tdh_do_no_vcpus"})  # tdx.c's retry macro around a no-fail SEAMCALL


@dataclass(slots=True)
class StepRecord:
    """One step of the replayed schedule: who ran it, what it announced, where, and what it touched."""

    step: int
    task: str
    what: str
    chain: tuple[str, ...]
    reads: frozenset
    writes: frozenset


@dataclass(slots=True)
class Recording:
    """Everything `explain` needs from one re-run: the steps, and which pages each sp ever held."""

    steps: list[StepRecord] = field(default_factory=list)
    sp_pfns: dict[int, set[int]] = field(default_factory=dict)  # sp_id -> {spt, external_spt} ever seen
    sp_span: dict[int, tuple[int, int]] = field(default_factory=dict)  # sp_id -> (first gfn, level)
    locks: dict[str, str] = field(default_factory=dict)  # lock class or name -> canonical lock name
    tasks: list[str] = field(default_factory=list)


def generator_chain(gen: Any) -> tuple[str, ...]:
    """The modelled call chain of a suspended task, outermost first, read from its generator frames
    (task.callchain() reads the running frames; a task between steps has none running)."""
    names: list[str] = []
    while isinstance(gen, GeneratorType):
        fr = gen.gi_frame
        if fr is None:
            break
        mod = fr.f_globals.get("__name__", "")
        name = fr.f_code.co_name
        if not mod.startswith(_CHAIN_SKIP_MODULES) and name not in _CHAIN_SKIP_FUNCS:
            wrapper = mod.startswith(_WRAPPER_MODULES) or name in _WRAPPER_FUNCS
            names.append("|" + name if wrapper else name)
        gen = gen.gi_yieldfrom
    return tuple(names)


def recorder(rec: Recording) -> Callable[[Any], Callable[[Any, bool], None]]:
    """The observer factory for run_schedule(): records each step's footprint into `rec`."""
    from ..explore.footprint import Tracer
    from ..explore.runtime import op_enabled

    def bind(world: Any) -> Callable[[Any, bool], None]:
        tracer = Tracer()
        roots = [world.host, world.kvm]
        rec.tasks = [t.task.name for t in world.threads]
        _collect_locks(world, rec)
        pending: list[Any] = []

        def observe(thread: Any, before: bool) -> None:
            if before:
                op = thread.op
                pending[:] = [thread.task.name, op.what or repr(op), generator_chain(thread.gen)]
                tracer.start(roots, thread.gen, lambda: op_enabled(op))
                return
            reads, writes, _rp, _wp = tracer.stop()
            rec.steps.append(StepRecord(len(rec.steps), pending[0], pending[1], pending[2], reads, writes))
            for sp in world.kvm.sp_by_spt.values():
                pf = rec.sp_pfns.setdefault(sp.sp_id, set())
                pf.add(sp.spt)
                if sp.external_spt != NO_PAGE:
                    pf.add(sp.external_spt)
                rec.sp_span[sp.sp_id] = (sp.gfn, sp.level)

        return observe

    return bind


def _collect_locks(world: Any, rec: Recording) -> None:
    """Every lock object of the world, by lockdep class and by name (a splat names classes)."""
    seen: set[int] = set()
    stack: list[Any] = [world.host, world.kvm]
    while stack:
        o = stack.pop()
        if id(o) in seen or o is None or isinstance(o, (int, str, float, bytes)):
            continue
        seen.add(id(o))
        if isinstance(o, _LOCK_TYPES):
            rec.locks[o.name] = o.name
            cls = getattr(o, "cls", None)
            if cls:
                rec.locks[cls] = o.name
            continue
        if type(o).__module__.startswith("septlab.") and hasattr(o, "__dataclass_fields__"):
            stack.extend(getattr(o, f, None) for f in o.__dataclass_fields__)
        elif isinstance(o, (list, tuple)) and len(o) < 64:
            stack.extend(o)
        elif isinstance(o, dict) and len(o) < 64:
            stack.extend(o.values())


@dataclass(slots=True)
class Involved:
    """The objects a violation is about."""

    pfns: set[int]
    gfns: set[int]
    locks: set[str]  # canonical lock names
    sps: set[int]  # kvm_mmu_page ids whose spt/external_spt is one of `pfns`
    own_locks: set[str] = field(default_factory=set)  # held by the violating task (drawn for it alone)
    task: str = ""
    regions: set[int] = field(default_factory=set)  # 2 MiB regions (pfn >> 9) of a PAMT refcount report

    def describe(self, rec: Recording) -> str:
        parts = []
        for p in sorted(self.pfns):
            owners = [f"sp#{s}" for s in sorted(self.sps) if p in rec.sp_pfns.get(s, ())]
            parts.append(f"pfn {p:#x}" + (f" ({', '.join(owners)})" if owners else ""))
        parts += [f"gfn {g:#x}" for g in sorted(self.gfns)]
        parts += [f"2M region {r:#x}" for r in sorted(self.regions)]
        parts += sorted(self.locks) + [f"{n} (held by {self.task})" for n in sorted(self.own_locks - self.locks)]
        return ", ".join(parts) or "nothing named by the report"


def _names(d: Any) -> list[str]:
    """Lock names in a violation's details (lockdep splats, held-lock lists)."""
    out: list[str] = []
    for k in ("lock", "source", "target", "parent"):
        if isinstance(d.get(k), str):
            out.append(d[k])
    for k in ("acquiring", "holding"):
        v = d.get(k)
        if isinstance(v, (list, tuple)) and v and isinstance(v[0], str):
            out.append(v[0])
    return out


def involved(v: Violation, rec: Recording) -> Involved:
    """What the violation names: its pages, its guest frame, its locks (by canonical lock name)."""
    d = v.details if isinstance(v.details, dict) else {}
    pfns = {p for p in v.pfns if isinstance(p, int)}
    if isinstance(d.get("pfn"), int):
        pfns.add(d["pfn"])
    gfns = {d["gfn"]} if isinstance(d.get("gfn"), int) else set()
    locks = {rec.locks[n] for n in _names(d) if n in rec.locks}
    sps = {s for s, pf in rec.sp_pfns.items() if pf & pfns}
    if isinstance(d.get("sp"), int):
        sps.add(d["sp"])
    own = set()
    for entry in d.get("held") or ():  # lockdep_print_held_locks(): "(&kvm->mmu_lock){++++}-{3:3}", where
        name = str(entry[0] if isinstance(entry, (list, tuple)) else entry)
        cls = name[1:name.index(")")] if name.startswith("(") and ")" in name else name
        if cls in rec.locks:
            own.add(rec.locks[cls])
    regions = {d["region"]} if isinstance(d.get("region"), int) and "refcount" in d else set()
    return Involved(pfns, gfns, locks, sps, own, v.task, regions)


def _entry_gfns(rec: Recording, sp_id: int, idx: Any) -> range | None:
    span = rec.sp_span.get(sp_id)
    if span is None or not isinstance(idx, int) or not 0 <= idx < SPTE_ENT_PER_PAGE:
        return None
    gfn, level = span
    n = SPTE_ENT_PER_PAGE ** (level - 1)
    return range(gfn + idx * n, gfn + (idx + 1) * n)


_REGION_OWNERS = frozenset({"Pamt", "TdxHost", "TdxPamtCache"})  # state keyed by 2 MiB region


def touches(key: tuple, inv: Involved, rec: Recording, write: bool, task: str = "") -> bool:
    """Does a footprint key (object, attribute[, element]) of a step of `task` belong to an involved object?"""
    obj = key[0]
    tag = obj[0] if isinstance(obj, tuple) and obj else None
    if tag == "lock":
        return write and (obj[1] in inv.locks or (task == inv.task and obj[1] in inv.own_locks))
    if tag in _REGION_OWNERS and len(key) == 3 and key[2] in inv.regions:
        return True
    if tag == "sp":
        if obj[1] in inv.sps:
            return True
        if len(key) == 3 and key[1] == "sptes" and inv.gfns:
            span = rec.sp_span.get(obj[1])
            if span is None or span[1] > 2 or (span[1] == 2 and not write):
                return False
            r = _entry_gfns(rec, obj[1], key[2])
            return r is not None and any(g in r for g in inv.gfns)
        return False
    if len(key) != 3:
        return False
    elem = key[2]
    if tag == "pcp" and key[1] == "owner" and isinstance(elem, int):
        return obj[1] + elem in inv.pfns
    return isinstance(elem, int) and not isinstance(elem, bool) and elem in inv.pfns


def relevant(rec: Recording, v: Violation, inv: Involved) -> list[StepRecord]:
    """The steps up to the violation touching an involved object, and the violating step."""
    out = []
    for s in rec.steps[: v.step + 1]:
        if s.step == v.step or any(touches(k, inv, rec, True, s.task) for k in s.writes) or \
                any(touches(k, inv, rec, False, s.task) for k in s.reads):
            out.append(s)
    return out


def label(s: StepRecord) -> str:
    """`function: what it did`, the function being the innermost kernel function that is not a
    SEAMCALL, lock or RCU wrapper (the announcement already names those)."""
    fn = next((n for n in reversed(s.chain) if not n.startswith("|")), "")
    what = s.what
    if what in s.chain and what != fn:  # announced by a helper on its caller's behalf: "caller(): helper"
        return f"{what}(): {fn}"
    if not fn or what == fn or what.startswith(fn + "("):
        return what
    if what.startswith(fn + ":"):
        return what
    return f"{fn}(): {what}"


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def page_events(history: Any, inv: Involved) -> dict[int, list[str]]:
    """step -> what happened to an involved page at that step (its history: allocated, gifted, freed)."""
    out: dict[int, list[str]] = {}
    for pfn in sorted(inv.pfns):
        for ev in (history or {}).get(pfn, ()):
            where = f" in {ev.chain[-1]}()" if ev.chain else ""
            page = f"{pfn:#x} " if len(inv.pfns) > 1 else ""
            out.setdefault(ev.step, []).append(f"=> {page}{ev.what}{where}")
    return out


def diagram(rec: Recording, v: Violation, show_all: bool = False, history: Any = None) -> list[str]:
    """The race in CPU columns: one column per task with a drawn step, one row per drawn step; under a
    step, what it did to an involved page (from the page's history)."""
    inv = involved(v, rec)
    events = page_events(history, inv)
    rows = relevant(rec, v, inv)
    drawn = len(rows)
    if drawn > 1:
        head = f"the steps touching {inv.describe(rec)}: {drawn} of {v.step + 1}"
    else:  # the report names nothing the run touched (a lockup, a hang): the last steps instead
        rows = rec.steps[max(0, v.step - 11): v.step + 1]
        head = f"the report names no page, frame or lock the run touched; its last {len(rows)} steps"
    tasks = [t for t in rec.tasks if any(s.task == t for s in rows)]
    tasks += sorted({s.task for s in rows} - set(tasks))
    elided = 0
    if not show_all and len(rows) > HEAD_ROWS + TAIL_ROWS:
        elided = len(rows) - HEAD_ROWS - TAIL_ROWS
        rows = rows[:HEAD_ROWS] + [None] + rows[-TAIL_ROWS:]  # type: ignore[list-item]
    labels = {s.step: label(s) for s in rows if s is not None}
    num_w = len(f"#{v.step}") + 1
    cell_max = max(36, min(CELL_MAX, (LINE_MAX - num_w) // max(1, len(tasks)) - 2))
    width = {t: min(cell_max, max([len(t)] + [len(x) for s in rows if s is not None and s.task == t
                                               for x in [labels[s.step], *("  " + e for e in events.get(s.step, ()))]]))
             for t in tasks}
    out = [head, ""]

    def line(cells: dict[str, str], step: str) -> str:
        return (f"{step:<{num_w}} " + "  ".join(f"{_cell(cells.get(t, ''), width[t]):<{width[t]}}"
                                                 for t in tasks)).rstrip()

    out.append(line({t: t for t in tasks}, ""))
    out.append(line({t: "-" * len(t) for t in tasks}, ""))
    for s in rows:
        if s is None:
            out.append(f"{'':<{num_w}} ... {elided} more step{'s' if elided != 1 else ''} touching these objects ...")
            continue
        out.append(line({s.task: labels[s.step]}, f"#{s.step}"))
        for ev in events.get(s.step, ()):
            out.append(line({s.task: "  " + ev}, ""))
        if s.step == v.step:
            pad = " " * (num_w + 1 + sum(width[t] + 2 for t in tasks[: tasks.index(s.task)]))
            out.append(pad + "^ " + _cell(v.title, 100))
            chain = _violation_chain(v)
            if chain:
                out.append(pad + "  in " + " <- ".join(f"{f}()" for f in reversed(chain[-4:])))
    return out


def _violation_chain(v: Violation) -> tuple[str, ...]:
    """The call chain the report prints for the violating access (a WARN's, lockdep's second usage)."""
    d = v.details if isinstance(v.details, dict) else {}
    for c in (d.get("chain"), getattr(d.get("second"), "chain", None),
              d["second"].get("chain") if isinstance(d.get("second"), dict) else None):
        if c:
            return tuple(str(x) for x in c if str(x) not in _LOCKDEP_INTERNALS)
    return ()


def explain_text(rec: Recording, v: Violation, report: str, header: str, show_all: bool = False,
                 history: Any = None) -> str:
    """The race diagram, then the kernel-style report (check/report.py), ready to paste into a reply."""
    rule = "=" * 66
    return "\n".join([rule, f"septlab explain: '{v.invariant}' at step #{v.step} ({v.task})", header, rule,
                      *diagram(rec, v, show_all, history), "", report])


def explain_schedule(scn: Any, variant: Any, dpamt: bool, seed: int, choices: list[tuple[int, int]],
                     replay_cmd: str, header: str, show_all: bool = False) -> tuple[Any, str | None]:
    """Re-run one schedule with page histories and footprints recorded: the run (what a plain replay
    with histories returns, so the caller needs no second run) and the explanation of its first
    violation (None: it has none)."""
    from ..explore.driver import run_schedule

    rec = Recording()
    res = run_schedule(scn, variant, dpamt, seed, choices=choices, history=True, observer=recorder(rec))
    return res, _explain_result(rec, res, replay_cmd, header, show_all)


def _explain_result(rec: Recording, res: Any, replay_cmd: str, header: str, show_all: bool) -> str | None:
    """The explanation of a recorded run's first violation, with its report (None: it has none)."""
    from .report import render

    if not res.violations:
        return None
    v = res.violations[0]
    host = res.world.host
    return explain_text(rec, v, render(v, host, res.log, replay_cmd, header), header, show_all, host.history)


def explain_trace(path: Any, variant_file: str | None = None, scenario: str | None = None,
                  show_all: bool = False) -> tuple[dict[str, Any], Any, str | None]:
    """`septlab explain TRACE.json`: replay the trace (checked like `septlab replay`) while recording, then
    explain its first violation. Returns (trace data, run result, text or None if nothing is violated)."""
    from ..explore.driver import replay_trace

    rec = Recording()
    data, res = replay_trace(path, variant_file, scenario, observer=recorder(rec))
    cmd = f"septlab replay {path}" + (f" --variant {variant_file}" if variant_file else "")
    header = (f"scenario {data['scenario']}  variant {data['variant']}  DPAMT {'on' if data['dpamt'] else 'off'}"
              f"  seed {data['seed']}  steps {res.steps}")
    return data, res, _explain_result(rec, res, cmd, header, show_all)
