"""bug-sept-zap-gate-stuck: tdh_do_no_vcpus() sets wait_for_sept_zap on BUSY but never clears it,
so no vCPU can enter the guest again."""

from ...kvm.tdx import kvm_make_all_cpus_request
from ...tdx_module import errno as E
from .. import Variant


def tdh_do_no_vcpus(fn, kvm, *args):
    err = yield from fn(kvm.host, *args)
    if E.tdx_operand_busy(err):
        kvm.tdx.wait_for_sept_zap = True
        yield from kvm_make_all_cpus_request(kvm, "KVM_REQ_OUTSIDE_GUEST_MODE")
        err = yield from fn(kvm.host, *args, nofail=True)
        # BUG: kvm_tdx->wait_for_sept_zap never cleared
    return err


VARIANT = Variant("bug-sept-zap-gate-stuck", "wait_for_sept_zap left set after a BUSY retry: vCPUs never re-enter",
                  {"tdh_do_no_vcpus": tdh_do_no_vcpus}, kind="mutant", catches=("mmu-lock-rules", "deadlock"),
                  check_scenario="conversion-storm")
