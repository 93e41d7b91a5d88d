"""struct kvm_mmu_page (arch/x86/kvm/mmu/mmu_internal.h) with its mirror-only `external_spt`.

`spt` is the KVM-owned page table (mirror or direct); for non-root mirror pages `external_spt` is the
page KVM hands the TDX module as the S-EPT page at the same position. The 512 SPTEs live in `sptes`
(the contents of the `spt` page); reads and writes of them go through KASAN checks on `spt`.
MODEL: sp headers come from no kmem_cache; a freed header is marked `freed` instead.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from .spte import SPTE_ENT_PER_PAGE

NO_PAGE = -1
_ZEROS = bytes(8 * SPTE_ENT_PER_PAGE)  # an empty table, copied into each new sp's array


@dataclass(slots=True, eq=False)
class KvmMmuPage:
    sp_id: int
    spt: int
    level: int
    gfn: int  # first gfn this table translates
    is_mirror: bool
    external_spt: int = NO_PAGE
    parent: "KvmMmuPage | None" = None
    parent_idx: int = -1
    invalid: bool = False  # role.invalid (roots only here)
    root_count: int = 0  # tdp_mmu_root_count, roots only
    is_root: bool = False
    linked: bool = False  # ever published in a parent SPTE (tdp_account_mmu_page)
    unlinked: bool = False  # handle_removed_pt() took it out of the tree
    freed: bool = False
    # array('q'), not a list: a list holds an int object (32 bytes) per present SPTE besides its slot
    sptes: array = field(default_factory=lambda: array("q", _ZEROS))
    # A root's link.next once list_del_rcu() has unlinked it (which leaves ->next pointing at the
    # successor it had, so an RCU walker standing on it can go on): the root after it on
    # kvm->arch.tdp_mmu_roots at the unlink, None at the list's end. Only read by a walk whose `prev`
    # is off the list -- which correct code, holding a reference to prev, never has.
    link_next: "KvmMmuPage | None" = None

    def __repr__(self) -> str:
        kind = "mirror" if self.is_mirror else "direct"
        ext = f" external_spt={self.external_spt:#x}" if self.external_spt != NO_PAGE else ""
        return f"sp#{self.sp_id}({kind} L{self.level} gfn={self.gfn:#x} spt={self.spt:#x}{ext})"


def is_mirror_sp(sp: KvmMmuPage) -> bool:
    """is_mirror_sp(): role.is_mirror."""
    return sp.is_mirror
