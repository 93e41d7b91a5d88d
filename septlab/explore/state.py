"""Canonical state of a running world: model data plus every task's position in its generator chain.

Generators cannot be copied, so the exhaustive explorer re-executes choice prefixes and identifies
states by this canonical form: a nested tuple of ints only (strings are CRC32'd, objects become ids),
so its hash is stable across processes (checkpoints) and its 64-bit value is the fingerprint.
Task positions are (code, f_lasti, canonical locals) for each frame of the yield-from chain; the step
clock, histories and metrics are not state (two runs reaching the same data and positions at
different steps are the same state).
"""

from __future__ import annotations

import zlib
from array import array
from types import FunctionType, GeneratorType
from typing import Any

from ..host.task import Op, Task
from ..intmap import INTMAP_TYPES
from ..kvm.kvm_host import Kvm, KvmTdx, KvmVcpu
from ..kvm.kvm_main import KvmMmuNotifier
from ..kvm.mmu_page import KvmMmuPage
from ..kvm.tdp_mmu import KvmPageFault, TdpIter
from .traced import TRACED_TYPES

_CODE: dict[int, int] = {}
_STR: dict[str, int] = {}


def _s(x: str) -> int:
    v = _STR.get(x)
    if v is None:
        v = _STR[x] = zlib.crc32(x.encode())
    return v


def _code(code: Any) -> int:
    v = _CODE.get(id(code))
    if v is None:
        v = _CODE[id(code)] = zlib.crc32(f"{code.co_filename.rsplit('septlab', 1)[-1]}:{code.co_qualname}".encode())
    return v


_OPAQUE = (Kvm, KvmTdx, Op, KvmMmuNotifier)


def canon(v: Any) -> Any:
    """Canonical, int-only form of a local variable's value."""
    if v is None or isinstance(v, int):
        return v
    t = type(v)
    if t is str:
        return _s(v)
    if t is tuple:
        return tuple(canon(x) for x in v)
    if t is list:
        _SHARED[0] = True
        return tuple(canon(x) for x in v)
    if t is array or t is bytearray:  # an SPTE table or page-owner array held in a local: ints
        _SHARED[0] = True
        return tuple(v)
    if t is KvmMmuPage:
        return (1, v.sp_id)
    if t is TdpIter:
        _MUTABLE[0] = True
        return (2, v.sp.sp_id, v.idx, v.level, v.gfn, v.old_spte)
    if t is KvmPageFault:
        _MUTABLE[0] = True
        return (3, v.gfn, v.is_private, v.pfn, v.mmu_seq)
    if t is KvmVcpu:
        return (4, v.vcpu_id)
    if t is GeneratorType:
        _MUTABLE[0] = True
        return gen_position(v)
    if t is FunctionType:
        return (5, _code(v.__code__))
    if t is dict or t in INTMAP_TYPES:
        _SHARED[0] = True
        return tuple(sorted((canon(k), canon(x)) for k, x in v.items()))
    if t is float:
        return (6, hash(v))
    if t is Task:
        return (7, _s(v.name))
    if t in TRACED_TYPES:  # a container seen through the footprint tracer (explore/traced.py)
        return canon(v._c)
    if isinstance(v, _OPAQUE) or t.__module__.startswith(("septlab.host", "septlab.tdx_module", "septlab.virt",
                                                            "septlab.scenarios", "septlab.variants", "types")):
        return 0  # structural singletons of the world (host, module, caches, the scenario)
    raise TypeError(f"septlab.explore.state: no canonical form for {t.__module__}.{t.__qualname__}")


# Set by canon() when a value is a list or dict: it may be the world's own object (a local alias of
# sp.sptes, a cache's list), which another task's step can change -- a position holding one is not cached.
_SHARED = [False]
# Set by canon() for objects a callee may change while the caller's frame is suspended in `yield from`
# (a TdpIter whose old_spte a failed cmpxchg refreshes, a page fault, a generator passed down).
_MUTABLE = [False]


