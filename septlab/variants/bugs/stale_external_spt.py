"""bug-stale-external-spt: tdx_sept_free_private_spt() forgets `sp->external_spt = NULL`; the E3 RCU
callback's WARN_ON_ONCE(sp->external_spt) fires on every freed mirror page table."""

from ...kvm.tdx import tdx_sept_reclaim_or_leak
from ...virt.dpamt import tdx_free_control_page
from .. import Variant


def tdx_sept_free_private_spt(kvm, sp):
    if (yield from tdx_sept_reclaim_or_leak(kvm, sp)):
        yield from tdx_free_control_page(kvm.host, sp.external_spt)
    return 0  # BUG: missing sp->external_spt = NULL


VARIANT = Variant("bug-stale-external-spt", "sp->external_spt left set after TDX freed it (RCU callback WARNs)",
                  {"free_external_spt": tdx_sept_free_private_spt}, kind="mutant", catches=("kernel-warn",))
