"""Metrics collected from probe events; plain data, merged across schedules by summing/maxing.

retained_page_steps: for every S-EPT page, the steps between its successful TDH.PHYMEM.PAGE.RECLAIM
and its return to the allocator, summed -- the memory cost of deferring the free (the design question).
retained_page_gps is the same in RCU grace periods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..host.page_alloc import N_OWNERS, OWNER_NAMES
from ..tdx_module import errno as E

SERIES_MAX = 4000
_LEAF_NAME: dict[int, str] = {}  # leaf -> E.leaf_name(leaf), filled as leaves are counted
RETAINED_SERIES_MAX = 50_000


def _held(p: tuple[int, int]) -> int:
    return p[1]


@dataclass
class Metrics:
    steps: int = 0
    peak_pages: int = 0
    peak_by_owner: list[int] = field(default_factory=lambda: [0] * N_OWNERS)
    retained_page_steps: int = 0
    retained_page_gps: int = 0
    sept_pages_reclaimed: int = 0
    seamcalls: dict[str, int] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    rcu_callbacks: int = 0
    grace_periods: int = 0
    pamt_add: int = 0
    pamt_remove: int = 0
    peak_pamt_refs: int = 0  # 4K pages holding a DPAMT reference at once (speculative PAMT shows here)
    splits: int = 0  # 2 MiB mirror mappings demoted (successful TDH.MEM.PAGE.DEMOTE)
    split_pamt_pages: int = 0  # PAMT pages those DEMOTEs installed for the new 4 KiB level (DPAMT)
    leaked_pages: int = 0
    leak_reasons: dict[str, int] = field(default_factory=dict)
    series: list[tuple[int, int]] = field(default_factory=list)  # (step, host pages in use)
    # (step, reclaimed S-EPT pages not yet freed): the memory the design question is about, for plots
    retained_series: list[tuple[int, int]] = field(default_factory=list)
    _series_stride: int = 1
    _retained_stride: int = 1

    def sample(self, step: int, in_use: int) -> None:
        s = self.series
        if s and s[-1][0] == step:
            s[-1] = (step, in_use)
            return
        if s and step - s[-1][0] < self._series_stride:
            return
        s.append((step, in_use))
        if len(s) >= SERIES_MAX:  # decimate: keep every other point, double the stride
            self.series = s[::2]
            self._series_stride *= 2

    def sample_retained(self, step: int, held: int) -> None:
        """A long run's series is thinned (pairs merged, the stride doubled) keeping each pair's larger
        value: the peak a compare reports survives, where truncating lost a 64 GiB teardown's second half."""
        s = self.retained_series
        if s and (s[-1][0] == step or step - s[-1][0] < self._retained_stride):
            if s[-1][0] == step or held >= s[-1][1]:
                s[-1] = (s[-1][0], held)
            return
        s.append((step, held))
        if len(s) >= RETAINED_SERIES_MAX:
            self.retained_series = [max(s[i:i + 2], key=_held) for i in range(0, len(s), 2)]
            self._retained_stride *= 2

    def count_seamcall(self, leaf: int, err: int, injected: bool) -> None:
        name = _LEAF_NAME.get(leaf)  # the names of the leaves seen so far: no call per SEAMCALL
        if name is None:
            name = _LEAF_NAME[leaf] = E.leaf_name(leaf)
        s = self.seamcalls
        s[name] = s.get(name, 0) + 1
        if injected:
            self.injected[name] = self.injected.get(name, 0) + 1
        elif not err:
            if leaf == E.TDH_PHYMEM_PAMT_ADD:
                self.pamt_add += 1
            elif leaf == E.TDH_PHYMEM_PAMT_REMOVE:
                self.pamt_remove += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "peak_pages": self.peak_pages,
            "peak_pages_by_owner": {OWNER_NAMES[i]: v for i, v in enumerate(self.peak_by_owner) if i},
            "retained_page_steps": self.retained_page_steps,
            "retained_page_gps": self.retained_page_gps,
            "sept_pages_reclaimed": self.sept_pages_reclaimed,
            "seamcalls": dict(sorted(self.seamcalls.items())),
            "injected_faults": dict(sorted(self.injected.items())),
            "rcu_callbacks": self.rcu_callbacks,
            "grace_periods": self.grace_periods,
            "pamt_add": self.pamt_add,
            "pamt_remove": self.pamt_remove,
            "peak_pamt_refs": self.peak_pamt_refs,
            "splits": self.splits,
            "split_pamt_pages": self.split_pamt_pages,
            "leaked_pages": self.leaked_pages,
            "leak_reasons": dict(sorted(self.leak_reasons.items())),
        }


def merge(ms: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-schedule metrics: peaks are maxima, everything else is summed."""
    out: dict[str, Any] = {}
    for m in ms:
        for k, v in m.items():
            if isinstance(v, dict):
                d = out.setdefault(k, {})
                for kk, vv in v.items():
                    d[kk] = max(d.get(kk, 0), vv) if k.startswith("peak") else d.get(kk, 0) + vv
            elif k.startswith("peak"):
                out[k] = max(out.get(k, 0), v)
            else:
                out[k] = out.get(k, 0) + v
    for k, v in out.items():
        if isinstance(v, dict):
            out[k] = dict(sorted(v.items()))
    return out
