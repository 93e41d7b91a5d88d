"""bug-vcpu-load-after-hkid-free: tdx_vcpu_load() without its `!is_hkid_assigned()` bail-out, and VM
teardown loading each vCPU to unload its MMU (kvm_unload_vcpu_mmu(): vcpu_load() + kvm_mmu_unload(),
the x86 teardown before "KVM: x86: Don't load/put vCPU when unloading its MMU during teardown").
tdx_mmu_release_hkid() has already flushed and disassociated every vCPU; the teardown vcpu_load()
re-associates it (list_add on the destroying CPU), so tdx_vcpu_free() finds an initialised vCPU still
loaded: KVM_BUG_ON, and its TDVPR/TDCX are never reclaimed (docs/facts.md b.7, g.15; Yan Zhao,
Feb 2025)."""

from ...kvm.tdx import kvm_arch_vcpu_load, tdx_flush_vp_on_cpu
from ...kvm.x86 import kvm_mmu_destroy as _kvm_mmu_destroy
from .. import Variant


def tdx_vcpu_load(vcpu, cpu):
    if vcpu.cpu == cpu:  # BUG: no `|| !is_hkid_assigned(to_kvm_tdx(vcpu->kvm))`
        return 0
    yield from tdx_flush_vp_on_cpu(vcpu)
    vcpu.cpu_list = cpu
    return 0


def kvm_mmu_destroy(vcpu):
    yield from kvm_arch_vcpu_load(vcpu)  # BUG (old order): vcpu_load() to unload the MMU at teardown
    return (yield from _kvm_mmu_destroy(vcpu))


VARIANT = Variant("bug-vcpu-load-after-hkid-free",
                  "teardown vcpu_load() after the HKID release re-associates the vCPU: tdx_vcpu_free() "
                  "KVM_BUG_ONs and leaks it",
                  {"tdx_vcpu_load": tdx_vcpu_load, "kvm_mmu_destroy": kvm_mmu_destroy},
                  kind="mutant", catches=("kernel-warn",),
                  reference="tdx_vcpu_load()'s is_hkid_assigned() check (d789fa6efac9, 1e3a825c9ec9; "
                            "docs/facts.md b.7, g.15)",
                  check_scenario="boot-teardown")
