"""bug-zap-yield-restart: after __tdp_mmu_zap_root() yields mmu_lock, the walk restarts from the start
of the root instead of at the gfn where it yielded (iter->yielded_gfn, tdp_iter_restart()). Every restart
finds the tables it already emptied, makes no forward progress, and yields again: the zap never ends. The
kernel's iterator remembers yielded_gfn and refuses to yield twice at one gfn for exactly this reason
("ensure forward progress", tdp_mmu_iter_cond_resched())."""

from ...host.rcu import rcu_dereference_splat
from ...kvm.spte import PT_PRESENT_MASK, SPTE_ENT_PER_PAGE
from ...kvm.tdp_mmu import TdpIter, sp_entry_gfn, tdp_mmu_iter_cond_resched, tdp_mmu_next_zap_table, tdp_mmu_zap_spte
from .. import Variant


def __tdp_mmu_zap_root(kvm, root, shared, zap_level):
    host = kvm.host
    gfn = 0
    moved = False
    while True:
        if not host.current.rcu_nesting:
            rcu_dereference_splat(host, "__tdp_mmu_zap_root: kvm_tdp_mmu_read_spte(sptep)")
        table = tdp_mmu_next_zap_table(root, gfn, zap_level, kvm.sp_by_spt, host)
        if table is None:
            return 0
        if moved:
            yield from tdp_mmu_iter_cond_resched(kvm, shared)
            moved = False
            gfn = 0  # BUG: tdp_iter_restart() from the walk's start, not from iter->yielded_gfn
            continue
        for i in [i for i, v in enumerate(table.sptes) if v & PT_PRESENT_MASK]:
            if table.sptes[i] & PT_PRESENT_MASK:
                yield from tdp_mmu_zap_spte(kvm, TdpIter(table, i, zap_level, sp_entry_gfn(table, i), table.sptes[i]),
                                            shared)
        gfn = table.gfn + SPTE_ENT_PER_PAGE ** zap_level
        moved = True


VARIANT = Variant("bug-zap-yield-restart", "a root zap that yields restarts from the root's first gfn: no forward "
                  "progress, the zap never ends",
                  {"__tdp_mmu_zap_root": __tdp_mmu_zap_root}, kind="mutant", catches=("soft-lockup",),
                  reference="tdp_mmu_iter_cond_resched(): yield only after forward progress, restart at "
                            "iter->yielded_gfn (tdp_iter_restart)",
                  check_scenario="zap-yield")
