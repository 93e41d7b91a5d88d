"""S-EPT entry states and addressing (include/auto_gen/sept_state_lookup.h, non-migration subset).

MODEL: leaf entries use {FREE, PENDING, MAPPED, BLOCKED, PENDING_BLOCKED}, non-leaf {FREE, NL_MAPPED,
NL_BLOCKED}; KVM never uses UNBLOCK, PROMOTE or SEPT.REMOVE. The S-EPT root page lives inside the TD
(which structure holds it is UNVERIFIED), so level-4 entries always have a parent.
"""

from __future__ import annotations

SEPT_FREE = 0
SEPT_REMOVED = 1
SEPT_NL_MAPPED = 2
SEPT_NL_BLOCKED = 3
SEPT_MAPPED = 4
SEPT_BLOCKED = 5
SEPT_PENDING = 10
SEPT_PENDING_BLOCKED = 11

SEPT_NAMES = {SEPT_FREE: "FREE", SEPT_REMOVED: "REMOVED", SEPT_NL_MAPPED: "NL_MAPPED",
              SEPT_NL_BLOCKED: "NL_BLOCKED", SEPT_MAPPED: "MAPPED", SEPT_BLOCKED: "BLOCKED",
              SEPT_PENDING: "PENDING", SEPT_PENDING_BLOCKED: "PENDING_BLOCKED"}

# RANGE.BLOCK: source state -> blocked state.
BLOCK_OF = {SEPT_NL_MAPPED: SEPT_NL_BLOCKED, SEPT_MAPPED: SEPT_BLOCKED, SEPT_PENDING: SEPT_PENDING_BLOCKED}
BLOCKED_STATES = frozenset({SEPT_NL_BLOCKED, SEPT_BLOCKED, SEPT_PENDING_BLOCKED})
LEAF_PRESENT = frozenset({SEPT_MAPPED, SEPT_BLOCKED, SEPT_PENDING, SEPT_PENDING_BLOCKED})
NONLEAF_PRESENT = frozenset({SEPT_NL_MAPPED, SEPT_NL_BLOCKED})

PG_LEVEL_4K = 1
PG_LEVEL_2M = 2
PG_LEVEL_1G = 3
PG_LEVEL_512G = 4
ROOT_LEVEL = 4  # 4-level EPT


def entry_key(level: int, gfn: int) -> int:
    """Key of the entry at `level` (pg_level, 4K == 1) that translates `gfn`."""
    return ((gfn >> (9 * (level - 1))) << 3) | level
