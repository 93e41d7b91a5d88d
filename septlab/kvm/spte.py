"""SPTE values (arch/x86/kvm/mmu/spte.h), reduced to what the S-EPT lifecycle needs.

An SPTE is an int: pfn << 12 | flags. FROZEN_SPTE (REMOVED_SPTE before ~v6.11) is the transient
non-present value meaning "a thread owns this entry right now"; SHADOW_NONPRESENT_VALUE is empty.
MODEL: of the A/D bits only Accessed (what aging clears; the bit position is the model's, the guest's
hardware setting it again is not modelled); no permission, memtype or MMIO bits; non-leaf SPTEs point
at the child's `spt` page.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, islice

SHADOW_NONPRESENT_VALUE = 0
FROZEN_SPTE = 0x5A0
PT_PRESENT_MASK = 1 << 0
PT_WRITABLE_MASK = 1 << 1
PT_PAGE_SIZE_MASK = 1 << 7  # leaf at level > 4K
SPTE_LEAF_MASK = 1 << 8  # MODEL: explicit leaf marker so is_last_spte() needs no level table
SPTE_ACCESSED_MASK = 1 << 5  # shadow_accessed_mask: set by make_spte() for a non-prefetch fault
SPTE_BASE_PFN_SHIFT = 12

SPTE_ENT_PER_PAGE = 512


def present_indices(sptes: Sequence[int], start: int = 0) -> list[int]:
    """The indices (from `start`) of a table's present entries, in order. MODEL: not a kernel function --
    the TDP iterator's skip over non-present entries, done at C speed (most of a table is 0) so that walks
    and zaps cost what the present entries cost."""
    return [i for i in compress(range(start, SPTE_ENT_PER_PAGE), islice(sptes, start, None))
            if sptes[i] & PT_PRESENT_MASK]


def is_frozen_spte(spte: int) -> bool:
    """is_frozen_spte(): some thread owns this entry right now."""
    return spte == FROZEN_SPTE


def is_shadow_present_pte(spte: int) -> bool:
    """is_shadow_present_pte()."""
    return bool(spte & PT_PRESENT_MASK)


def is_last_spte(spte: int, level: int) -> bool:
    """is_last_spte(): a leaf at this level."""
    return level == 1 or bool(spte & SPTE_LEAF_MASK)


def spte_to_pfn(spte: int) -> int:
    """spte_to_pfn()."""
    return spte >> SPTE_BASE_PFN_SHIFT


def make_spte(pfn: int) -> int:
    """make_spte(): a present, writable 4 KiB leaf (TDX requires full RWX for private leaves)."""
    return (pfn << SPTE_BASE_PFN_SHIFT) | PT_PRESENT_MASK | PT_WRITABLE_MASK | SPTE_LEAF_MASK | SPTE_ACCESSED_MASK


def make_huge_spte(head_pfn: int) -> int:
    """make_spte() at PG_LEVEL_2M: a present 2 MiB leaf (PT_PAGE_SIZE_MASK) mapping head_pfn..+511."""
    return make_spte(head_pfn) | PT_PAGE_SIZE_MASK


def is_large_pte(spte: int) -> bool:
    """is_large_pte(): a leaf above 4 KiB."""
    return bool(spte & PT_PAGE_SIZE_MASK)


def spte_pfns(spte: int) -> range:
    """The pfns a present leaf SPTE maps: one, or 512 for a 2 MiB leaf (MODEL: no 1 GiB leaves)."""
    pfn = spte >> SPTE_BASE_PFN_SHIFT
    return range(pfn, pfn + (512 if spte & PT_PAGE_SIZE_MASK else 1))


def make_nonleaf_spte(child_spt: int) -> int:
    """make_nonleaf_spte(): a present entry pointing at the child page table."""
    return (child_spt << SPTE_BASE_PFN_SHIFT) | PT_PRESENT_MASK | PT_WRITABLE_MASK


def spte_index(gfn: int, level: int) -> int:
    """SPTE_INDEX(): which of the 512 entries of a level-`level` table translates gfn."""
    return (gfn >> (9 * (level - 1))) & 511


def level_base_gfn(gfn: int, level: int) -> int:
    """The first gfn covered by the level-`level` table that contains gfn's entry."""
    return gfn & ~((1 << (9 * level)) - 1)
