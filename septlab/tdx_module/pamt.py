"""PAMT: the TDX module's per-physical-page metadata (page type, owner TD) and DPAMT 4K backing.

Models pamt_manager.h page types and, for Dynamic PAMT (E4, DPAMT v6), which 2 MiB physical regions
have their PAMT_4K level installed by TDH.PHYMEM.PAMT.ADD.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PT_NDA = 0  # not assigned: the host may use or free it
PT_RSVD = 1
PT_REG = 3  # TD private data page
PT_TDR = 4
PT_TDCX = 5
PT_TDVPR = 6
PT_EPT = 8  # S-EPT page
# MODEL: pages handed to PAMT.ADD as PAMT_4K backing are tracked as PT_RSVD (module-internal use).
PT_PAMT = PT_RSVD

PT_NAMES = {PT_NDA: "PT_NDA", PT_RSVD: "PT_RSVD", PT_REG: "PT_REG", PT_TDR: "PT_TDR",
            PT_TDCX: "PT_TDCX", PT_TDVPR: "PT_TDVPR", PT_EPT: "PT_EPT"}

PAGES_PER_2M = 512
TDX_DPAMT_ENTRY_PAGE_CNT = 2


def region_of(pfn: int) -> int:
    """2 MiB region index of a 4 KiB pfn (the kernel's pamt_refcounts index, pfn >> 9)."""
    return pfn >> 9


@dataclass(slots=True)
class Pamt:
    """Page type and owner of every page the module knows about; absent means PT_NDA, owner none."""

    ptype: dict[int, int] = field(default_factory=dict)
    owner: dict[int, int] = field(default_factory=dict)  # pfn -> TDR pfn
    # DPAMT: region -> the two PAMT pages backing its 4K level; and how many assigned 4K pages it has.
    backing: dict[int, tuple[int, int]] = field(default_factory=dict)
    assigned_in_region: dict[int, int] = field(default_factory=dict)

    def type_of(self, pfn: int) -> int:
        return self.ptype.get(pfn, PT_NDA)

    def assign(self, pfn: int, ptype: int, owner: int) -> None:
        """Page becomes module-owned (the gifting half of ADD/AUG/SEPT.ADD/ADDCX/VP.CREATE/CREATE)."""
        self.ptype[pfn] = ptype
        self.owner[pfn] = owner
        r = pfn >> 9
        self.assigned_in_region[r] = self.assigned_in_region.get(r, 0) + 1

    def release(self, pfn: int) -> None:
        """Page returns to PT_NDA (REMOVE, RECLAIM)."""
        del self.ptype[pfn]
        self.owner.pop(pfn, None)
        r = pfn >> 9
        left = self.assigned_in_region[r] - 1
        if left:
            self.assigned_in_region[r] = left
        else:
            del self.assigned_in_region[r]
