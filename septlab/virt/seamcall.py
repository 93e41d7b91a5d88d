"""SEAMCALL wrappers of arch/x86/virt/vmx/tdx/tdx.c (tdh_mem_sept_add(), tdh_phymem_page_reclaim(), ...).

Each wrapper yields one OP_SEAMCALL step, then calls the module leaf atomically. The explorer answers
the step with None (run the leaf) or an error code the scenario's fault model allows (the leaf is then
not run: an injected failure has no side effect). `current.injected_error` tells TDX_BUG_ON whether an
error came from the fault model (the kernel's intended failure handling) or from a broken contract.
`nofail` marks a SEAMCALL the fault model must not inject into (the kernel relies on it not failing);
its outcome is still the module's, locks included (tdx_module/module.py).

The leaves that hold a module lock across a window another CPU can hit take two steps: the SEAMCALL
step runs the leaf's acquire half (`tdh_vp_init_begin()`, ...), then a step announced as the leaf
"running in the TDX module" runs the release half; another CPU's SEAMCALL scheduled in between meets
the held lock. TDH.VP.ENTER's halves are split by KVM's guest phases (kvm/x86.py).
MODEL: register layouts and extended error outputs are reduced to what KVM inspects.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from ..host.task import OP_RUN, OP_SEAMCALL, Op
from ..tdx_module import errno as E
from ..tdx_module.pamt import PAGES_PER_2M
from ..tdx_module.sept import PG_LEVEL_2M
from .td_keys import GIFT_LEAVES, td_keys_cache_wb, td_keys_gifted, td_keys_wbinvd

if TYPE_CHECKING:
    from ..host.host import Host

Gen = Generator[Op, object, int]


def _leaf_pages(page: int, level: int) -> tuple[int, ...]:
    """The 4 KiB pages a leaf mapping of `level` at `page` covers (512 for a 2 MiB page)."""
    return tuple(range(page, page + PAGES_PER_2M)) if level == PG_LEVEL_2M else (page,)


def _done(host: "Host", leaf: int, inj: object, pages: tuple[int, ...], err: int) -> int:
    host.current.injected_error = inj is not None
    if inj is not None:
        host.injections += 1
    if inj is not None and not E.tdx_operand_busy(inj):  # BUSY is always handled; others explain WARNs
        host.faults_injected += 1
    if not err and leaf in GIFT_LEAVES:
        td_keys_gifted(host, leaf, pages)
    host.probe.seamcall(leaf, err, inj is not None, pages)
    if host.history is not None:
        res = "injected " + E.err_name(err) if inj is not None else (E.err_name(err) if err else "ok")
        for p in pages:
            host.page_event(p, f"{E.leaf_name(leaf)}: {res}")
    return err


def _seamcall(host: "Host", leaf: int, obj: object, nofail: bool = False) -> Generator[Op, object, object]:
    inj = yield Op(OP_SEAMCALL, obj, E.LEAF_NAMES[leaf], leaf, nofail)
    return inj


def tdh_mng_create(host: "Host", tdr: int, hkid: int) -> Gen:
    """tdh_mng_create(): TDH.MNG.CREATE."""
    inj = yield from _seamcall(host, E.TDH_MNG_CREATE, ("td", tdr))
    return _done(host, E.TDH_MNG_CREATE, inj, (tdr,), inj or host.seam.tdh_mng_create(tdr, hkid))


def tdh_mng_key_config(host: "Host", tdr: int) -> Gen:
    """tdh_mng_key_config(): TDH.MNG.KEY.CONFIG (MODEL: one package)."""
    inj = yield from _seamcall(host, E.TDH_MNG_KEY_CONFIG, ("td", tdr))
    return _done(host, E.TDH_MNG_KEY_CONFIG, inj, (), inj or host.seam.tdh_mng_key_config(tdr))


def tdh_mng_addcx(host: "Host", tdr: int, page: int) -> Gen:
    """tdh_mng_addcx(): TDH.MNG.ADDCX."""
    inj = yield from _seamcall(host, E.TDH_MNG_ADDCX, ("td", tdr))
    return _done(host, E.TDH_MNG_ADDCX, inj, (page,), inj or host.seam.tdh_mng_addcx(tdr, page))


def tdh_mng_init(host: "Host", tdr: int) -> Gen:
    """tdh_mng_init(): TDH.MNG.INIT."""
    inj = yield from _seamcall(host, E.TDH_MNG_INIT, ("td", tdr))
    return _done(host, E.TDH_MNG_INIT, inj, (), inj or host.seam.tdh_mng_init(tdr))


def tdh_vp_create(host: "Host", tdr: int, tdvpr: int) -> Gen:
    """tdh_vp_create(): TDH.VP.CREATE."""
    inj = yield from _seamcall(host, E.TDH_VP_CREATE, ("td", tdr))
    return _done(host, E.TDH_VP_CREATE, inj, (tdvpr,), inj or host.seam.tdh_vp_create(tdr, tdvpr))


def tdh_vp_addcx(host: "Host", tdvpr: int, page: int) -> Gen:
    """tdh_vp_addcx(): TDH.VP.ADDCX."""
    inj = yield from _seamcall(host, E.TDH_VP_ADDCX, ("vp", tdvpr))
    return _done(host, E.TDH_VP_ADDCX, inj, (page,), inj or host.seam.tdh_vp_addcx(tdvpr, page))


def _in_module(leaf: int, obj: object, holds: str) -> Op:
    """The step that ends a leaf which held `holds` since its SEAMCALL step (the window in between)."""
    return Op(OP_RUN, ("in-module", leaf, obj), f"{E.leaf_name(leaf)} returns (held {holds})")


def tdh_vp_init(host: "Host", tdvpr: int) -> Gen:
    """tdh_vp_init(): TDH.VP.INIT, holding the TDR exclusively while it initialises the TDVPS (two steps)."""
    inj = yield from _seamcall(host, E.TDH_VP_INIT, ("vp", tdvpr))
    if inj:
        return _done(host, E.TDH_VP_INIT, inj, (), inj)
    err = host.seam.tdh_vp_init_begin(tdvpr)
    if not err:
        yield _in_module(E.TDH_VP_INIT, ("vp", tdvpr), "the TDR exclusively")
        host.seam.tdh_vp_init_end(tdvpr)
        host.seam.associate_vcpu_initial(tdvpr, host.current.cpu)
    return _done(host, E.TDH_VP_INIT, None, (), err)


def tdh_mr_finalize(host: "Host", tdr: int) -> Gen:
    """tdh_mr_finalize(): TDH.MR.FINALIZE, holding the TDR exclusively while it finalises (two steps)."""
    inj = yield from _seamcall(host, E.TDH_MR_FINALIZE, ("td", tdr))
    if inj:
        return _done(host, E.TDH_MR_FINALIZE, inj, (), inj)
    err = host.seam.tdh_mr_finalize_begin(tdr)
    if not err:
        yield _in_module(E.TDH_MR_FINALIZE, ("td", tdr), "the TDR exclusively")
        host.seam.tdh_mr_finalize_end(tdr)
    return _done(host, E.TDH_MR_FINALIZE, None, (), err)


def tdh_mem_sept_add(host: "Host", tdr: int, gfn: int, level: int, page: int) -> Gen:
    """tdh_mem_sept_add(): TDH.MEM.SEPT.ADD of `page` under the entry at (gfn, level)."""
    inj = yield from _seamcall(host, E.TDH_MEM_SEPT_ADD, ("sept", tdr, level, gfn))
    return _done(host, E.TDH_MEM_SEPT_ADD, inj, (page,), inj or host.seam.tdh_mem_sept_add(tdr, gfn, level, page))


def tdh_mem_page_add(host: "Host", tdr: int, gfn: int, level: int, page: int, source: int = -1) -> Gen:
    """tdh_mem_page_add(): TDH.MEM.PAGE.ADD (initial image, before finalize), copying `source`.

    MODEL: the module reads the source page (host memory, shared KeyID) but the model does not check
    it; it is among the pages the SEAMCALL touches, so a freed source is a use-after-free."""
    inj = yield from _seamcall(host, E.TDH_MEM_PAGE_ADD, ("sept", tdr, level, gfn))
    pages = (page,) if source < 0 else (page, source)
    return _done(host, E.TDH_MEM_PAGE_ADD, inj, pages, inj or host.seam.tdh_mem_page_add(tdr, gfn, level, page))


TDX_EXTENDMR_CHUNKSIZE = 256


def tdh_mr_extend(host: "Host", tdr: int, gfn: int, chunk: int) -> Gen:
    """tdh_mr_extend(): TDH.MR.EXTEND of one TDX_EXTENDMR_CHUNKSIZE chunk of the page at gfn."""
    inj = yield from _seamcall(host, E.TDH_MR_EXTEND, ("td", tdr))
    return _done(host, E.TDH_MR_EXTEND, inj, (), inj or host.seam.tdh_mr_extend(tdr, gfn, chunk))


def tdh_mem_page_aug(host: "Host", tdr: int, gfn: int, level: int, page: int) -> Gen:
    """tdh_mem_page_aug(): TDH.MEM.PAGE.AUG (the hugepage series' "Enhance tdh_mem_page_aug to support huge
    pages": at 2M `page` is the folio's head pfn and the SEAMCALL touches, and gifts, all 512 pages)."""
    inj = yield from _seamcall(host, E.TDH_MEM_PAGE_AUG, ("sept", tdr, level, gfn))
    err = inj or host.seam.tdh_mem_page_aug(tdr, gfn, level, page)
    return _done(host, E.TDH_MEM_PAGE_AUG, inj, _leaf_pages(page, level), err)


def tdh_mem_range_block(host: "Host", tdr: int, gfn: int, level: int, nofail: bool = False) -> Gen:
    """tdh_mem_range_block(): TDH.MEM.RANGE.BLOCK."""
    inj = yield from _seamcall(host, E.TDH_MEM_RANGE_BLOCK, ("sept", tdr, level, gfn), nofail)
    return _done(host, E.TDH_MEM_RANGE_BLOCK, inj, (), inj or host.seam.tdh_mem_range_block(tdr, gfn, level))


def tdh_mem_track(host: "Host", tdr: int, nofail: bool = False) -> Gen:
    """tdh_mem_track(): TDH.MEM.TRACK."""
    inj = yield from _seamcall(host, E.TDH_MEM_TRACK, ("epoch", tdr), nofail)
    return _done(host, E.TDH_MEM_TRACK, inj, (), inj or host.seam.tdh_mem_track(tdr))


def tdh_mem_page_remove(host: "Host", tdr: int, gfn: int, level: int, nofail: bool = False) -> Gen:
    """tdh_mem_page_remove(): TDH.MEM.PAGE.REMOVE (of a 4 KiB or 2 MiB leaf)."""
    inj = yield from _seamcall(host, E.TDH_MEM_PAGE_REMOVE, ("sept", tdr, level, gfn), nofail)
    err, page = (inj, -1) if inj else host.seam.tdh_mem_page_remove(tdr, gfn, level)
    return _done(host, E.TDH_MEM_PAGE_REMOVE, inj, _leaf_pages(page, level) if page >= 0 else (), err)


def tdh_mem_page_demote(host: "Host", tdr: int, gfn: int, level: int, new_sept_page: int,
                        pamt_pages: tuple[int, int] | None = None, nofail: bool = False) -> Gen:
    """tdh_mem_page_demote() (the S-EPT hugepage series, "Add API to demote a 2MB mapping to 512 4KB
    mappings"): TDH.MEM.PAGE.DEMOTE of the leaf at (gfn, level) into `new_sept_page`, with DPAMT the two
    pages of the new PAMT_4K level (E4). One step, like RANGE.BLOCK (same lock key: the entry).

    On success the new S-EPT page, written by the module with the TD's key, may hold TD-keyed lines, as
    after SEPT.ADD (td_keys_gifted(); the PAMT pages are module metadata, global key, not tracked)."""
    inj = yield from _seamcall(host, E.TDH_MEM_PAGE_DEMOTE, ("sept", tdr, level, gfn), nofail)
    err = inj or host.seam.tdh_mem_page_demote(tdr, gfn, level, new_sept_page, pamt_pages)
    if not err:
        td_keys_gifted(host, E.TDH_MEM_PAGE_DEMOTE, (new_sept_page,))
    return _done(host, E.TDH_MEM_PAGE_DEMOTE, inj, (new_sept_page, *(pamt_pages or ())), err)


def tdh_phymem_page_reclaim(host: "Host", page: int) -> Gen:
    """tdh_phymem_page_reclaim(): TDH.PHYMEM.PAGE.RECLAIM."""
    inj = yield from _seamcall(host, E.TDH_PHYMEM_PAGE_RECLAIM, ("page", page))
    return _done(host, E.TDH_PHYMEM_PAGE_RECLAIM, inj, (page,), inj or host.seam.tdh_phymem_page_reclaim(page))


def tdh_phymem_page_wbinvd_hkid(host: "Host", hkid: int, page: int, npages: int = 1) -> Gen:
    """tdh_phymem_page_wbinvd_hkid(): TDH.PHYMEM.PAGE.WBINVD on (pfn | hkid) of each of the `npages`
    4 KiB pages from `page` (the hugepage series' "Enhance tdh_phymem_page_wbinvd_hkid to invalidate huge
    pages" loops over the folio, one SEAMCALL per 4 KiB page, returning the first error).

    MODEL: the per-4K loop is one step; an injected failure stops it at the first page. A failure of
    the module's own stops it at that page: the pages before it were flushed (td_keys_wbinvd() for
    each), the rest were not."""
    inj = yield from _seamcall(host, E.TDH_PHYMEM_PAGE_WBINVD, ("page", page))
    err = inj
    if not inj:
        for p in range(page, page + npages):
            err = host.seam.tdh_phymem_page_wbinvd(p, hkid)
            if err:
                break
            td_keys_wbinvd(host, p, hkid)
    return _done(host, E.TDH_PHYMEM_PAGE_WBINVD, inj, tuple(range(page, page + npages)), err)


def tdh_phymem_page_wbinvd_tdr(host: "Host", tdr: int) -> Gen:
    """tdh_phymem_page_wbinvd_tdr(): TDH.PHYMEM.PAGE.WBINVD of the TDR with the global TDX HKID."""
    return (yield from tdh_phymem_page_wbinvd_hkid(host, 0, tdr))


def tdh_vp_flush(host: "Host", tdvpr: int, cpu: int | None = None) -> Gen:
    """tdh_vp_flush(): TDH.VP.FLUSH, run on `cpu` (the vCPU's last CPU, by IPI; default: this one)."""
    inj = yield from _seamcall(host, E.TDH_VP_FLUSH, ("vp", tdvpr))
    lp = host.current.cpu if cpu is None else cpu
    return _done(host, E.TDH_VP_FLUSH, inj, (), inj or host.seam.tdh_vp_flush_on(tdvpr, lp))


def tdh_mng_vpflushdone(host: "Host", tdr: int) -> Gen:
    """tdh_mng_vpflushdone(): TDH.MNG.VPFLUSHDONE."""
    inj = yield from _seamcall(host, E.TDH_MNG_VPFLUSHDONE, ("td", tdr))
    return _done(host, E.TDH_MNG_VPFLUSHDONE, inj, (), inj or host.seam.tdh_mng_vpflushdone(tdr))


def tdh_phymem_cache_wb(host: "Host", resume: bool) -> Gen:
    """tdh_phymem_cache_wb(): TDH.PHYMEM.CACHE.WB on this package."""
    inj = yield from _seamcall(host, E.TDH_PHYMEM_CACHE_WB, ("wbcache",))
    err = inj or host.seam.tdh_phymem_cache_wb(resume)
    if not err:
        td_keys_cache_wb(host)
    return _done(host, E.TDH_PHYMEM_CACHE_WB, inj, (), err)


def tdh_mng_key_freeid(host: "Host", tdr: int) -> Gen:
    """tdh_mng_key_freeid(): TDH.MNG.KEY.FREEID."""
    inj = yield from _seamcall(host, E.TDH_MNG_KEY_FREEID, ("td", tdr))
    return _done(host, E.TDH_MNG_KEY_FREEID, inj, (), inj or host.seam.tdh_mng_key_freeid(tdr))


def tdh_phymem_pamt_add(host: "Host", region: int, p1: int, p2: int) -> Gen:
    """tdh_phymem_pamt_add(): TDH.PHYMEM.PAMT.ADD for a 2 MiB region (E4, DPAMT v6)."""
    inj = yield from _seamcall(host, E.TDH_PHYMEM_PAMT_ADD, ("pamt", region))
    return _done(host, E.TDH_PHYMEM_PAMT_ADD, inj, (p1, p2), inj or host.seam.tdh_phymem_pamt_add(region, p1, p2))


def tdh_phymem_pamt_remove(host: "Host", region: int) -> Generator[Op, object, tuple[int, tuple[int, int] | None]]:
    """tdh_phymem_pamt_remove(): TDH.PHYMEM.PAMT.REMOVE; returns the two PAMT pages on success."""
    inj = yield from _seamcall(host, E.TDH_PHYMEM_PAMT_REMOVE, ("pamt", region))
    if inj:
        return _done(host, E.TDH_PHYMEM_PAMT_REMOVE, inj, (), inj), None
    err, pages = host.seam.tdh_phymem_pamt_remove(region)
    return _done(host, E.TDH_PHYMEM_PAMT_REMOVE, None, (), err), pages


VP_ENTER_NOT_ISSUED = -1  # not a module status: KVM's gate refused the entry, no SEAMCALL was made


def tdh_vp_enter(host: "Host", tdvpr: int, gate: Callable[[], bool] | None = None) -> Gen:
    """tdh_vp_enter(): TDH.VP.ENTER up to the guest entry (tdh_vp_enter_begin(): the TDR and epoch locks,
    and the S-EPT tree if zero-step is armed, taken); KVM's guest phases end it (kvm/x86.py:
    tdx_vcpu_enter_exit()).

    `gate` is KVM's last check before the entry, made with IRQs off right before the SEAMCALL
    (tdx_vcpu_run(): wait_for_sept_zap); it is evaluated in this same step, so no kick can fall
    between the check and the entry. VP_ENTER_NOT_ISSUED when it refuses. Never injected (nofail).
    """
    yield Op(OP_SEAMCALL, ("vp", tdvpr), "TDH.VP.ENTER", 0, True)
    if gate is not None and gate():
        return VP_ENTER_NOT_ISSUED
    return host.seam.tdh_vp_enter_begin_on(tdvpr, host.current.cpu)
