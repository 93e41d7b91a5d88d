"""bug-double-free-external-spt: patch 17/17 half-applied: TDX code frees external_spt after RECLAIM
but leaves the pointer set (as bug-stale-external-spt), and the RCU callback, still the E1/E2
tdp_mmu_free_sp(), frees it again."""

from .. import Variant
from ..rcu_free import tdp_mmu_free_sp
from .stale_external_spt import tdx_sept_free_private_spt

VARIANT = Variant("bug-double-free-external-spt", "external_spt freed in TDX code and again in the RCU callback",
                  {"free_external_spt": tdx_sept_free_private_spt, "tdp_mmu_free_sp": tdp_mmu_free_sp},
                  kind="mutant", catches=("double-free",))
