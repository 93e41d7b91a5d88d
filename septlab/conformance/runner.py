"""Run every case: the module's answer (oracle.py, from the transcribed tables) against septlab's (drive.py).

Tables checked, each case one row:

* sept: every S-EPT leaf septlab models x every entry state of seamcall_sept_state_lookup x every level
  (4K .. 512G of a 4-level S-EPT) an entry in that state can be at, in each op-state KVM issues the leaf
  in (PAGE.REMOVE and PAGE.DEMOTE also with the BLOCK not yet TRACKed).
* walk: the same leaves on a FREE entry whose parent entry is in each state: does the walk get there.
* op-state: every TD-scoped leaf septlab models x every op-state of seamcall_state_lookup.
* lifecycle: every leaf with a lifecycle check x every TD lifecycle state.
* number: septlab's leaf numbers, statuses and operand ids against the kernel's headers (the module's
  where the kernel lacks one), and its S-EPT/op-state/lifecycle numbering against the module's.

A row matches when both accept, or both reject with the same status and operand id. A mismatch is
either listed in data/simplifications.yaml (a deliberate simplification, with its effect on results)
or unlisted; `septlab conformance` exits 1 while any is unlisted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..tdx_module import errno as E
from ..tdx_module import td as T
from ..tdx_module.module import TdxModule
from ..tdx_module.sept import SEPT_NAMES
from . import drive as D
from . import oracle as O
from .data import ModuleTables, Simplification, kernel_headers, module_tables, simplifications

TABLES = ("sept", "walk", "op-state", "lifecycle", "number")

# The op-states (and, for REMOVE and DEMOTE, whether the BLOCK was TRACKed) each S-EPT leaf is checked in:
# the ones KVM issues it in (PAGE.ADD before MR.FINALIZE, AUG after, the others both; DEMOTE only after,
# but the INITIALIZED rows show that before it the module needs no BLOCK).
SEPT_CONTEXTS: dict[str, tuple[tuple[str, bool], ...]] = {
    D.PAGE_ADD: (("INITIALIZED", True),),
    D.SEPT_ADD: (("INITIALIZED", True), ("RUNNABLE", True)),
    D.AUG: (("RUNNABLE", True),),
    D.BLOCK: (("INITIALIZED", True), ("RUNNABLE", True)),
    D.REMOVE: (("INITIALIZED", True), ("RUNNABLE", True), ("RUNNABLE", False)),
    D.DEMOTE: (("INITIALIZED", True), ("RUNNABLE", True), ("RUNNABLE", False)),
    D.MR_EXTEND: (("INITIALIZED", True),),
}
WALK_CONTEXT = {D.PAGE_ADD: "INITIALIZED", D.SEPT_ADD: "RUNNABLE", D.AUG: "RUNNABLE", D.BLOCK: "RUNNABLE",
                D.REMOVE: "RUNNABLE", D.DEMOTE: "RUNNABLE"}
RECLAIM_CONTEXTS = ("TDCS page", "TDR page")
LEVEL_NAMES = {1: "4K", 2: "2M", 3: "1G", 4: "512G"}


@dataclass(frozen=True, slots=True)
class Case:
    """What one row checks: `leaf` (or, in the number table, a constant's name) on an entry / TD in
    `state` at `level`, with `context` saying what else holds."""

    table: str
    leaf: str
    state: str
    level: int | None
    context: str


@dataclass(slots=True)
class Row:
    case: Case
    module: str
    septlab: str
    match: bool | None  # None: nothing to compare with (a value no transcribed header has)
    injected: tuple[str, ...] = ()
    listed: Simplification | None = None
    driven_ok: bool = True  # False: septlab's model could not be driven there, or raised

    @property
    def verdict(self) -> str:
        if self.match is None:
            return "unverified"
        if self.match:
            return "match"
        return f"listed: {self.listed.id}" if self.listed else "MISMATCH"

    def as_json(self) -> dict[str, Any]:
        c = self.case
        return {"table": c.table, "leaf": c.leaf, "state": c.state, "level": c.level, "context": c.context,
                "module_says": self.module, "septlab_says": self.septlab, "verdict": self.verdict,
                "simplification": self.listed.id if self.listed else None, "injected": list(self.injected)}


@dataclass(slots=True)
class Report:
    """Every row, the sources they were checked against, and the simplifications that matched nothing."""

    rows: list[Row]
    sources: dict[str, Any]
    stale: list[str] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        """Distinct (leaf, entry state, level) of the sept table."""
        return len({(r.case.leaf, r.case.state, r.case.level) for r in self.rows if r.case.table == "sept"})

    @property
    def mismatches(self) -> list[Row]:
        return [r for r in self.rows if r.match is False]

    @property
    def unlisted(self) -> list[Row]:
        return [r for r in self.mismatches if r.listed is None]

    @property
    def exit_code(self) -> int:
        return 1 if self.unlisted else 0

    def counts(self) -> dict[str, int]:
        mism = self.mismatches
        return {"pairs": self.pairs, "checks": len(self.rows),
                "matches": sum(1 for r in self.rows if r.match), "mismatches": len(mism),
                "simplifications": sum(1 for r in mism if r.listed), "unlisted": len(self.unlisted),
                "unverified": sum(1 for r in self.rows if r.match is None),
                "injected": sum(1 for r in self.rows if r.injected)}

    def listed_counts(self) -> list[tuple[Simplification, int]]:
        """Each simplification that fits a mismatch, with how many rows it covers, in file order."""
        return [(s, n) for s in simplifications()
                if (n := sum(1 for r in self.rows if r.listed is s))]

    def summary(self) -> str:
        """One line: coverage, then what matched, what is listed (modelled-less vs pinned codes), what is not."""
        c = self.counts()
        per = ", ".join(f"{t} {sum(1 for r in self.rows if r.case.table == t)}" for t in TABLES)
        kinds = {k: sum(n for s, n in self.listed_counts() if s.kind == k) for k in ("simplification", "pinned")}
        return (f"conformance: {c['pairs']} (leaf, entry state, level) pairs covered; {c['checks']} checks ({per}), "
                f"{c['checks'] - c['injected']} reached by SEAMCALLs alone: {c['matches']} match, "
                f"{c['mismatches']} mismatch ({c['simplifications']} listed as deliberate simplifications: "
                f"{kinds['simplification']} modelled-less, {kinds['pinned']} pinned codes; {c['unlisted']} unlisted), "
                f"{c['unverified']} unverified")

    def ordered(self) -> list[Row]:
        """Unlisted mismatches first, then listed ones, unverified values, matches; otherwise as generated."""
        rank = {"MISMATCH": 0, "listed": 1, "unverified": 2, "match": 3}
        return sorted(self.rows, key=lambda r: rank[r.verdict.split(":")[0]])

    def table_lines(self, mismatches_only: bool = False) -> list[str]:
        """The rows as aligned text, one row per line (1000 rows must stay greppable): a title naming the
        module source, the header, then mismatches first. A listed mismatch shows its simplification id."""
        src = self.sources["tdx_module"]
        head = ("table", "leaf", "state", "level", "context", "module says", "septlab says", "verdict")
        body = [(c.table, c.leaf, c.state, LEVEL_NAMES.get(c.level, "-"), c.context, r.module, r.septlab,
                 r.listed.id if r.listed else r.verdict)
                for r in self.ordered() if not mismatches_only or r.match is False
                for c in (r.case,)]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        fmt = "  ".join(f"{{:{w}}}" for w in widths)
        title = (f"leaf x entry state x level: module ({src['repository']} {src['ref']} "
                 f"{src['commit'][:12]}, transcribed) vs septlab (septlab/tdx_module)")
        return [title, fmt.format(*head).rstrip(), fmt.format(*("-" * w for w in widths)),
                *(fmt.format(*x).rstrip() for x in body)]

    def as_json(self) -> dict[str, Any]:
        used = {r.listed.id for r in self.rows if r.listed}
        return {"sources": self.sources, "summary": self.counts(), "summary_line": self.summary(),
                "stale_simplifications": self.stale,
                "simplifications": [{"id": s.id, "kind": s.kind, "title": s.title, "why": s.why, "effect": s.effect,
                                     "rows": sum(1 for r in self.rows if r.listed is s)}
                                    for s in simplifications() if s.id in used or s.id in self.stale],
                "rows": [r.as_json() for r in self.ordered()]}


def _observe(build: Callable[[], tuple[D.Fixture, Callable[[TdxModule], int]]]) -> tuple[O.Outcome | str, list[str]]:
    """Build the fixture and issue the leaf; a fixture septlab cannot reach, or a model that raises, is a
    result too (never listable as a simplification)."""
    try:
        fx, call = build()
        return O.Outcome.of(call(fx.m)), fx.injected
    except D.FixtureError as e:
        return f"cannot drive: {e}", []
    except Exception as e:  # the model crashing on a state is a finding, not a runner failure
        return f"raised {type(e).__name__}: {e}", []


def _row(t: ModuleTables, case: Case, module: O.Outcome, seen: tuple[O.Outcome | str, list[str]]) -> Row:
    got, injected = seen
    if isinstance(got, str):
        return Row(case, O.describe(t, module), got, False, tuple(injected), driven_ok=False)
    return Row(case, O.describe(t, module), O.describe(t, got, _kernel_names()), got == module, tuple(injected))


def _kernel_names() -> dict[int, str]:
    return {v: k for k, v in kernel_headers().status_codes.values.items() if k != "TDX_SEAMCALL_STATUS_MASK"}


def sept_rows(t: ModuleTables) -> list[Row]:
    rows = []
    for leaf, call in D.SEPT_CALLS.items():
        spec = t.sept_leaves[leaf]
        for state in t.sept_states:
            for level in t.levels_of(state):
                for op, tracked in SEPT_CONTEXTS[leaf]:
                    ctx = op if tracked or op != "RUNNABLE" else "RUNNABLE untracked"
                    want = O.sept_entry(t, spec, state, level, op, tracked)

                    def build(state=state, level=level, op=op, tracked=tracked, call=call):
                        fx = D.sept_fixture(state.name, state.index, state.leaf, state.any_blocked, level, op, tracked)
                        return fx, lambda m: call(m, level)

                    rows.append(_row(t, Case("sept", leaf, state.name, level, ctx), want, _observe(build)))
    return rows


def walk_rows(t: ModuleTables) -> list[Row]:
    rows = []
    for leaf, op in WALK_CONTEXT.items():
        spec, call = t.sept_leaves[leaf], D.SEPT_CALLS[leaf]
        for parent in t.sept_states:
            for plevel in t.levels_of(parent):
                level = plevel - 1
                if level < 1:
                    continue
                want = O.walk(t, spec, parent, level, op)

                def build(parent=parent, plevel=plevel, level=level, op=op, call=call):
                    fx = D.sept_fixture(parent.name, parent.index, parent.leaf, parent.any_blocked, plevel, op, True)
                    return fx, lambda m: call(m, level)

                case = Case("walk", leaf, parent.name, level, f"{op}, parent at {plevel}")
                rows.append(_row(t, case, want, _observe(build)))
    return rows


def op_state_rows(t: ModuleTables) -> list[Row]:
    rows = []
    for leaf in D.TD_LEAVES:
        for op in t.op_states:
            want = O.op_state(t, leaf, op.name)
            seen = _observe(lambda leaf=leaf, op=op: D.op_fixture(leaf, op.name, op.value))
            rows.append(_row(t, Case("op-state", leaf, op.name, None, "TD_KEYS_CONFIGURED"), want, seen))
    return rows


def lifecycle_rows(t: ModuleTables) -> list[Row]:
    rows = []
    for leaf in t.lifecycle_checks:
        if leaf not in D.TD_LEAVES and leaf not in ("TDH.MNG.KEY.CONFIG", "TDH.MNG.VPFLUSHDONE",
                                                    "TDH.MNG.KEY.FREEID", "TDH.PHYMEM.PAGE.RECLAIM"):
            continue  # a leaf septlab does not model
        contexts = RECLAIM_CONTEXTS if leaf == "TDH.PHYMEM.PAGE.RECLAIM" else (
            D.HOME_OP_STATE[leaf] if leaf in D.HOME_OP_STATE else "",)
        for ctx in contexts:
            for life in t.lifecycle_states:
                want = O.lifecycle(t, leaf, life)
                seen = _observe(lambda leaf=leaf, ctx=ctx, life=life: D.lifecycle_fixture(leaf, ctx, life))
                rows.append(_row(t, Case("lifecycle", leaf, life, None, ctx), want, seen))
    return rows


def _number_row(name: str, what: str, source: str, expected: int | None, actual: int) -> Row:
    if expected is None:
        return Row(Case("number", name, what, None, source), "(in no transcribed header)", f"0x{actual:x}", None)
    return Row(Case("number", name, what, None, source), f"0x{expected:x}", f"0x{actual:x}", expected == actual)


def number_rows(t: ModuleTables) -> list[Row]:
    k = kernel_headers()
    consts = {n: v for n, v in vars(E).items() if n.isupper() and isinstance(v, int)}
    rows = []
    for name, value in consts.items():
        if name.startswith("TDH_"):
            h, what, mod = k.leaf_numbers, "leaf number", t.leaf_numbers
            alias = k.leaf_numbers.fallback.get(name, name.replace("_", "."))
        elif name.startswith("TDX_OPERAND_ID_"):
            h, what, mod = k.operand_ids, "operand id", t.operand_ids
            alias = k.operand_ids.fallback.get(name, name.removeprefix("TDX_OPERAND_ID_"))
        elif name.startswith("TDX_"):
            h, what, mod = k.status_codes, "status", t.status_codes
            alias = k.status_codes.fallback.get(name, name)
        else:
            continue
        if name in h.values:
            rows.append(_number_row(name, what, f"linux {h.source['path'].rsplit('/', 1)[-1]}", h.values[name], value))
        elif name in h.unverified:
            rows.append(_number_row(name, what, f"unverified: {h.unverified[name]['from']}", None, value))
        else:
            rows.append(_number_row(name, what, "module (not in linux)", mod.get(alias), value))
    for value, name in SEPT_NAMES.items():
        rows.append(_number_row(f"SEPT_{name}", "S-EPT state index", "module sept_state_lookup.c",
                                next((s.index for s in t.sept_states if s.name == name), None), value))
    for op in t.op_states[:3]:
        rows.append(_number_row(f"OP_STATE_{op.name}", "op-state", "module op_state_lookup.h", op.value,
                                getattr(T, f"OP_STATE_{op.name}")))
    for i, name in enumerate(T.LIFECYCLE_NAMES):
        rows.append(_number_row(name, "lifecycle", "module td_control_structures.h",
                                t.lifecycle_states.get(name), i))
    return rows


def _fits(rule: dict[str, Any], row: Row) -> bool:
    def within(key: str, value: object) -> bool:
        if key not in rule:
            return True
        allowed = rule[key] if isinstance(rule[key], list) else [rule[key]]
        return value in allowed

    def says(key: str, text: str) -> bool:
        if key not in rule:
            return True
        wants = rule[key] if isinstance(rule[key], list) else [rule[key]]
        return any(text != "accept" if want == "reject" else text == want for want in wants)

    c = row.case
    return (within("table", c.table) and within("leaves", c.leaf) and within("states", c.state)
            and within("levels", c.level) and within("contexts", c.context)
            and says("module", row.module) and says("septlab", row.septlab))


def classify(rows: list[Row], listed: tuple[Simplification, ...]) -> list[str]:
    """Attach to each mismatch the first simplification with a rule that fits it; return the ids of
    simplifications that fit nothing (stale entries)."""
    used: set[str] = set()
    for r in rows:
        if r.match is not False or not r.driven_ok:
            continue
        r.listed = next((s for s in listed if any(_fits(rule, r) for rule in s.match)), None)
        if r.listed:
            used.add(r.listed.id)
    return [s.id for s in listed if s.id not in used]


def run_conformance() -> Report:
    """Check septlab's TDX-module model against the transcribed tables: every row, classified."""
    t = module_tables()
    k = kernel_headers()
    rows = sept_rows(t) + walk_rows(t) + op_state_rows(t) + lifecycle_rows(t) + number_rows(t)
    stale = classify(rows, simplifications())
    sources = {"tdx_module": t.source,
               "linux": {"leaf_numbers": k.leaf_numbers.source, "status_codes": k.status_codes.source}}
    return Report(rows, sources, stale)
