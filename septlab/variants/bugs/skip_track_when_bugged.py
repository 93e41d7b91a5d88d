"""bug-skip-track-when-bugged: tdx_track() skips TDH.MEM.TRACK and the kick once the VM is bugged
("a dead VM needs no TLB tracking"). The next leaf removal's PAGE.REMOVE then fails for real
(TDX_TLB_TRACKING_NOT_DONE). That genuine error only ever happens after an injected failure bugged the
VM, so the old global rule ("some fault was injected earlier", fidelity D17) explained it away; the
causal rule does not: nothing links this pfn or gfn to the injected failure."""

from ...kvm.tdx import tdx_track as kernel_tdx_track
from .. import Variant


def tdx_track(kvm):
    if kvm.bugged:
        return 0  # BUG: REMOVE without BLOCK+TRACK while the TD is RUNNABLE
    return (yield from kernel_tdx_track(kvm))


VARIANT = Variant("bug-skip-track-when-bugged", "tdx_track() does nothing once the VM is bugged",
                  {"tdx_track": tdx_track}, kind="mutant", catches=("seamcall-unexpected-error",),
                  reference="docs/facts.md b.3 step 3, f.12; fidelity D17", check_scenario="leaf-failure")
