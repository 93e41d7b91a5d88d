"""bug-sept-zap-gate-racy: the vCPU checks wait_for_sept_zap only before kvm_mmu_reload(), with IRQs
on, and not again in tdx_vcpu_run() right before TDH.VP.ENTER: tdh_do_no_vcpus() can set the flag and
kick between the check and the entry, the vCPU then enters (its zero-step filter taking the S-EPT
tree, its entry the TD-epoch lock) and the retry meets it: BUSY (docs/facts.md b.3, g.12: the gate
works only because the check and the entry form one critical section with respect to the kick)."""

from ...host.task import OP_WAIT, Op
from ...kvm.x86 import kvm_mmu_load, tdx_vcpu_enter_exit
from ...tdx_module import errno as E
from ...virt import seamcall as S
from .. import Variant


def tdx_vcpu_run(vcpu):
    kvm = vcpu.kvm
    t = kvm.tdx
    while True:
        yield Op(OP_WAIT, lambda: not t.wait_for_sept_zap, f"vcpu{vcpu.vcpu_id}: wait_for_sept_zap")
        yield from kvm_mmu_load(vcpu)
        err = yield from S.tdh_vp_enter(kvm.host, vcpu.tdvpr)  # BUG: no wait_for_sept_zap check in the entry step
        if not E.tdx_operand_busy(err):
            break
    if err:
        return 0
    vcpu.in_guest = True
    return (yield from tdx_vcpu_enter_exit(vcpu))


VARIANT = Variant("bug-sept-zap-gate-racy",
                  "wait_for_sept_zap checked before, not atomically with, TDH.VP.ENTER: a vCPU enters after the kick",
                  {"tdx_vcpu_run": tdx_vcpu_run}, kind="mutant", catches=("busy-in-no-fail-path",),
                  reference="3d626ce5a8cc's gate in tdx_vcpu_run() (docs/facts.md b.3, g.12)",
                  check_scenario="conversion-storm")
