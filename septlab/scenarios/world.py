"""Assemble a modelled machine from a scenario: host, TDX module, KVM with a variant's hooks, tasks.

Tasks: `setup` (create and finalize the TD), one per vCPU, the `zapper`s (conversions, fast zaps;
a `before_finalize` one runs while the TD is built),
`destroy` (guest_memfd release and kvm_destroy_vm once every user is gone) and the `rcu` softirq.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from ..explore.runtime import Thread
from ..host.host import Host
from ..host.mm import do_vmi_munmap, folio_referenced, migrate_pages, mmu_notifier_register, zap_page_range_single
from ..host.probe import Probe
from ..host.progress import progress
from ..host.rcu import rcu_core
from ..host.task import OP_WAIT, Op, Task
from ..kernel import activate
from ..kvm.guest_memfd import kvm_gmem_convert_to_shared
from ..kvm.kvm_host import TD_STATE_RUNNABLE, Kvm
from ..kvm.kvm_main import KvmMmuNotifier, kvm_vm_ioctl_set_memory_region
from ..kvm.x86 import kvm_create_td, kvm_set_memory_region, kvm_vcpu_create, vcpu_run, vm_teardown
from ..tdx_module.module import TdxModule
from ..variants import Variant
from ..virt.dpamt import TdxHost
from . import Scenario


@dataclass
class World:
    host: Host
    kvm: Kvm
    threads: list[Thread]
    scenario: Scenario
    variant: Variant
    dpamt: bool


def _accesses(scn: Scenario, items: list[dict[str, Any]]) -> Iterator[tuple[int, bool, bool]]:
    """(gfn, private, the guest accepts it at 4 KiB) for each guest access of a vCPU.

    The plan is a tuple computed up front, so no generator frame holds the scenario's lists: a position
    holding a list or dict is recomputed at every state (explore/state.py). It is one (first gfn, count,
    private, accept 4K) run per access item, not one tuple per page: ~100 bytes a page at real sizes."""
    return _each(tuple((a["gfn"], scn.count(a.get("count")), not a.get("shared", False), a.get("accept") == "4K")
                       for a in items))


def _each(plan: tuple[tuple[int, int, bool, bool], ...]) -> Iterator[tuple[int, bool, bool]]:
    for gfn, count, private, accept_4k in plan:
        for i in range(count):
            yield gfn + i, private, accept_4k


def zapper_run(kvm: Kvm, scn: Scenario, ops: list[dict[str, Any]],
               before_finalize: bool = False) -> Generator[Op, object, int]:
    """A host task driving KVM_SET_MEMORY_ATTRIBUTES + PUNCH_HOLE and memslot updates: once the TD
    runs, or (`before_finalize`) once KVM_TDX_INIT_MEM_REGION returned, racing KVM_TDX_INIT_VCPU."""
    if before_finalize:
        yield Op(OP_WAIT, lambda: kvm.populated or kvm.bugged or kvm.setup_failed, "wait for KVM_TDX_INIT_MEM_REGION",
                 user=True)
    else:
        yield Op(OP_WAIT, lambda: kvm.tdx.state == TD_STATE_RUNNABLE or kvm.bugged or kvm.setup_failed,
                 "wait for TD_STATE_RUNNABLE", user=True)
    for op in ops:
        if kvm.setup_failed:
            break
        if "after" in op:
            vcpu = kvm.vcpus[op["after"]["vcpu"]]
            n = op["after"]["accesses"]
            yield Op(OP_WAIT, lambda v=vcpu, n=n: v.accesses_done >= n or kvm.bugged or kvm.setup_failed,
                     f"after vcpu{vcpu.vcpu_id} access #{n}", user=True)
        elif "zap_all_fast" in op:
            yield from kvm_set_memory_region(kvm)  # an MMIO-generation wrap: kvm_mmu_zap_all_fast()
        elif "memslot_recreate" in op:
            yield from kvm_vm_ioctl_set_memory_region(kvm, 0, scn.gfn_end)
        else:
            (name, r), = op.items()
            g = r["gfn"]
            yield from USERSPACE_OPS[name](kvm, g, g + scn.count(r.get("count")))
        progress(kvm.host, "the syscall returns")
    if before_finalize:
        kvm.setup_zappers -= 1
    kvm.users -= 1
    return 0


def ioctl_set_memory_attributes_shared(kvm: Kvm, start: int, end: int) -> Generator[Op, object, Any]:
    return (yield from kvm_gmem_convert_to_shared(kvm, start, end))


def sys_munmap(kvm: Kvm, start: int, end: int) -> Generator[Op, object, Any]:
    return (yield from do_vmi_munmap(kvm.host, start, end))


def sys_madvise_dontneed(kvm: Kvm, start: int, end: int) -> Generator[Op, object, Any]:
    return (yield from zap_page_range_single(kvm.host, start, end))


def sys_move_pages(kvm: Kvm, start: int, end: int) -> Generator[Op, object, Any]:
    return (yield from migrate_pages(kvm.host, start, end))


def kswapd_aging(kvm: Kvm, start: int, end: int) -> Generator[Op, object, Any]:
    return (yield from folio_referenced(kvm.host, start, end))


# Scenario ops on a gfn range: the host-userspace call each one is.
USERSPACE_OPS = {"convert_to_shared": ioctl_set_memory_attributes_shared, "munmap": sys_munmap,
                 "madvise_dontneed": sys_madvise_dontneed, "migrate": sys_move_pages, "age": kswapd_aging}


def build_world(scn: Scenario, variant: Variant, dpamt: bool, probe: Probe | None = None,
                history: bool | None = None) -> World:
    host = Host(probe=probe or Probe())
    host.history = {} if (scn.history if history is None else history) else None
    host.seam = TdxModule(dpamt=dpamt)
    host.tdx = TdxHost(dpamt=dpamt)
    host.patches = variant.patches()  # kernel functions the variant replaces outside the hook table
    activate(host.patches)
    kvm = Kvm(host, variant.build_ops(), cache_capacity=scn.cache_capacity)
    kvm.gmem_huge = bool(scn.data.get("hugepages", False))
    mmu_notifier_register(host.mm, KvmMmuNotifier(kvm))  # KVM_CREATE_VM: kvm_init_mmu_notifier()
    for item in scn.data.get("shared", []):  # KVM_SET_MEMORY_ATTRIBUTES(shared) before the TD runs
        kvm.shared_gfns.update(range(item["gfn"], item["gfn"] + scn.count(item.get("count"))))
    for i in range(scn.vcpus):
        kvm_vcpu_create(kvm, i)
    image = [(g, item.get("measure", True)) for item in scn.data.get("image", [])
             for g in range(item["gfn"], item["gfn"] + scn.count(item.get("count")))]
    threads = [Thread(Task("setup", "setup"), kvm_create_td(kvm, image))]
    zappers = 0
    for spec in scn.data["threads"]:
        if spec["kind"] == "vcpu":
            vcpu = kvm.vcpus[spec["vcpu"]]
            task = Task(f"vcpu{vcpu.vcpu_id}", "vcpu", vcpu=vcpu)
            threads.append(Thread(task, vcpu_run(kvm, vcpu, _accesses(scn, spec["access"]))))
        else:
            name = "zapper" if zappers == 0 else f"zapper{zappers}"
            zappers += 1
            early = bool(spec.get("before_finalize", False))
            kvm.setup_zappers += early
            threads.append(Thread(Task(name, "zapper"), zapper_run(kvm, scn, spec["ops"], early)))
    unused = [v for v in kvm.vcpus if not any(t.task.vcpu is v for t in threads)]
    kvm.users = scn.vcpus - len(unused) + zappers + 1  # vCPU fds in use, zappers, guest_memfd
    threads.append(Thread(Task("destroy", "destroy"), vm_teardown(kvm, 1)))
    rcu = host.rcu
    # The RCU softirq owes progress while a callback waits: a grace period is then in progress.
    threads.append(Thread(Task("rcu", "softirq", daemon=True, wants=lambda: bool(rcu.callbacks)), rcu_core(host)))
    for i, t in enumerate(threads):
        t.task.cpu = i
    return World(host, kvm, threads, scn, variant, dpamt)
