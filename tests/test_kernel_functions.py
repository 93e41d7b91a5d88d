"""Any kernel function of the kvm/ and virt/ layers is replaceable by its kernel name (septlab/kernel.py)."""

from __future__ import annotations

import pytest

from septlab import kernel as K
from septlab.explore.driver import run_batch, run_schedule
from septlab.scenarios import load_scenario
from septlab.variants import Variant, VariantError, get_variant, validate_variant
from tests.test_cli import septlab


def _no_put(host, pfn):
    """tdx_pamt_put() that forgets to drop the reference."""
    return None
    yield  # pragma: no cover


NO_PUT = Variant("no-pamt-put", "tdx_pamt_put does nothing", {"tdx_pamt_put": _no_put}, kind="mutant")


def test_every_layer_function_is_listed_with_its_kernel_file():
    table = K.kernel_functions()
    for name, path in (("handle_removed_pt", "arch/x86/kvm/mmu/tdp_mmu.c"), ("tdx_pamt_put", "arch/x86/virt/vmx/tdx/tdx.c"),
                       ("tdx_sept_reclaim_or_leak", "arch/x86/kvm/vmx/tdx.c"), ("kvm_gmem_truncate", "virt/kvm/guest_memfd.c"),
                       ("__tdp_mmu_set_spte_atomic", "arch/x86/kvm/mmu/tdp_mmu.c")):
        assert table[name].kernel_file == path
    assert "default_ops" not in table and not any(n.startswith("_") and not n.startswith("__") for n in table)
    p = septlab("hooks", "--grep", "handle_removed")
    assert p.returncode == 0 and "handle_removed_pt" in p.stdout and "tdp_mmu.c" in p.stdout


def test_overriding_a_non_hook_function_changes_the_run_and_is_undone_after():
    validate_variant(NO_PUT, "test")
    scn = load_scenario("seed")
    assert run_batch(scn, NO_PUT, True, 0, 3).counts.get("pamt-refcount") == 3
    assert run_batch(scn, get_variant("tdx-free"), True, 0, 3).verdict.kind == "complete"
    import septlab.virt.dpamt as D

    assert D.tdx_pamt_put is K.original("tdx_pamt_put") and K.active() is None


def test_worlds_of_two_variants_step_with_their_own_functions():
    """Build A, then B, then run A: A's patch set is re-activated before it steps."""
    from septlab.check.invariants import Checker
    from septlab.explore.choosers import RandomChooser
    from septlab.explore.runtime import Runtime
    from septlab.scenarios.world import build_world

    scn = load_scenario("seed")
    ca = Checker()
    a = build_world(scn, NO_PUT, True, ca)
    ca.attach(a)
    run_schedule(scn, get_variant("tdx-free"), True, 0)  # activates tdx-free's (empty) set
    out = Runtime(a.host, a.threads, RandomChooser(0, scn.fault_rate), scn.faults, scn.max_steps).run()
    ca.finish(out.status, out.steps, out.blocked)
    assert any(v.invariant == "pamt-refcount" for v in ca.violations)


def test_an_override_can_wrap_the_original():
    calls = []

    def handle_removed_pt(*args):
        """Count, then do what the kernel does."""
        calls.append(args[1:])
        return (yield from K.original("handle_removed_pt")(*args))

    v = Variant("counting", "counts handle_removed_pt", {"handle_removed_pt": handle_removed_pt})
    validate_variant(v, "test")
    r = run_schedule(load_scenario("seed"), v, False, 0, history=False)
    assert r.verdict.kind == "complete" and calls


def test_kernel_function_overrides_are_checked_against_the_model_function():
    def plain(host, pfn):
        return None

    with pytest.raises(VariantError, match="tdx_pamt_put.*generator"):
        validate_variant(Variant("bad", "x", {"tdx_pamt_put": plain}), "bad.py")
    with pytest.raises(VariantError, match="neither a kvm_x86_ops hook"):
        validate_variant(Variant("bad", "x", {"no_such_function": plain}), "bad.py")


def test_check_explores_with_the_patch_set():
    from septlab.explore.exhaustive import CheckOptions, run_check

    scn = load_scenario("boot-teardown", small=True)
    res = run_check(scn, NO_PUT, True, CheckOptions(strategy="dfs", preemptions=0))
    assert res.violation is not None and res.violation.invariant == "pamt-refcount"


def test_vcpu_free_with_hkid_assigned_skips_pages_never_allocated():
    """tdx_vcpu_free() with the HKID still assigned just returns in the kernel; a vCPU whose TDVPR was never
    allocated (creation failed, or KVM_TDX_INIT_VCPU never ran) has nothing to leak. The model leaked
    "page -1" and crashed with KeyError (found by a variant that never releases the HKID)."""
    from septlab.host.task import Task
    from septlab.kvm.kvm_host import is_hkid_assigned
    from septlab.kvm.tdx import tdx_vcpu_free
    from septlab.kvm.x86 import kvm_vcpu_create
    from septlab.scenarios.world import build_world

    w = build_world(load_scenario("boot-teardown", {"memory": "16KiB"}), get_variant("tdx-free"), False)
    setup = w.threads[0]
    w.host.current = setup.task
    for _ in setup.gen:  # KVM_CREATE_VM .. KVM_TDX_INIT_VM: the TD exists and has its HKID
        pass
    assert is_hkid_assigned(w.kvm.tdx)
    vcpu = kvm_vcpu_create(w.kvm, 1)  # KVM_CREATE_VCPU after the TD is built, never KVM_TDX_INIT_VCPU'd
    assert vcpu.tdvpr < 0 and vcpu.cpu == -1
    w.host.current = Task("destroy", "destroy")
    gen = tdx_vcpu_free(vcpu)
    with pytest.raises(StopIteration):
        next(gen)
