"""The hook table: kvm_x86_ops' TDX members plus the TDP MMU decisions the design question is about.

`default_ops()` is the merged kernel (E3 + DPAMT v6 when DPAMT is on), i.e. the `tdx-free` design.
A variant replaces entries by name; model code calls `kvm.ops.<name>(...)` only at these points.
Names are the kernel functions (or kvm_x86_ops members) they stand for.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

HOOKS = (
    # kvm_x86_ops members (E3: only set_external_spte and free_external_spt remain; E4 adds topup)
    "set_external_spte", "free_external_spt", "topup_external_cache", "split_external_spte",
    "need_topup_external_per_vm_split_cache", "topup_external_per_vm_split_cache",
    # TDX glue functions
    "tdx_sept_map_nonleaf_spte", "tdx_sept_map_leaf_spte", "tdx_sept_remove_leaf_spte", "tdx_track",
    "tdh_do_no_vcpus", "tdx_vcpu_init", "tdx_vcpu_run",
    # TDP MMU
    "__tdp_mmu_set_spte_atomic", "tdp_mmu_free_sp", "tdp_mmu_free_unused_sp", "tdp_mmu_schedule_free_sp",
    # kvm_mmu_memory_cache page_get/page_free for mmu_external_spt_cache (RFC v5 #20 wiring)
    "external_spt_cache_page_get", "external_spt_cache_page_free",
    # DPAMT v6: PAMT for an S-EPT page is taken right before SEPT.ADD (False: at allocation)
    "pamt_get_at_link",
    # fault path (fast_page_fault()'s lockless walk: walk_shadow_page_lockless_begin/end for the TDP MMU)
    "is_page_fault_stale", "kvm_tdp_mmu_walk_lockless_begin", "kvm_tdp_mmu_walk_lockless_end",
    # VM teardown order
    "kvm_arch_destroy_vm", "kvm_destroy_vm",
)


def default_ops() -> SimpleNamespace:
    """The merged kernel's hook table (E3, + DPAMT v6 when DPAMT is on): the tdx-free design."""
    from ..host import memcache
    from . import tdp_mmu, tdx, x86

    table: dict[str, Any] = {
        "set_external_spte": tdx.tdx_sept_set_private_spte,
        "free_external_spt": tdx.tdx_sept_free_private_spt,
        "topup_external_cache": tdx.tdx_topup_external_cache,
        "split_external_spte": tdx.tdx_sept_split_private_spte,
        "need_topup_external_per_vm_split_cache": tdx.tdx_need_topup_split_cache,
        "topup_external_per_vm_split_cache": tdx.tdx_topup_split_cache,
        "tdx_sept_map_nonleaf_spte": tdx.tdx_sept_map_nonleaf_spte,
        "tdx_sept_map_leaf_spte": tdx.tdx_sept_map_leaf_spte,
        "tdx_sept_remove_leaf_spte": tdx.tdx_sept_remove_leaf_spte,
        "tdx_track": tdx.tdx_track,
        "tdh_do_no_vcpus": tdx.tdh_do_no_vcpus,
        "tdx_vcpu_init": tdx.tdx_vcpu_init,
        "tdx_vcpu_run": x86.tdx_vcpu_run,
        "__tdp_mmu_set_spte_atomic": getattr(tdp_mmu, "__tdp_mmu_set_spte_atomic"),
        "tdp_mmu_free_sp": tdp_mmu.tdp_mmu_free_sp_e3,
        "tdp_mmu_free_unused_sp": tdp_mmu.tdp_mmu_free_unused_sp,
        "tdp_mmu_schedule_free_sp": tdp_mmu.call_rcu_free_sp,
        "external_spt_cache_page_get": memcache.default_page_get,
        "external_spt_cache_page_free": memcache.default_page_free,
        "pamt_get_at_link": True,
        "is_page_fault_stale": x86.is_page_fault_stale,
        "kvm_tdp_mmu_walk_lockless_begin": tdp_mmu.kvm_tdp_mmu_walk_lockless_begin,
        "kvm_tdp_mmu_walk_lockless_end": tdp_mmu.kvm_tdp_mmu_walk_lockless_end,
        "kvm_arch_destroy_vm": x86.kvm_arch_destroy_vm,
        "kvm_destroy_vm": x86.kvm_destroy_vm,
    }
    assert set(table) == set(HOOKS)
    return SimpleNamespace(**table)
