"""Which pages may still hold TD-keyed (HKID) cache lines: the state behind `td-keyed-page-reused`.

With TDX (no cache coherency across KeyIDs, and on SPR/EMR the partial-write #MC erratum), a page a TD
used with its private HKID may hold dirty cache lines tagged with that HKID. Before the host reuses
the page, the kernel writes them back and invalidates them: TDH.PHYMEM.PAGE.WBINVD with the TD's
HKID after PAGE.REMOVE (`tdx_sept_remove_leaf_spte()`), TDH.PHYMEM.CACHE.WB of every package before
KEY.FREEID (`tdx_mmu_release_hkid()`: covers the S-EPT and control pages RECLAIMed afterwards), and
PAGE.WBINVD of the TDR with the global private KeyID (`tdx_reclaim_td_control_pages()`).

MODEL: a page is marked when the SEAMCALL that gives it to the TD succeeds (MNG.CREATE: the TDR, with
the global KeyID 0; MNG.ADDCX/VP.CREATE/VP.ADDCX; SEPT.ADD; PAGE.ADD, which writes the page with the
TD's key; PAGE.AUG, although the guest first writes it when it accepts the page -- the model has no
TDG.MEM.PAGE.ACCEPT, so AUG is the conservative point). `tdx_quirk_reset_paddr()` (MOVDIR64B on
X86_BUG_TDX_PW_MCE parts) is not modelled as a flush: on other parts it is a no-op. PAMT_4K pages
(module metadata, global KeyID) are not tracked: the kernel frees them after PAMT.REMOVE with only the
quirk reset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..tdx_module import errno as E
from ..tdx_module.pamt import PT_NDA, PT_PAMT, PT_TDR

if TYPE_CHECKING:
    from ..host.host import Host

TDX_GLOBAL_KEYID = 0
GIFT_LEAVES = frozenset((E.TDH_MNG_CREATE, E.TDH_MNG_ADDCX, E.TDH_VP_CREATE, E.TDH_VP_ADDCX,
                         E.TDH_MEM_SEPT_ADD, E.TDH_MEM_PAGE_ADD, E.TDH_MEM_PAGE_AUG))


def td_keys_gifted(host: "Host", leaf: int, pages: tuple[int, ...]) -> None:
    """After a successful SEAMCALL: the pages it gave to a TD may now hold that TD's keyed lines."""
    seam = host.seam
    pamt = seam.pamt
    for p in pages:
        pt = pamt.type_of(p)
        if pt in (PT_NDA, PT_PAMT):
            continue
        if pt == PT_TDR:
            host.td_keyed[p] = TDX_GLOBAL_KEYID
        else:
            td = seam.tds.get(pamt.owner.get(p))
            if td is not None:
                host.td_keyed[p] = td.hkid


def td_keys_wbinvd(host: "Host", page: int, hkid: int) -> None:
    """TDH.PHYMEM.PAGE.WBINVD succeeded on (page, hkid): lines of that HKID are gone, others stay."""
    if host.td_keyed.get(page) == hkid:
        del host.td_keyed[page]


def td_keys_cache_wb(host: "Host") -> None:
    """TDH.PHYMEM.CACHE.WB succeeded: every HKID the module flushed (TDs with wbcache_done) is clean.
    MODEL: one package, so one CACHE.WB covers the machine."""
    done = {td.hkid for td in host.seam.tds.values() if td.wbcache_done}
    if done:
        for p in [p for p, h in host.td_keyed.items() if h in done]:
            del host.td_keyed[p]
