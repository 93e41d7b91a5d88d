"""tdx-free: the merged design (110d4d263450 "KVM: TDX: Move external page table freeing to TDX code").

external_spt is freed right after a successful TDH.PHYMEM.PAGE.RECLAIM inside tdx_sept_free_private_spt()
(with DPAMT: tdx_free_control_page(), in process context under mmu_lock); never-linked sps are freed
by tdp_mmu_free_unused_sp(); on failure the page is leaked. This is septlab's default hook table.
"""

from . import Variant

VARIANT = Variant(
    name="tdx-free",
    description="free external_spt right after RECLAIM in TDX code (merged E3 patch 17/17; DPAMT v6)",
    reference="110d4d263450, DPAMT v6 (2026-05-25)",
)
