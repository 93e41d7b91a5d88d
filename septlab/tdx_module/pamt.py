"""PAMT: the TDX module's per-physical-page metadata (page type, owner TD) and DPAMT 4K backing.

Models pamt_manager.h page types and, for Dynamic PAMT (E4, DPAMT v6), which 2 MiB physical regions
have their PAMT_4K level installed by TDH.PHYMEM.PAMT.ADD (or by TDH.MEM.PAGE.DEMOTE).

A 2 MiB private page (TDH.MEM.PAGE.AUG at 2M) is one PT_REG entry of the static PAMT_2M level in the
module; the model records each of its 512 pfns as PT_REG (so per-page queries stay simple) and the
region in `huge`, but not in `assigned_in_region`: that count is of 4 KiB assignments, the ones that
need PAMT_4K and keep PAMT.REMOVE from succeeding. DEMOTE moves the region to 4 KiB accounting
(pamt_demote(): the 2M entry's metadata copied into 512 PAMT_4K entries).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..intmap import ByteIntMap, IntMap

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
    """Page type and owner of every page the module knows about; absent means PT_NDA, owner none.
    Both are per-page maps keyed by pfn (septlab/intmap.py). `ptype` is a ByteIntMap, 1 byte a page at
    real sizes: its values are the PT_* constants above (0..8; pamt_manager.h's page types are one
    byte too), and a value outside 0..254 raises TypeError. `owner` holds a pfn: an IntMap, 8 bytes."""

    ptype: ByteIntMap = field(default_factory=ByteIntMap)
    owner: IntMap = field(default_factory=IntMap)  # pfn -> TDR pfn
    # DPAMT: region -> the two PAMT pages backing its 4K level; and how many assigned 4K pages it has.
    backing: dict[int, tuple[int, int]] = field(default_factory=dict)
    assigned_in_region: dict[int, int] = field(default_factory=dict)
    huge: set[int] = field(default_factory=set)  # regions assigned as one 2 MiB page (PAMT_2M leaf)

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

    def assign_2m(self, head: int, ptype: int, owner: int) -> None:
        """A 2 MiB range becomes module-owned as one page (PAGE.AUG at 2M: the PAMT_2M entry), without
        counting its pages in `assigned_in_region`. `head` must be 512-aligned."""
        assert head % PAGES_PER_2M == 0, head
        for pfn in range(head, head + PAGES_PER_2M):
            self.ptype[pfn] = ptype
            self.owner[pfn] = owner
        self.huge.add(head >> 9)

    def release_2m(self, head: int) -> None:
        """A 2 MiB page returns to PT_NDA (PAGE.REMOVE at 2M)."""
        self.huge.remove(head >> 9)
        for pfn in range(head, head + PAGES_PER_2M):
            del self.ptype[pfn]
            self.owner.pop(pfn, None)

    def demote_2m(self, head: int) -> None:
        """pamt_demote(): the 2 MiB page becomes 512 4 KiB pages of the same type and owner, counted as 4 KiB
        assignments of their region from now on."""
        r = head >> 9
        self.huge.remove(r)
        self.assigned_in_region[r] = self.assigned_in_region.get(r, 0) + PAGES_PER_2M

    def install_backing(self, region: int, p1: int, p2: int) -> None:
        """DPAMT: `p1`, `p2` become the PAMT_4K level of `region` (TDH.PHYMEM.PAMT.ADD, and
        TDH.MEM.PAGE.DEMOTE's pamt_demote() under DPAMT); the callers check the pages first."""
        self.backing[region] = (p1, p2)
        self.ptype[p1] = self.ptype[p2] = PT_PAMT
