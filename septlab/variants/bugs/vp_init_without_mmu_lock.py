"""bug-vp-init-without-mmu-lock: KVM_TDX_INIT_VCPU issues TDH.VP.INIT without holding mmu_lock for
write, the code before 9a89894f30d5 "KVM: TDX: Take MMU lock around tdh_vp_init()" (docs/facts.md
g.13). TDH.VP.INIT holds the TDR exclusively; a guest_memfd hole punch racing it (Yan Zhao's report)
meets it in RANGE.BLOCK (TDR shared) on the attempt and on tdh_do_no_vcpus()'s retry, since kicking
vCPUs does not end a VP.INIT: BUSY reaches TDX_BUG_ON."""

from ...kvm.kvm_host import Kvm
from ...kvm.tdx import EIO, NR_TDCX_PAGES, TDX_BUG_ON
from ...tdx_module import errno as E
from ...virt import seamcall as S
from ...virt.dpamt import tdx_alloc_control_page
from .. import Variant


def tdx_vcpu_init(vcpu):
    kvm: Kvm = vcpu.kvm
    host = kvm.host
    vcpu.tdvpr = yield from tdx_alloc_control_page(host)
    for _ in range(NR_TDCX_PAGES):
        vcpu.tdcx.append((yield from tdx_alloc_control_page(host)))
    err = yield from S.tdh_vp_create(host, kvm.tdx.tdr, vcpu.tdvpr)
    if TDX_BUG_ON(err, E.TDH_VP_CREATE, kvm, host):
        return EIO
    for page in vcpu.tdcx:
        err = yield from S.tdh_vp_addcx(host, vcpu.tdvpr, page)
        if TDX_BUG_ON(err, E.TDH_VP_ADDCX, kvm, host):
            return EIO
    err = yield from S.tdh_vp_init(host, vcpu.tdvpr)  # BUG: no write_lock(mmu_lock) around it
    if TDX_BUG_ON(err, E.TDH_VP_INIT, kvm, host):
        return EIO
    vcpu.initialized = True
    return 0


VARIANT = Variant("bug-vp-init-without-mmu-lock",
                  "TDH.VP.INIT (TDR exclusive) outside mmu_lock: a racing hole punch's RANGE.BLOCK stays BUSY",
                  {"tdx_vcpu_init": tdx_vcpu_init}, kind="mutant", catches=("busy-in-no-fail-path",),
                  reference="before 9a89894f30d5 (docs/facts.md g.13)", check_scenario="vcpu-init-race")
