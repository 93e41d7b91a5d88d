"""bug-no-memslot-invalid-bail: tdx_handle_ept_violation()'s local retry loop without the 6.18 bail on
KVM_MEMSLOT_INVALID. A private fault on a memslot being deleted retries forever inside KVM_RUN while
holding kvm->srcu, and the deletion's synchronize_srcu_expedited() waits for that very section: the
memslot ioctl hangs (g.17)."""

from ...host.locks import cond_resched
from ...kvm.tdp_mmu import RET_PF_RETRY
from ...kvm.x86 import kvm_tdp_page_fault, tdx_honor_accept_level
from .. import Variant


def tdx_handle_ept_violation(vcpu, gfn, private, accept_4k=False):
    kvm = vcpu.kvm
    while True:
        if private and accept_4k and kvm.gmem_huge:
            yield from tdx_honor_accept_level(vcpu, gfn)
        ret = yield from kvm_tdp_page_fault(vcpu, gfn, private)
        if ret != RET_PF_RETRY or not private:
            return ret
        if kvm.bugged:
            return -5
        # BUG: no "if (slot && slot->flags & KVM_MEMSLOT_INVALID) break;"
        yield from cond_resched(kvm.host)


VARIANT = Variant("bug-no-memslot-invalid-bail", "TDX local fault retry never leaves SRCU for a memslot deletion",
                  {"tdx_handle_ept_violation": tdx_handle_ept_violation},
                  kind="mutant", catches=("hung-task",),
                  reference="g.17: 6.18 TDX local-retry vs memslot deletion deadlock (bail if KVM_MEMSLOT_INVALID)",
                  check_scenario="memslot-delete")
