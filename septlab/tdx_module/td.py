"""Per-TD state inside the TDX module: lifecycle, op_state, child count, TLB epochs, S-EPT entries.

Lifecycle follows TDX module 1.5: TD_HKID_ASSIGNED -> TD_KEYS_CONFIGURED -> (VPFLUSHDONE) TD_BLOCKED
-> (CACHE.WB + KEY.FREEID) TD_TEARDOWN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TD_HKID_ASSIGNED = 0
TD_KEYS_CONFIGURED = 1
TD_BLOCKED = 2
TD_TEARDOWN = 3
LIFECYCLE_NAMES = ("TD_HKID_ASSIGNED", "TD_KEYS_CONFIGURED", "TD_BLOCKED", "TD_TEARDOWN")

OP_STATE_UNINITIALIZED = 0
OP_STATE_INITIALIZED = 1
OP_STATE_RUNNABLE = 2


@dataclass(slots=True)
class TdVcpu:
    """A TDVPR: whether TDH.VP.INIT ran, whether it is associated with a CPU, its guest-mode epoch."""

    tdvpr: int
    initialized: bool = False
    associated: bool = False
    in_guest_epoch: int = -1  # epoch it entered the guest with, -1 when outside guest mode


@dataclass(slots=True)
class Td:
    """One TD as the module sees it; `sept_*` dicts are keyed by sept.entry_key(level, gfn)."""

    tdr: int
    hkid: int
    lifecycle: int = TD_HKID_ASSIGNED
    op_state: int = OP_STATE_UNINITIALIZED
    child_count: int = 0
    td_epoch: int = 1
    epoch_refcount: list[int] = field(default_factory=lambda: [0, 0])
    wbcache_done: bool = False
    vcpus: dict[int, TdVcpu] = field(default_factory=dict)
    sept_state: dict[int, int] = field(default_factory=dict)  # absent == SEPT_FREE
    sept_page: dict[int, int] = field(default_factory=dict)  # child S-EPT page or leaf page pfn
    sept_bepoch: dict[int, int] = field(default_factory=dict)
