"""bug-busy-no-retry: the no-fail S-EPT removal issues BLOCK / TRACK / REMOVE once, without
tdh_do_no_vcpus()'s kick-and-retry: the code before 3d626ce5a8cc (docs/facts.md g.12), where a BUSY
from a running vCPU's TDX-module lock (TDH.VP.ENTER's zero-step S-EPT lock, its TD-epoch lock) hit
TDX_BUG_ON / KVM_BUG_ON."""

from .. import Variant


def tdh_do_no_vcpus(fn, kvm, *args):
    return (yield from fn(kvm.host, *args))  # BUG: no wait_for_sept_zap, no kick, no retry


VARIANT = Variant("bug-busy-no-retry",
                  "BLOCK/TRACK/REMOVE issued once: a BUSY from a vCPU inside TDH.VP.ENTER reaches TDX_BUG_ON",
                  {"tdh_do_no_vcpus": tdh_do_no_vcpus}, kind="mutant", catches=("busy-in-no-fail-path",),
                  reference="before 3d626ce5a8cc (docs/facts.md g.12)", check_scenario="conversion-storm")