def task_position(gen: GeneratorType, frames: dict[int, Any] | None = None) -> tuple[tuple, bool]:
    """(gen_position(gen), whether it can only change when this task steps).

    `frames` caches the part of each frame suspended in `yield from`: such a frame has not run since it
    started delegating to that very generator object (only the innermost frame of a chain moves), so its
    (code, f_lasti, locals) is reused while gi_yieldfrom is the same object -- unless its locals hold
    something shared or mutable by the callee. Entries keep the generators alive, so ids are not reused."""
    _SHARED[0] = False
    out: list[Any] = []
    stable = True
    while gen is not None:
        fr = gen.gi_frame
        if fr is None:
            out.append(-1)
            break
        yf = gen.gi_yieldfrom
        ent = frames.get(id(gen)) if frames is not None and yf is not None else None
        if ent is not None and ent[0] is gen and ent[1] is yf:
            out.extend(ent[2])
        else:
            shared, _SHARED[0], _MUTABLE[0] = _SHARED[0], False, False
            part = _frame(gen, fr)
            out.extend(part)
            if frames is not None and yf is not None and not _SHARED[0] and not _MUTABLE[0]:
                frames[id(gen)] = (gen, yf, part)
            stable = stable and not _SHARED[0]
            _SHARED[0] = shared or _SHARED[0]
        gen = yf  # type: ignore[assignment]
    return tuple(out), stable and not _SHARED[0]


def _frame(gen: GeneratorType, fr: Any) -> tuple:
    # sorted: f_locals is refreshed in place (PyFrame_FastToLocals), so a local unbound at an earlier
    # read and bound now moves to the end -- the dict's order depends on when the frame was read before,
    # i.e. on the path (a replayed state and the same state reached step by step differed)
    return (_code(gen.gi_code), fr.f_lasti,
            tuple(sorted((_s(k), canon(x)) for k, x in fr.f_locals.items() if k[0] != "_")))


def gen_position(gen: GeneratorType) -> tuple:
    out: list[Any] = []
    while gen is not None:
        fr = gen.gi_frame
        if fr is None:
            out.append(-1)
            break
        out.extend(_frame(gen, fr))
        gen = gen.gi_yieldfrom  # type: ignore[assignment]
    return tuple(out)


def _sp(sp: KvmMmuPage) -> tuple:
    return (sp.sp_id, sp.spt, sp.level, sp.gfn, sp.is_mirror, sp.external_spt, sp.invalid, sp.root_count,
            sp.is_root, sp.linked, sp.unlinked, sp.freed, tuple(sp.sptes))


def _cause_key(k: Any) -> tuple[int, int]:
    """host.fault_causes keys as ints: pfn, "td", ("gfn", g), ("pamt", pfn), ("freed", pfn), ("epoch", 0)."""
    if isinstance(k, int):
        return (0, k)
    if k == "td":
        return (1, 0)
    return ({"gfn": 2, "pamt": 3, "freed": 4, "epoch": 5}[k[0]], k[1])


