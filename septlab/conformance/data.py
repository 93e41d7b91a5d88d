"""Load the transcribed tables (data/*.yaml) into typed, validated objects.

The expected behaviour comes only from these files: they were transcribed by hand from the TDX module's
sources and the kernel's headers (each names its repository, path and commit), never computed from
septlab. Loading validates the shape, so a typo in a transcription is an error naming the file, not a
silently wrong expectation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

MODULE_FILE = "tdx_module_1_5.yaml"
KERNEL_FILE = "linux_headers.yaml"
SIMPLIFICATIONS_FILE = "simplifications.yaml"


class DataError(Exception):
    """A transcription file that does not have the shape the runner reads."""


@dataclass(frozen=True, slots=True)
class SeptState:
    """One S-EPT entry state of sept_state_lookup.h: its table column and the flags the handlers read."""

    name: str
    encoding: int
    index: int
    any_blocked: bool
    tlb_tracking_required: bool
    rwx: bool

    @property
    def leaf(self) -> bool:
        """Encoding bit 6 is the entry's PS bit, which is_secure_ept_leaf_entry() reads."""
        return bool(self.encoding & 0x40)


@dataclass(frozen=True, slots=True)
class OpState:
    name: str
    value: int
    tlb_tracking_required: bool


@dataclass(frozen=True, slots=True)
class Error:
    """A completion status, optionally with the operand id api_error_with_operand_id() puts in bits 31:0."""

    status: str
    operand: str | None = None

    @classmethod
    def parse(cls, text: str) -> Error:
        status, _, operand = text.partition("|")
        return cls(status.strip(), operand.strip() or None)


@dataclass(frozen=True, slots=True)
class SeptLeaf:
    """A handler's checks on the S-EPT entry, in its order (see the comment above sept_leaves in the data)."""

    name: str
    file: str
    levels: tuple[int, int] | None  # pg_level range verify_page_info_input() accepts; None: no level operand
    walk: str  # "to_level" or "to_leaf"
    errors: dict[str, Error]
    only_free: bool = False
    leaf_only: bool = False
    tlb: bool = False


@dataclass(frozen=True, slots=True)
class LifecycleCheck:
    allowed: frozenset[str]
    error: str
    file: str


@dataclass(frozen=True, slots=True)
class ModuleTables:
    """intel/tdx-module at one commit, as far as septlab's conformance check reads it."""

    source: dict[str, str]
    leaf_numbers: dict[str, int]
    status_codes: dict[str, int]
    operand_ids: dict[str, int]
    max_level: int  # pg_level of ept_pwl: the root level of the S-EPT septlab models
    leaf_levels: frozenset[int]
    non_leaf_levels: frozenset[int]
    sept_states: tuple[SeptState, ...]
    sept_lookup: dict[int, tuple[bool, ...]]
    op_states: tuple[OpState, ...]
    op_lookup: dict[int, tuple[bool, ...]]
    lifecycle_states: dict[str, int]
    lifecycle_checks: dict[str, LifecycleCheck]
    sept_leaves: dict[str, SeptLeaf]

    def state(self, name: str) -> SeptState:
        return next(s for s in self.sept_states if s.name == name)

    def op_state(self, name: str) -> OpState:
        return next(s for s in self.op_states if s.name == name)

    def levels_of(self, state: SeptState) -> list[int]:
        """The S-EPT levels (pg_level) an entry in `state` can be at: leaves map at most 1 GiB, a
        non-leaf points at a table, FREE and REMOVED can be anywhere."""
        every = range(1, self.max_level + 1)
        if state.name in ("FREE", "REMOVED"):
            return list(every)
        return [lv for lv in every if lv in (self.leaf_levels if state.leaf else self.non_leaf_levels)]


@dataclass(frozen=True, slots=True)
class HeaderTable:
    """One kernel header's values, and what the runner checks elsewhere for names the header lacks."""

    source: dict[str, str]
    values: dict[str, int]
    fallback: dict[str, str]
    unverified: dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class KernelHeaders:
    leaf_numbers: HeaderTable
    status_codes: HeaderTable
    operand_ids: HeaderTable


@dataclass(frozen=True, slots=True)
class Simplification:
    """A mismatch septlab keeps on purpose: which rows it covers (any of `match`), why, and its effect."""

    id: str
    kind: str  # "simplification" (septlab models less) or "pinned" (a code existing unit tests fix)
    title: str
    why: str
    effect: str
    match: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def _text(name: str) -> str:
    return resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")


