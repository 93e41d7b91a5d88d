"""What the TDX module says: outcomes computed from the transcribed tables alone, never from septlab.

Each function follows the handler's check order as data/tdx_module_1_5.yaml writes it down, with the
lookup tables as transcribed. The cases are set up so that every check the tables do not cover passes
(the runner's fixtures: a valid TD, the parents of the entry NL_MAPPED, fresh PT_NDA pages), so the
outcome is decided by the table under test.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import Error, ModuleTables, SeptLeaf, SeptState

STATUS_MASK = 0xFFFFFFFF00000000


@dataclass(frozen=True, slots=True)
class Outcome:
    """A SEAMCALL's result as the comparison sees it: bits 63:32 and the operand id in bits 31:0."""

    status: int
    operand: int = 0

    @property
    def accept(self) -> bool:
        return self.status == 0

    @classmethod
    def of(cls, err: int) -> Outcome:
        return cls(err & STATUS_MASK, err & ~STATUS_MASK & 0xFFFFFFFF)


ACCEPT = Outcome(0)


def outcome(t: ModuleTables, e: Error) -> Outcome:
    return Outcome(t.status_codes[e.status], t.operand_ids[e.operand] if e.operand else 0)


def describe(t: ModuleTables, o: Outcome, kernel_names: dict[int, str] | None = None) -> str:
    """`accept`, or the status by the module's name with the operand id by its OPERAND_ID_ name:
    TDX_EPT_ENTRY_STATE_INCORRECT|RCX. A value neither table names is shown in hex."""
    if o.accept:
        return "accept"
    names = {v: k for k, v in t.status_codes.items()} | (kernel_names or {})
    text = names.get(o.status, f"0x{o.status:016x}")
    if o.operand:
        ops = {v: k for k, v in t.operand_ids.items()}
        text += "|" + ops.get(o.operand, f"0x{o.operand:x}")
    return text


def sept_entry(t: ModuleTables, leaf: SeptLeaf, state: SeptState, level: int, op_state: str,
               tracked: bool) -> Outcome:
    """The module's answer for `leaf` on the entry at `level` in `state`, its parents NL_MAPPED, the TD in
    `op_state`; `tracked`: a blocked entry's BLOCK epoch has been TRACKed with no vCPU left in it."""
    err = leaf.errors
    if leaf.levels is not None and not leaf.levels[0] <= level <= leaf.levels[1]:
        return outcome(t, err["level"])
    if leaf.walk == "to_leaf" and not (state.leaf and state.rwx):
        # the walk to a leaf ends here on anything but a present leaf; below an NL_MAPPED entry the
        # fixture's table is all FREE, so it ends there instead: not found either way
        return outcome(t, err["walk"])
    allowed = t.sept_lookup[t.leaf_numbers[leaf.name]][state.index]
    if leaf.leaf_only and not state.leaf:
        return outcome(t, err["state"])
    if not allowed:
        if "already_blocked" in err and state.any_blocked:
            return outcome(t, err["already_blocked"])
        return outcome(t, err["state"])
    if leaf.only_free and state.name != "FREE":
        return outcome(t, err["state"])
    if leaf.tlb and state.tlb_tracking_required and t.op_state(op_state).tlb_tracking_required:
        if not state.any_blocked:
            return outcome(t, err["not_blocked"])
        if not tracked:
            return outcome(t, err["not_tracked"])
    return ACCEPT


def walk(t: ModuleTables, leaf: SeptLeaf, parent: SeptState, level: int, op_state: str) -> Outcome:
    """`leaf` at `level` on a FREE entry whose parent (level + 1) is in `parent`: secure_ept_walk()
    descends only through a non-leaf entry with RWX set."""
    if leaf.levels is not None and not leaf.levels[0] <= level <= leaf.levels[1]:
        return outcome(t, leaf.errors["level"])
    if parent.leaf or not parent.rwx:
        return outcome(t, leaf.errors["walk"])
    return sept_entry(t, leaf, t.state("FREE"), level, op_state, tracked=True)


def op_state(t: ModuleTables, leaf: str, op: str) -> Outcome:
    """seamcall_state_lookup: allowed, or TDX_OP_STATE_INCORRECT (check_state_map_tdcs_and_lock())."""
    if t.op_lookup[t.leaf_numbers[leaf]][t.op_state(op).value]:
        return ACCEPT
    return Outcome(t.status_codes["TDX_OP_STATE_INCORRECT"])


def lifecycle(t: ModuleTables, leaf: str, state: str) -> Outcome:
    """The handler's lifecycle check: allowed, or its error."""
    check = t.lifecycle_checks[leaf]
    return ACCEPT if state in check.allowed else Outcome(t.status_codes[check.error])
