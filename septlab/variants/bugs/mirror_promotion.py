"""bug-mirror-promotion: the fault path may replace a mirror page table with a 2 MiB leaf (hugepage
promotion), without "KVM: x86/mmu: Prevent hugepage promotion for mirror roots in fault path". The
fault's atomic update turns a present non-leaf mirror SPTE into a leaf: the TDX hook sees a present
old SPTE, treats it as a removal (which needs mmu_lock for write: the fault holds it for read) and
TDH.MEM.PAGE.PROMOTE is never issued -- the S-EPT and the mirror diverge."""

from .. import Variant


def disallowed_hugepage_adjust(fault, spte, level, mirror):
    return None  # BUG: a present mirror table no longer lowers the goal level


VARIANT = Variant("bug-mirror-promotion", "fault path promotes a mirror page table to a 2 MiB leaf",
                  {"disallowed_hugepage_adjust": disallowed_hugepage_adjust}, kind="mutant",
                  catches=("lockdep-assert",),
                  reference="'Prevent hugepage promotion for mirror roots in fault path' (hugepage series)",
                  check_scenario="hugepage")
