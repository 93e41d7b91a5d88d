"""bug-pamt-put-in-rcu-callback: tdx-free, but the DPAMT put of a freed S-EPT page is deferred to the
RCU callback "to keep it off the zap path": pamt_lock is then taken in softirq (cf. RFC v5 #20)."""

from ...host.page_alloc import free_page
from ...kvm.mmu_page import NO_PAGE
from ...kvm.tdp_mmu import __tdp_mmu_free_sp as free_spt_only  # noqa: F401
from ...kvm.tdx import tdx_sept_reclaim_or_leak
from ...virt.dpamt import tdx_pamt_put
from .. import Variant

_pending_put: dict = {}  # sp -> pfn whose PAMT reference the RCU callback drops


def tdx_sept_free_private_spt(kvm, sp):
    if (yield from tdx_sept_reclaim_or_leak(kvm, sp)):
        free_page(kvm.host, sp.external_spt)
        _pending_put[sp] = sp.external_spt  # remembered for the RCU callback
    sp.external_spt = NO_PAGE
    return 0


def tdp_mmu_free_sp(kvm, sp):
    pfn = _pending_put.pop(sp, None)
    if pfn is not None:
        yield from tdx_pamt_put(kvm.host, pfn)  # BUG: pamt_lock in softirq
    free_spt_only(kvm, sp)
    return 0


VARIANT = Variant("bug-pamt-put-in-rcu-callback", "tdx-free, but the S-EPT page's PAMT put runs in the RCU callback",
                  {"free_external_spt": tdx_sept_free_private_spt, "tdp_mmu_free_sp": tdp_mmu_free_sp},
                  kind="mutant", catches=("lock-context",))