def _yaml(name: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(_text(name))
    except yaml.YAMLError as e:
        raise DataError(f"{name}: {e}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{name}: expected a mapping at the top")
    return doc


def _need(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in doc or not isinstance(doc[key], kind):
        raise DataError(f"{where}: missing or malformed {key!r} (expected {kind.__name__})")
    return doc[key]


def _row(values: Any, width: int, where: str) -> tuple[bool, ...]:
    if not isinstance(values, list) or len(values) != width or any(v not in (0, 1) for v in values):
        raise DataError(f"{where}: expected {width} zeros and ones")
    return tuple(bool(v) for v in values)


@cache
def module_tables() -> ModuleTables:
    """data/tdx_module_1_5.yaml, validated (cached: the files are package data and never change at run time)."""
    f = MODULE_FILE
    doc = _yaml(f)
    levels = _need(doc, "ept_levels", dict, f)
    pg = {name: lvl + 1 for name, lvl in levels.items()}
    pg["ept_pwl"] = pg[_need(doc, "ept_pwl", str, f)]
    states = tuple(
        SeptState(s["name"], int(s["encoding"]), int(s["index"]), bool(s["any_blocked"]),
                  bool(s["tlb_tracking_required"]), bool(s["rwx"]))
        for s in _need(doc, "sept_states", list, f))
    if sorted(s.index for s in states) != list(range(len(states))):
        raise DataError(f"{f}: sept_states indices are not 0..{len(states) - 1}")
    ops = tuple(OpState(o["name"], int(o["value"]), bool(o["tlb_tracking_required"]))
                for o in _need(doc, "op_states", list, f))
    sept_lookup = {int(k): _row(v, len(states), f"{f}: seamcall_sept_state_lookup[{k}]")
                   for k, v in _need(doc, "seamcall_sept_state_lookup", dict, f).items()}
    op_lookup = {int(k): _row(v, len(ops), f"{f}: seamcall_state_lookup[{k}]")
                 for k, v in _need(doc, "seamcall_state_lookup", dict, f).items()}
    lifecycle = {str(k): int(v) for k, v in _need(doc, "lifecycle_states", dict, f).items()}
    checks: dict[str, LifecycleCheck] = {}
    for leaf, c in _need(doc, "lifecycle_checks", dict, f).items():
        if any(a not in lifecycle for a in c["allowed"]):
            raise DataError(f"{f}: lifecycle_checks[{leaf}] names an unknown lifecycle state")
        checks[leaf] = LifecycleCheck(frozenset(c["allowed"]), c["error"], c["file"])
    status = {str(k): int(v) for k, v in _need(doc, "status_codes", dict, f).items()}
    operands = {str(k): int(v) for k, v in _need(doc, "operand_ids", dict, f).items()}
    leaves: dict[str, SeptLeaf] = {}
    for leaf, d in _need(doc, "sept_leaves", dict, f).items():
        errors = {k: Error.parse(v) for k, v in d["errors"].items()}
        for e in errors.values():
            if e.status not in status or (e.operand is not None and e.operand not in operands):
                raise DataError(f"{f}: sept_leaves[{leaf}]: unknown status or operand in {e}")
        lv = d["levels"]
        leaves[leaf] = SeptLeaf(leaf, d["file"], None if lv is None else (pg[lv[0]], pg[lv[1]]), d["walk"], errors,
                                bool(d.get("only_free")), bool(d.get("leaf_only")), bool(d.get("tlb")))
    return ModuleTables(
        source=_need(doc, "source", dict, f), leaf_numbers=dict(_need(doc, "leaf_numbers", dict, f)),
        status_codes=status, operand_ids=operands, max_level=pg["ept_pwl"],
        leaf_levels=frozenset(pg[n] for n in _need(doc, "leaf_levels", list, f)),
        non_leaf_levels=frozenset(pg[n] for n in _need(doc, "non_leaf_levels", list, f)),
        sept_states=states, sept_lookup=sept_lookup, op_states=ops, op_lookup=op_lookup,
        lifecycle_states=lifecycle, lifecycle_checks=checks, sept_leaves=leaves)


def _header(doc: dict[str, Any], key: str) -> HeaderTable:
    t = _need(doc, key, dict, KERNEL_FILE)
    return HeaderTable(source=_need(t, "source", dict, f"{KERNEL_FILE}: {key}"),
                       values={str(k): int(v) for k, v in _need(t, "values", dict, f"{KERNEL_FILE}: {key}").items()},
                       fallback=dict(t.get("fallback") or {}), unverified=dict(t.get("unverified") or {}))


@cache
def kernel_headers() -> KernelHeaders:
    """data/linux_headers.yaml, validated."""
    doc = _yaml(KERNEL_FILE)
    return KernelHeaders(_header(doc, "leaf_numbers"), _header(doc, "status_codes"), _header(doc, "operand_ids"))


MATCH_KEYS = frozenset({"table", "leaves", "states", "levels", "contexts", "module", "septlab"})


@cache
def simplifications() -> tuple[Simplification, ...]:
    """data/simplifications.yaml: the mismatches septlab keeps, each with why and its effect on results."""
    doc = _yaml(SIMPLIFICATIONS_FILE)
    out: list[Simplification] = []
    for i, s in enumerate(_need(doc, "simplifications", list, SIMPLIFICATIONS_FILE)):
        where = f"{SIMPLIFICATIONS_FILE}: simplifications[{i}]"
        for key in ("id", "kind", "title", "why", "effect"):
            _need(s, key, str, where)
        if s["kind"] not in ("simplification", "pinned"):
            raise DataError(f"{where}: kind must be 'simplification' or 'pinned'")
        rules = _need(s, "match", list, where)
        for r in rules:
            if not isinstance(r, dict) or not r or set(r) - MATCH_KEYS:
                raise DataError(f"{where}: a match rule uses only {sorted(MATCH_KEYS)}")
        out.append(Simplification(s["id"], s["kind"], s["title"], " ".join(s["why"].split()),
                                  " ".join(s["effect"].split()), tuple(rules)))
    if len({s.id for s in out}) != len(out):
        raise DataError(f"{SIMPLIFICATIONS_FILE}: duplicate id")
    return tuple(out)