def world_state(world: Any, threads: list[Any], checker: Any, positions: Any = None) -> tuple:
    """The canonical state tuple (full-state mode stores this; fingerprint mode stores its hash).
    `positions(i, thread)`, if given, supplies task i's generator position (a cache: explore/executor.py)."""
    host = world.host
    kvm: Kvm = world.kvm
    pa = host.pages
    rcu = host.rcu
    seam = host.seam
    th = host.tdx
    names = {t.task.name: i for i, t in enumerate(threads)}
    pos = positions or (lambda i, t: gen_position(t.gen))
    tasks = tuple((t.done, pos(i, t) if not t.done else (), tuple(_s(c) for c in t.task.ctx),
                   tuple((_s(n), _s(m)) for n, m in t.task.held), t.task.rcu_nesting, t.task.injected_error)
                  for i, t in enumerate(threads))
    tds = tuple((tdr, td.hkid, td.lifecycle, td.op_state, td.child_count, td.td_epoch, tuple(td.epoch_refcount),
                 td.wbcache_done, td.tdr_lock, td.sept_lock, td.epoch_lock, tuple(sorted(td.sept_entry_lock)),
                 tuple((k, vp.initialized, vp.associated, vp.in_guest_epoch, vp.entering, vp.sept_locked,
                        vp.epf_stepping, vp.assoc_lpid) for k, vp in sorted(td.vcpus.items())),
                 tuple(sorted(td.sept_state.items())), tuple(sorted(td.sept_page.items())),
                 tuple(sorted(td.sept_bepoch.items())))
                for tdr, td in sorted(seam.tds.items()))
    sps = tuple(_sp(sp) for _, sp in sorted(kvm.sp_by_spt.items()))
    vcpus = tuple((tuple(v.mmu_shadow_page_cache.objects), tuple(v.mmu_external_spt_cache.objects),
                   tuple(v.pamt_cache.pages), v.mirror_root.sp_id if v.mirror_root else -1,
                   v.direct_root.sp_id if v.direct_root else -1, v.tdvpr, tuple(v.tdcx), v.in_guest,
                   v.initialized, v.accesses_done, v.guest_access, v.cpu, v.cpu_list, v.invalid_slot_retries) for v in kvm.vcpus)
    t = kvm.tdx
    touched = tuple(sorted((names.get(k, -1), tuple((sp.sp_id, i) for sp, i in v))
                           for k, v in checker._touched.items()))
    return (
        tasks,
        tuple((c, tuple(lst.owner)) for c, lst in sorted(pa.lists.items())),  # free heaps follow from it
        # Grace-period numbers only matter relative to each other: a reader blocks the current GP iff it
        # entered before it; a callback needs two GP ends after it was queued (capped at 2).
        (tuple(sorted((names.get(k, -1), e < rcu.gp_seq) for k, e in rcu.readers.items())),
         tuple((min(2, rcu.gp_seq - cb.seq), canon(cb.func), canon(cb.arg)) for cb in rcu.callbacks),
         rcu.queued, rcu.invoked),
        tuple(sorted((_s(lk), tuple(sorted(_s(s) for s in u))) for lk, u in host.lockdep.usage.items())),
        (host.faults_injected, host.injections),
        (tuple(sorted(host.td_keyed.items())), tuple(sorted(_cause_key(k) for k in host.fault_causes))),
        (kvm.mmu_lock.readers, names.get(kvm.mmu_lock.writer or "", -1), names.get(th.pamt_lock.owner or "", -1)),
        (tuple(sorted(seam.pamt.ptype.items())), tuple(sorted(seam.pamt.owner.items())),
         tuple(sorted(seam.pamt.backing.items())), tds),
        (tuple(sorted(th.pamt_refcounts.items())), th.hkids),
        (t.tdr, tuple(t.tdcs), t.hkid, t.state, t.wait_for_sept_zap, t.page_add_src, tuple(t.split_pamt_cache.pages)),
        (tuple(sorted(kvm.gmem_folios_2m.items())), tuple(sorted(kvm.guest_inhibit)),
         tuple(sorted(seam.pamt.huge))),
        vcpus, sps,
        tuple(r.sp_id for r in kvm.roots), tuple(r.sp_id for r in kvm.scheduled_to_zap),
        (tuple(sorted(kvm.sp_seq.items())), kvm.tdp_mmu_pages, kvm.bugged, kvm.pre_fault_allowed, kvm.mmu_invalidate_seq,
         kvm.mmu_invalidate_in_progress, tuple(sorted(kvm.shared_gfns)), tuple(sorted(kvm.gmem.items())), kvm.users,
         kvm.populated, kvm.setup_zappers, kvm.setup_failed),
        (kvm.mmu_invalidate_range_start, kvm.mmu_invalidate_range_end, kvm.mn_active_invalidate_count, kvm.memslot,
         tuple(sorted(names.get(n, -1) for n in kvm.srcu_readers)),
         tuple(sorted((names.get(w, -1), tuple(sorted(names.get(n, -1) for n in ws)))
                      for w, ws in kvm.srcu_waiting.items()))),
        (tuple(sorted(host.mm.ptes.items())), tuple(sorted(host.mm.unmapped)), tuple(sorted(host.mm.page_refs.items())),
         host.mm.exited, len(host.mm.notifiers)),
        touched,
    )


def fingerprint(state: tuple) -> int:
    """64-bit fingerprint; tuples of ints hash identically in every process (no hash randomization)."""
    return hash(state) & 0xFFFFFFFFFFFFFFFF
