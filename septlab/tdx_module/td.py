"""Per-TD state inside the TDX module: lifecycle, op_state, child count, TLB epochs, S-EPT entries, locks.

Lifecycle follows TDX module 1.5: TD_HKID_ASSIGNED -> TD_KEYS_CONFIGURED -> (VPFLUSHDONE) TD_BLOCKED
-> (CACHE.WB + KEY.FREEID) TD_TEARDOWN.

Locks are the module's sharex try-locks (src/common/helpers/tdx_locks.h), each one int: 0 free, n > 0
held shared by n holders, LOCK_EX held exclusively. `tdr_lock` is the TDR page's PAMT entry lock
("the TDR resource"), `sept_lock` TDCS secure_ept_lock (the S-EPT tree), `epoch_lock` TDCS
epoch_tracking.epoch_lock; `sept_entry_lock` holds the S-EPT entries whose TDEL bit is set
(sept_lock_acquire_host()/_guest()). See module.py for who takes which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..intmap import ByteEntryMap, EntryMap

TD_HKID_ASSIGNED = 0
TD_KEYS_CONFIGURED = 1
TD_BLOCKED = 2
TD_TEARDOWN = 3
LIFECYCLE_NAMES = ("TD_HKID_ASSIGNED", "TD_KEYS_CONFIGURED", "TD_BLOCKED", "TD_TEARDOWN")

OP_STATE_UNINITIALIZED = 0
OP_STATE_INITIALIZED = 1
OP_STATE_RUNNABLE = 2

LOCK_FREE = 0
LOCK_EX = -1  # a sharex lock held exclusively; n > 0 means n shared holders


@dataclass(slots=True)
class TdVcpu:
    """A TDVPR: whether TDH.VP.INIT ran, whether it is associated with a CPU, its guest-mode epoch."""

    tdvpr: int
    initialized: bool = False
    associated: bool = False
    in_guest_epoch: int = -1  # epoch it entered the guest with, -1 when outside guest mode
    entering: bool = False  # inside TDH.VP.ENTER: holds the epoch lock shared
    sept_locked: bool = False  # ... and, zero-step filter armed, the S-EPT tree exclusively
    # last_epf_gpa_list non-empty: the last TD exit was an EPT violation on a private GPA, so the next
    # TDH.VP.ENTER runs the zero-step stepping filter (MODEL: STEPPING_EPF_THRESHOLD taken as 1)
    epf_stepping: bool = False
    # tdvps.management.assoc_lpid: the logical processor the vCPU is associated with (-1: none);
    # associate_vcpu() refuses another LP (TDX_VCPU_ASSOCIATED), TDH.VP.FLUSH must run on this one
    assoc_lpid: int = -1


@dataclass(slots=True)
class Td:
    """One TD as the module sees it; `sept_*` maps are keyed by sept.entry_key(level, gfn) (EntryMaps,
    septlab/intmap.py: one entry per mapped page, 8 bytes each at real sizes). `sept_state` is a
    ByteEntryMap, 1 byte an entry: its values are the SEPT_* states of sept.py (0..11), or, from the
    conformance driver, a state's index in the module's sept_state_lookup table (a few dozen); a value
    outside 0..254 raises TypeError. `sept_page` (a pfn) and `sept_bepoch` (an epoch that only grows)
    need 8 bytes."""

    tdr: int
    hkid: int
    lifecycle: int = TD_HKID_ASSIGNED
    op_state: int = OP_STATE_UNINITIALIZED
    child_count: int = 0
    td_epoch: int = 1
    epoch_refcount: list[int] = field(default_factory=lambda: [0, 0])
    wbcache_done: bool = False
    vcpus: dict[int, TdVcpu] = field(default_factory=dict)
    sept_state: ByteEntryMap = field(default_factory=ByteEntryMap)  # absent == SEPT_FREE
    sept_page: EntryMap = field(default_factory=EntryMap)  # child S-EPT page or leaf page pfn
    sept_bepoch: EntryMap = field(default_factory=EntryMap)
    tdr_lock: int = LOCK_FREE
    sept_lock: int = LOCK_FREE
    epoch_lock: int = LOCK_FREE
    sept_entry_lock: set[int] = field(default_factory=set)  # entry keys with TDEL set
