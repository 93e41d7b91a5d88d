"""bug-fault-retry-attr-mismatch: kvm_mmu_faultin_pfn() answers a fault whose private/shared kind does
not match the gfn's memory attributes with RET_PF_RETRY instead of exiting to userspace
(kvm_mmu_prepare_memory_fault_exit(), KVM_EXIT_MEMORY_FAULT, -EFAULT). Only userspace can change the
attributes, and it never hears of the fault: a TDX vCPU whose private access meets a gfn converted to
shared retries forever in its local retry loop."""

from ...host.mm import get_user_pages_unlocked
from ...kvm.guest_memfd import kvm_gmem_get_pfn
from ...kvm.kvm_host import KVM_MEMSLOT_DELETED, KVM_MEMSLOT_INVALID
from ...kvm.tdp_mmu import RET_PF_CONTINUE, RET_PF_RETRY
from ...kvm.x86 import EFAULT, kvm_max_private_mapping_level, kvm_mmu_hugepage_adjust
from .. import Variant


def kvm_mmu_faultin_pfn(vcpu, fault):
    kvm = vcpu.kvm
    gfn = fault.gfn
    fault.mmu_seq = kvm.mmu_invalidate_seq
    if kvm.memslot == KVM_MEMSLOT_INVALID:
        return RET_PF_RETRY
    if kvm.memslot == KVM_MEMSLOT_DELETED:
        return EFAULT
    if fault.is_private == (gfn in kvm.shared_gfns):
        return RET_PF_RETRY  # BUG: kvm_mmu_prepare_memory_fault_exit(); return -EFAULT;
    if fault.is_private:
        fault.pfn, order = kvm_gmem_get_pfn(kvm, gfn)
        kvm_mmu_hugepage_adjust(fault, kvm_max_private_mapping_level(kvm, gfn, order))
    else:
        pfn = yield from get_user_pages_unlocked(kvm.host, gfn)
        if pfn < 0:
            return pfn
        fault.pfn = pfn
    return RET_PF_CONTINUE


VARIANT = Variant("bug-fault-retry-attr-mismatch", "a fault whose private/shared kind mismatches the attributes "
                  "retries instead of exiting to userspace: the vCPU retries forever",
                  {"kvm_mmu_faultin_pfn": kvm_mmu_faultin_pfn}, kind="mutant", catches=("soft-lockup",),
                  reference="kvm_mmu_faultin_pfn(): a private/shared mismatch is KVM_EXIT_MEMORY_FAULT (-EFAULT); "
                            "only userspace can convert the gfn",
                  check_scenario="conversion-storm")
