"""What septlab says: drive a fresh TdxModule into the state a case names, then issue the leaf.

States are reached by SEAMCALLs wherever septlab's model has a path to them (TDH.MNG.CREATE ...
TDH.MR.FINALIZE, SEPT.ADD, PAGE.ADD, AUG at 4K and 2M, BLOCK, TRACK, VP.FLUSH, VPFLUSHDONE, CACHE.WB,
KEY.FREEID). What the model cannot reach (REMOVED and the migration states of an S-EPT entry, a 2M
leaf that is not PENDING -- the model has no TDG.MEM.PAGE.ACCEPT --, 1G leaves, the migration
op-states, a lifecycle going backwards) is written into the model's state directly and the row says so
(`injected`): the module's tables still say what such a state allows, and septlab's answer there shows
what its checks would do if a variant got there.

The model is used directly (septlab.tdx_module.module.TdxModule): no kernel layer, no scheduler. Its
methods are looked up at call time, so a test can mutate a precondition and see the runner notice.
septlab's S-EPT state numbers are the module's sept_special_flags_lookup indices (tdx_module/sept.py;
the runner checks that), so a state septlab does not name is injected as its module index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..tdx_module import errno as E
from ..tdx_module.module import TdxModule
from ..tdx_module.pamt import PAGES_PER_2M, PT_REG
from ..tdx_module.sept import SEPT_NAMES, entry_key
from ..tdx_module.td import LIFECYCLE_NAMES, Td

# Pages and addresses of the fixtures: any distinct PT_NDA pfns do (DPAMT off: no PAMT_4K backing needed).
HKID = 1
# NEW and HUGE are 2 MiB-aligned with their whole 2 MiB range free: NEW is what a 2M AUG under test hands
# over, HUGE the page of a 2M leaf a fixture maps (or injects).
TDR, TDCS, TDVPR, TDCX, TDVPR2, TDCX2, DATA, NEW, INJECTED = 0x1000, 0x1001, 0x1010, 0x1011, 0x1012, 0x1013, \
    0x1100, 0x1200, 0x1680
HUGE = 0x1400
SEPT_PAGE = {2: 0x1022, 3: 0x1023, 4: 0x1024}
# A gfn whose index differs at every level, so an entry at the wrong level cannot stand in for another.
GFN = (2 << 27) | (3 << 18) | (4 << 9) | 5
ROOT = 4


def gfn_at(level: int) -> int:
    """GFN aligned to the size the entry at `level` maps: the GPA the kernel passes for a SEAMCALL on that
    entry (verify_page_info_input() refuses a GPA not aligned to the level; same entry as GFN's)."""
    return GFN & ~((1 << (9 * (level - 1))) - 1)


SEPT_VALUE = {name: value for value, name in SEPT_NAMES.items()}
LIFECYCLE_VALUE = {name: value for value, name in enumerate(LIFECYCLE_NAMES)}

DEMOTE = "TDH.MEM.PAGE.DEMOTE"
PAGE_ADD, SEPT_ADD, AUG, BLOCK, REMOVE, MR_EXTEND = ("TDH.MEM.PAGE.ADD", "TDH.MEM.SEPT.ADD", "TDH.MEM.PAGE.AUG",
                                                     "TDH.MEM.RANGE.BLOCK", "TDH.MEM.PAGE.REMOVE", "TDH.MR.EXTEND")


class FixtureError(Exception):
    """A SEAMCALL a fixture needs failed: septlab's model cannot reach the state the case names."""


@dataclass(slots=True)
class Fixture:
    """A module being driven, and what had to be written into it directly."""

    m: TdxModule = field(default_factory=TdxModule)
    injected: list[str] = field(default_factory=list)

    @property
    def td(self) -> Td:
        return self.m.tds[TDR]

    def ok(self, what: str, err: int | tuple[int, object]) -> None:
        code = err[0] if isinstance(err, tuple) else err
        if code:
            raise FixtureError(f"{what}: {E.err_desc(code)}")

    def stage(self, upto: str) -> Fixture:
        """Build the TD the way KVM does, up to `upto`: created, keys, initialized (one TDCS page and
        MNG.INIT), vcpu (one vCPU created, with a TDCX page, initialised and so associated)."""
        m = self.m
        order = ("created", "keys", "initialized", "vcpu")
        n = order.index(upto)
        self.ok("TDH.MNG.CREATE", m.tdh_mng_create(TDR, HKID))
        if n >= 1:
            self.ok("TDH.MNG.KEY.CONFIG", m.tdh_mng_key_config(TDR))
        if n >= 2:
            self.ok("TDH.MNG.ADDCX", m.tdh_mng_addcx(TDR, TDCS))
            self.ok("TDH.MNG.INIT", m.tdh_mng_init(TDR))
        if n >= 3:
            self.ok("TDH.VP.CREATE", m.tdh_vp_create(TDR, TDVPR))
            self.ok("TDH.VP.ADDCX", m.tdh_vp_addcx(TDVPR, TDCX))
            self.ok("TDH.VP.INIT", m.tdh_vp_init(TDVPR))
        return self

    def tables(self, down_to: int) -> None:
        """SEPT.ADD at levels ROOT .. down_to: the entries there are NL_MAPPED, the walk reaches down_to - 1."""
        for level in range(ROOT, down_to - 1, -1):
            self.ok(f"TDH.MEM.SEPT.ADD level {level}", self.m.tdh_mem_sept_add(TDR, GFN, level, SEPT_PAGE[level]))

    def block(self, level: int) -> None:
        self.ok(f"TDH.MEM.RANGE.BLOCK level {level}", self.m.tdh_mem_range_block(TDR, GFN, level))

    def finalize(self) -> None:
        self.ok("TDH.MR.FINALIZE", self.m.tdh_mr_finalize(TDR))

    def track(self) -> None:
        self.ok("TDH.MEM.TRACK", self.m.tdh_mem_track(TDR))

    def set_op_state(self, value: int, name: str) -> None:
        if self.td.op_state != value:
            self.td.op_state = value
            self.injected.append(f"op_state {name}")

    def inject_entry(self, name: str, index: int, level: int, leaf: bool, blocked: bool) -> None:
        """Write the entry's state; a leaf also gets its page (PT_REG, child count; at 2M the 2 MiB page
        HUGE, as PAGE.AUG at 2M assigns it) and, if blocked, the current epoch as its BLOCK epoch, as the
        module's own transitions would leave them. MODEL: a 1G leaf gets one 4 KiB page (no 1G leaves)."""
        td, key = self.td, entry_key(level, GFN)
        td.sept_state[key] = SEPT_VALUE.get(name, index)
        if leaf and level == 2:
            self.m.pamt.assign_2m(HUGE, PT_REG, TDR)
            td.child_count += PAGES_PER_2M
            td.sept_page[key] = HUGE
        elif leaf:
            self.m.pamt.assign(INJECTED, PT_REG, TDR)
            td.child_count += 1
            td.sept_page[key] = INJECTED
        if blocked:
            td.sept_bepoch[key] = td.td_epoch
        self.injected.append(f"{name} at level {level}")

    def to_lifecycle(self, name: str) -> None:
        """From TD_KEYS_CONFIGURED: TD_BLOCKED by VP.FLUSH of every associated vCPU (after its TD exit)
        and VPFLUSHDONE, plus CACHE.WB; TD_TEARDOWN by KEY.FREEID on top; TD_HKID_ASSIGNED (the lifecycle
        never goes back) is written directly."""
        m, td = self.m, self.td
        if name == "TD_KEYS_CONFIGURED" or td.lifecycle == LIFECYCLE_VALUE[name]:
            return
        if name == "TD_HKID_ASSIGNED":
            td.lifecycle = LIFECYCLE_VALUE[name]
            self.injected.append("lifecycle TD_HKID_ASSIGNED")
            return
        for tdvpr, vp in td.vcpus.items():
            if vp.in_guest_epoch >= 0:
                m.td_exit(tdvpr)
            if vp.associated:
                self.ok("TDH.VP.FLUSH", m.tdh_vp_flush(tdvpr))
        if td.lifecycle != LIFECYCLE_VALUE["TD_BLOCKED"]:
            self.ok("TDH.MNG.VPFLUSHDONE", m.tdh_mng_vpflushdone(TDR))
            self.ok("TDH.PHYMEM.CACHE.WB", m.tdh_phymem_cache_wb(False))
        if name == "TD_TEARDOWN":
            self.ok("TDH.MNG.KEY.FREEID", m.tdh_mng_key_freeid(TDR))


def _remove(m: TdxModule, level: int) -> int:
    return m.tdh_mem_page_remove(TDR, gfn_at(level), level)[0]


# The S-EPT leaves septlab models, issued on the entry at `level` of GFN, the GPA aligned to the level
# (a fresh PT_NDA page where one is handed over, its 2 MiB range free). MR.EXTEND has no level operand:
# it walks to whatever leaf maps GFN.
SEPT_CALLS: dict[str, Callable[[TdxModule, int], int]] = {
    PAGE_ADD: lambda m, level: m.tdh_mem_page_add(TDR, gfn_at(level), level, NEW),
    SEPT_ADD: lambda m, level: m.tdh_mem_sept_add(TDR, gfn_at(level), level, NEW),
    AUG: lambda m, level: m.tdh_mem_page_aug(TDR, gfn_at(level), level, NEW),
    BLOCK: lambda m, level: m.tdh_mem_range_block(TDR, gfn_at(level), level),
    REMOVE: _remove,
    DEMOTE: lambda m, level: m.tdh_mem_page_demote(TDR, gfn_at(level), level, NEW),
}
if hasattr(TdxModule, "tdh_mr_extend"):
    SEPT_CALLS[MR_EXTEND] = lambda m, level: m.tdh_mr_extend(TDR, GFN, 0)


def sept_fixture(name: str, index: int, leaf: bool, blocked: bool, level: int, op_state: str,
                 tracked: bool) -> Fixture:
    """A TD with one initialised vCPU in `op_state` (INITIALIZED or RUNNABLE), the entries above `level`
    NL_MAPPED and the entry at `level` in state `name`; `tracked`: TRACK after any BLOCK (RUNNABLE)."""
    fx = Fixture().stage("vcpu")
    fx.tables(level + 1)
    placed = name == "FREE"
    if name in ("NL_MAPPED", "NL_BLOCKED"):
        fx.ok(f"TDH.MEM.SEPT.ADD level {level}", fx.m.tdh_mem_sept_add(TDR, GFN, level, SEPT_PAGE[level]))
        if name == "NL_BLOCKED":
            fx.block(level)
        placed = True
    elif level == 1 and name in ("MAPPED", "BLOCKED"):
        fx.ok("TDH.MEM.PAGE.ADD", fx.m.tdh_mem_page_add(TDR, GFN, 1, DATA))
        if name == "BLOCKED":
            fx.block(1)
        placed = True
    if op_state == "RUNNABLE":
        fx.finalize()
        if not placed and level in (1, 2) and name in ("PENDING", "PENDING_BLOCKED"):
            page = DATA if level == 1 else HUGE
            fx.ok(f"TDH.MEM.PAGE.AUG level {level}", fx.m.tdh_mem_page_aug(TDR, gfn_at(level), level, page))
            if name == "PENDING_BLOCKED":
                fx.block(level)
            placed = True
    if not placed:
        fx.inject_entry(name, index, level, leaf, blocked)
    if tracked and op_state == "RUNNABLE":
        fx.track()
    return fx


def _vcpu2(fx: Fixture, addcx: bool) -> None:
    fx.ok("TDH.VP.CREATE", fx.m.tdh_vp_create(TDR, TDVPR2))
    if addcx:
        fx.ok("TDH.VP.ADDCX", fx.m.tdh_vp_addcx(TDVPR2, TDCX2))


def _mapped_4k(fx: Fixture) -> None:
    fx.tables(2)
    fx.ok("TDH.MEM.PAGE.ADD", fx.m.tdh_mem_page_add(TDR, GFN, 1, DATA))


def _blocked_tracked_4k(fx: Fixture) -> None:
    _mapped_4k(fx)
    fx.block(1)
    fx.track()


# Per TD-scoped leaf: what to prepare before MR.FINALIZE so every precondition but the one under test
# holds, and the call itself. Leaves whose home is before MNG.INIT are built separately (op_fixture).
TdCall = Callable[[TdxModule], int]
TD_LEAVES: dict[str, tuple[Callable[[Fixture], None] | None, TdCall]] = {
    "TDH.VP.ENTER": (None, lambda m: m.tdh_vp_enter(TDVPR)),
    "TDH.MNG.ADDCX": (None, lambda m: m.tdh_mng_addcx(TDR, NEW)),
    PAGE_ADD: (lambda fx: fx.tables(2), lambda m: m.tdh_mem_page_add(TDR, GFN, 1, NEW)),
    SEPT_ADD: (None, lambda m: m.tdh_mem_sept_add(TDR, GFN, ROOT, NEW)),
    "TDH.VP.ADDCX": (lambda fx: _vcpu2(fx, False), lambda m: m.tdh_vp_addcx(TDVPR2, NEW)),
    AUG: (lambda fx: fx.tables(2), lambda m: m.tdh_mem_page_aug(TDR, GFN, 1, NEW)),
    BLOCK: (_mapped_4k, lambda m: m.tdh_mem_range_block(TDR, GFN, 1)),
    "TDH.VP.CREATE": (None, lambda m: m.tdh_vp_create(TDR, NEW)),
    "TDH.MR.FINALIZE": (None, lambda m: m.tdh_mr_finalize(TDR)),
    "TDH.VP.FLUSH": (None, lambda m: m.tdh_vp_flush(TDVPR)),
    "TDH.MNG.INIT": (None, lambda m: m.tdh_mng_init(TDR)),
    "TDH.VP.INIT": (lambda fx: _vcpu2(fx, True), lambda m: m.tdh_vp_init(TDVPR2)),
    REMOVE: (_blocked_tracked_4k, lambda m: _remove(m, 1)),
    "TDH.MEM.TRACK": (None, lambda m: m.tdh_mem_track(TDR)),
}
if MR_EXTEND in SEPT_CALLS:
    TD_LEAVES[MR_EXTEND] = (_mapped_4k, lambda m: m.tdh_mr_extend(TDR, GFN, 0))

# The op-state KVM issues each leaf in: the fixture the lifecycle table starts from.
HOME_OP_STATE = {"TDH.VP.ENTER": "RUNNABLE", "TDH.MNG.ADDCX": "UNINITIALIZED", PAGE_ADD: "INITIALIZED",
                 SEPT_ADD: "RUNNABLE", "TDH.VP.ADDCX": "INITIALIZED", AUG: "RUNNABLE", BLOCK: "RUNNABLE",
                 "TDH.VP.CREATE": "INITIALIZED", MR_EXTEND: "INITIALIZED", "TDH.MR.FINALIZE": "INITIALIZED",
                 "TDH.VP.FLUSH": "RUNNABLE", "TDH.MNG.INIT": "UNINITIALIZED", "TDH.VP.INIT": "INITIALIZED",
                 REMOVE: "RUNNABLE", "TDH.MEM.TRACK": "RUNNABLE"}


def op_fixture(leaf: str, op_state: str, op_value: int) -> tuple[Fixture, TdCall]:
    """A TD where `leaf` meets every precondition except, possibly, its op-state, which is `op_state`:
    reached by MNG.INIT / MR.FINALIZE where the model can, written directly otherwise."""
    prep, call = TD_LEAVES[leaf]
    if leaf in ("TDH.MNG.ADDCX", "TDH.MNG.INIT") and op_state == "UNINITIALIZED":
        fx = Fixture().stage("keys")
        if leaf == "TDH.MNG.INIT":
            fx.ok("TDH.MNG.ADDCX", fx.m.tdh_mng_addcx(TDR, TDCS))
        return fx, call
    fx = Fixture().stage("vcpu")
    if prep is not None:
        prep(fx)
    if op_state == "RUNNABLE":
        fx.finalize()
    elif op_state != "INITIALIZED":
        fx.set_op_state(op_value, op_state)
    return fx, call


def lifecycle_fixture(leaf: str, context: str, lifecycle: str) -> tuple[Fixture, TdCall]:
    """A TD where `leaf` meets every precondition but the lifecycle, which is `lifecycle`. `context`
    tells the two RECLAIM cases apart (a TDCS page, or the TDR of a TD without children)."""
    m_leaf = {"TDH.MNG.KEY.CONFIG": lambda m: m.tdh_mng_key_config(TDR),
              "TDH.MNG.VPFLUSHDONE": lambda m: m.tdh_mng_vpflushdone(TDR),
              "TDH.MNG.KEY.FREEID": lambda m: m.tdh_mng_key_freeid(TDR),
              "TDH.PHYMEM.PAGE.RECLAIM": lambda m: m.tdh_phymem_page_reclaim(TDR if context == "TDR page" else TDCS)}
    if leaf in m_leaf:
        if lifecycle == "TD_HKID_ASSIGNED" and not (leaf == "TDH.PHYMEM.PAGE.RECLAIM" and context == "TDCS page"):
            return Fixture().stage("created"), m_leaf[leaf]
        base = {"TDH.MNG.KEY.CONFIG": "created", "TDH.MNG.VPFLUSHDONE": "vcpu", "TDH.MNG.KEY.FREEID": "vcpu"}
        fx = Fixture().stage(base.get(leaf, "keys" if context == "TDR page" else "initialized"))
        if leaf == "TDH.MNG.KEY.CONFIG":
            if lifecycle != "TD_HKID_ASSIGNED":
                fx.ok("TDH.MNG.KEY.CONFIG", fx.m.tdh_mng_key_config(TDR))
        elif leaf == "TDH.MNG.VPFLUSHDONE":
            fx.ok("TDH.VP.FLUSH", fx.m.tdh_vp_flush(TDVPR))
        fx.to_lifecycle(lifecycle)
        return fx, m_leaf[leaf]
    if leaf in ("TDH.MNG.ADDCX", "TDH.MNG.INIT") and lifecycle == "TD_HKID_ASSIGNED":
        return Fixture().stage("created"), TD_LEAVES[leaf][1]
    fx, call = op_fixture(leaf, HOME_OP_STATE[leaf], -1)
    fx.to_lifecycle(lifecycle)
    return fx, call
