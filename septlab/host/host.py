"""The host: `current`, the step clock, pages, RCU, lockdep, KASAN and WARN, and the probe.

One Host per modelled machine. The explorer sets `current` and `clock` before resuming a task; model
code reads them the way kernel code reads `current` and never advances them itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..intmap import ByteIntMap
from .locks import Lockdep
from .mm import MmStruct
from .page_alloc import OWNER_NAMES, PageAllocator, PageEvent
from .probe import Probe
from .rcu import Rcu
from .task import Task, callchain


@dataclass(slots=True)
class Host:
    probe: Probe = field(default_factory=Probe)
    pages: PageAllocator = field(default_factory=PageAllocator)
    rcu: Rcu = field(default_factory=Rcu)
    lockdep: Lockdep = field(default_factory=Lockdep)
    history: dict[int, list[PageEvent]] | None = None
    current: Task = field(default_factory=lambda: Task("init", "init"))
    current_cb: Any = None
    clock: int = 0
    # Tasks (bit = Task.cpu) that made progress in kernel terms during the step being run: set by
    # host/progress.py, read and cleared by the explorer that records the state graph's edges.
    progressed: int = 0
    seam: Any = None  # the TDX module (septlab.tdx_module.module.TdxModule)
    faults_injected: int = 0  # non-BUSY SEAMCALL failures injected so far (they explain later WARNs)
    injections: int = 0  # every injected SEAMCALL failure (the scenario's max_faults budget counts these)
    # pfn -> HKID whose (possibly dirty) cache lines the page may still hold; 0 is the TDX global
    # private KeyID (the TDR). Set when a TD gets the page, cleared by PAGE.WBINVD with that HKID or
    # CACHE.WB (septlab/virt/td_keys.py). Hardware state, part of the explorer's canonical state.
    # One entry per TD page: a ByteIntMap (septlab/intmap.py), 1 byte a page at real sizes. HKIDs fit:
    # KVM's __tdx_td_init() numbers them 1, 2, ... per world (host.tdx.hkids; a world has one TD), the
    # TDR's is 0, and tests use single digits (real TDX KeyIDs are a few bits too). A world making a
    # 255th TD would get TypeError on its first gifted page, not a truncated HKID.
    td_keyed: ByteIntMap = field(default_factory=ByteIntMap)
    # Causal record of injected failures (check/invariants.py explains a report only through it):
    # key -> (leaf, error, step, task) of the injected SEAMCALL. Keys: a pfn (that page's state is
    # the failure's doing), ("gfn", gfn), "td" (the TD chain: the VM was bugged / a TD page left
    # behind), ("pamt", pfn) (a PAMT reference the kernel keeps on purpose after the failure),
    # ("freed", pfn) (a guest page the kernel gave up on after its failed removal: guest_memfd freed it),
    # ("epoch", 0) (a TRACK failed: the TD's TLB epoch was not advanced).
    fault_causes: dict[Any, tuple[str, str, int, str]] = field(default_factory=dict)
    tdx: Any = None  # host TDX state of arch/x86/virt/vmx/tdx (septlab.virt.dpamt.TdxHost)
    mm: MmStruct = field(default_factory=MmStruct)  # the VMM's address space (shared guest memory)
    patches: Any = None  # the variant's kernel-function patch set (septlab.kernel.PatchSet), active while stepping
    # pfn -> (task, step, chain) of the last alloc and free, for KASAN-style reports without history.
    last_alloc: dict[int, tuple[str, int, tuple[str, ...]]] = field(default_factory=dict)
    last_free: dict[int, tuple[str, int, tuple[str, ...]]] = field(default_factory=dict)

    def page_event(self, pfn: int, what: str, kind: str = "") -> None:
        """Append to the page's history (only called when history is on)."""
        chain = callchain()
        rec = PageEvent(self.clock, self.current.name, what, chain)
        self.history.setdefault(pfn, []).append(rec)  # type: ignore[union-attr]
        if kind == "alloc":
            self.last_alloc[pfn] = (self.current.name, self.clock, chain)
        elif kind == "free":
            self.last_free[pfn] = (self.current.name, self.clock, chain)

    def kasan_report(self, kind: str, pfn: int, what: str, write: bool = False) -> None:
        """BUG: KASAN: <kind> — the access, plus where the page was allocated and freed."""
        task = self.current
        self.probe.report(
            kind, f"BUG: KASAN: {kind} in {what}",
            pfn=pfn, access="Write" if write else "Read", task=task.name, chain=callchain(),
            in_rcu_reader=task.rcu_nesting > 0, in_softirq=task.in_softirq,
            owner=OWNER_NAMES[self.pages.state(pfn)])

    def warn(self, site: str, msg: str, **details: Any) -> None:
        """WARN_ON_ONCE(): report and continue."""
        self.probe.report("WARN", f"WARNING: {site}: {msg}", site=site, task=self.current.name,
                          chain=callchain(), **details)
