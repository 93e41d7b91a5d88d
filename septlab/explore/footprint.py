"""What one model step read and wrote: the footprints dynamic partial-order reduction works on.

The model never reports its accesses (it does not know it is being explored, and a variant written by
someone else would not report them either). Instead, while the explorer runs a step it wants the
footprint of, every class whose instances hold world state gets a tracing `__getattribute__` and
`__setattr__` (installed on the class for that one step, removed after it, so replays run at full
speed). The footprint is a set of keys `(object, attribute)`, where `object` is the instance's name in
the canonical state (`("sp", sp_id)`, `("td", tdr)`, `("lock", name)`, a class name for singletons), so
footprints recorded in different re-executions of a path compare equal.

- reading an attribute is a read of its key; assigning one is a write;
- a dict, IntMap (septlab/intmap.py) or set attribute, or an element-indexed list (an SPTE table, a
  page-owner array), is handed to the step wrapped (explore/traced.py): `d.get(k)`, `k in s`, `sptes[i] = v` are reads and writes of the
  element key `(object, attribute, k)`; iterating, `len` or any other method is the whole attribute,
  which overlaps every element; an element that is itself a container is snapshotted when read and
  deep-compared after the step;
- any other container attribute (a heap, a queue) read during the step is snapshotted at its first read;
  if its (deeply frozen) value differs at the end of the step, the step wrote that key too;
- (`por=True`) `len()` or truth of an element-indexed list is a read of its length, the pseudo-element
  LEN (explore/traced.py): setting an element leaves the length alone, only what moves elements (a
  whole write) changes it -- so a KASAN page-state check (`PageAllocator.state()`, a bounds test and one
  element) no longer conflicts with every page allocated or freed on that CPU's list;
- a container the stepping task holds in a local variable from an earlier step (an alias of, say,
  `sp.sptes` kept across a `yield`) is found by scanning its generator frames at the start of the step
  and named through a walk of the world (every container reachable from a state object is registered
  under the key of the attribute holding it); a container the walk does not reach is the task's own;
- the wait predicate or lock state that makes the step enabled is evaluated inside the recording, so
  enabling and disabling show up as reads and writes like any other access.

Counters (COUNTERS: rwlock readers, kvm->users, kvm->arch.tdp_mmu_pages, a TD's child count) whose every write is `x.c += k` or
`x.c -= k` (k a constant or a local; tests/test_dpor.py audits the source) are, for a tracer made with
`por=True` (the explorers'), updated rather than read and written: a read of the key immediately
followed by a write of it, with no other traced attribute access between, is an "add", recorded as a
write of an anonymous element (the key goes to the element-write parents only). Two adds commute (the
sum is the same in either order, and neither step looked at the value), so they do not conflict; an add
still conflicts with any other read of the counter (`write_lock()` waiting for `readers == 0`, destroy
waiting for `users == 0`, TDH.PHYMEM.PAGE.RECLAIM of a TDR testing `child_count`) and with any plain
write. docs/por-dependencies.md has the numbers. MODEL/SIMPLIFIED: other commuting updates (a TDX module
sharex lock count, lockdep's first-seen records) are still conflicts (sound: it can only add dependencies,
never hide one).
Attributes that are not state (the step clock, the current task, histories, metrics, report outputs)
are not traced: they cannot change what a step does (the canonical state, explore/state.py, leaves them out
for the same reason).
"""

from __future__ import annotations

from array import array
from collections import deque
from types import GeneratorType, MethodType
from typing import Any

from ..check.invariants import Checker
from ..host.host import Host
from ..host.locks import Lockdep, Mutex, RwLock, RwSem, SpinLock
from ..host.memcache import KvmMmuMemoryCache
from ..host.mm import MmStruct
from ..host.page_alloc import PageAllocator, PcpList
from ..host.rcu import Rcu, RcuCallback
from ..host.task import Task
from ..intmap import INTMAP_TYPES
from ..kvm.kvm_host import Kvm, KvmTdx, KvmVcpu
from ..kvm.mmu_page import KvmMmuPage
from ..tdx_module.module import TdxModule
from ..tdx_module.pamt import Pamt
from ..tdx_module.td import Td, TdVcpu
from ..virt.dpamt import TdxHost, TdxPamtCache
from .traced import REC as _REC
from .traced import TracedDict, TracedList, TracedSet, unwrap

Key = tuple[Any, ...]
# (reads, writes, parents of element reads, parents of element writes): keys are (object, attribute) for
# a whole attribute and (object, attribute, element) for one element of a dict, set or indexed list
Footprint = tuple[frozenset, frozenset, frozenset, frozenset]

_oga = object.__getattribute__
_osa = object.__setattr__
_CONTAINERS = (list, dict, set, deque, array, bytearray, *INTMAP_TYPES)
# Lists and arrays read element by element (an SPTE table, a page-owner bytearray); other lists (heaps,
# queues, stacks) are whole values.
_ELEM_LISTS = frozenset({(KvmMmuPage, "sptes"), (PcpList, "owner")})


def _named(attr: str, tag: str) -> Any:
    return lambda o: (tag, _oga(o, attr))


# The classes whose instances are world state, each with the name of an instance in the canonical
# state and the attributes that are not state (never traced).
_NOT_STATE_HOST = frozenset({"probe", "history", "current", "current_cb", "clock", "progressed", "patches",
                             "last_alloc", "last_free"})
STATE_CLASSES: dict[type, tuple[Any, frozenset[str]]] = {
    Host: (None, _NOT_STATE_HOST),
    PageAllocator: (None, frozenset({"counts", "total"})),  # statistics (metrics), not state
    PcpList: (_named("base", "pcp"), frozenset()),
    Rcu: (None, frozenset()),
    RcuCallback: (None, frozenset({"queued_by", "chain", "step"})),
    Lockdep: (None, frozenset()),
    RwLock: (_named("name", "lock"), frozenset()),
    SpinLock: (_named("name", "lock"), frozenset()),
    Mutex: (_named("name", "lock"), frozenset()),
    RwSem: (_named("name", "lock"), frozenset()),
    KvmMmuMemoryCache: (_named("name", "mc"), frozenset()),
    MmStruct: (None, frozenset()),
    Task: (_named("name", "task"), frozenset({"last_progress", "last_ran"})),
    KvmTdx: (None, frozenset()),
    KvmVcpu: (_named("vcpu_id", "vcpu"), frozenset()),
    Kvm: (None, frozenset()),
    KvmMmuPage: (_named("sp_id", "sp"), frozenset()),
    TdxModule: (None, frozenset()),
    Pamt: (None, frozenset()),
    Td: (_named("tdr", "td"), frozenset()),
    TdVcpu: (_named("tdvpr", "tdvp"), frozenset()),
    TdxPamtCache: (None, frozenset()),
    TdxHost: (None, frozenset()),
    # the checker's own bookkeeping decides what it reports, so it is state for this purpose; its
    # outputs are not, nor the numbering of sps its reverse map codes entries with (which number an sp
    # gets depends on the order of first writes, what a number stands for does not)
    Checker: (None, frozenset({"violations", "expected", "metrics", "last_seamcall", "stop_on_fatal",
                               "_sps", "_sp_number", "_rmap_multi"})),
}
_KEYFN: dict[type, Any] = {}
_SKIP: dict[type, frozenset[str]] = {}
for _cls, (_fn, _skip) in STATE_CLASSES.items():
    _KEYFN[_cls] = _fn if _fn is not None else (lambda o, n=_cls.__name__: (n,))
    _SKIP[_cls] = _skip


# Counters whose every in-step write is `+= k` / `-= k` (k a constant or a local): see the module docstring.
COUNTERS: frozenset[tuple[type, str]] = frozenset({(RwLock, "readers"), (RwSem, "readers"), (Kvm, "users"),
                                                  (Kvm, "tdp_mmu_pages"), (Td, "child_count")})


def freeze(v: Any) -> Any:
    """A deep, immutable copy of a container's value (objects stay as they are: they trace themselves)."""
    t = type(v)
    if t is list or t is deque or t is tuple or t is array or t is bytearray:
        out = tuple(v)
        if any(type(x) in _FREEZE for x in out):
            return tuple(freeze(x) for x in out)
        return out
    if t is dict:
        return tuple((k, freeze(x) if type(x) in _FREEZE else x) for k, x in v.items())
    if t is set:
        return frozenset(v)
    if t in INTMAP_TYPES:  # ints only
        return tuple(v.items())
    return v


_FREEZE = frozenset({list, deque, tuple, dict, set, array, bytearray, *INTMAP_TYPES})
_LEAVES = frozenset({int, str, bool, type(None), float})


class Recorder:
    """The footprint of the step being run."""

    __slots__ = ("reads", "writes", "rp", "wp", "snaps", "esnaps", "por", "pend")

    def __init__(self, por: bool = False) -> None:
        # the reductions' footprint: COUNTERS' `+=`/`-=` are commuting adds, an element-indexed list's
        # length is an element of its own (explore/traced.py)
        self.por = por
        self.pend: Key | None = None  # a counter just read: an add if the next traced access writes it
        self.reads: set[Key] = set()
        self.writes: set[Key] = set()
        self.rp: set[Key] = set()  # attributes one of whose elements was read
        self.wp: set[Key] = set()  # ... written
        self.snaps: dict[Key, tuple[Any, Any]] = {}
        self.esnaps: dict[Key, tuple[Any, Any]] = {}

    def container(self, key: Key, v: Any) -> None:
        if key not in self.snaps:
            self.snaps[key] = (v, freeze(v))

    def elem_parent(self, key: Key, write: bool) -> None:
        (self.wp if write else self.rp).add(key[:2])

    def elem_value(self, key: Key, v: Any) -> None:
        """An element that is itself a container: changed in place, it is a write of that element."""
        if type(v) in _CONTAINERS and key not in self.esnaps:
            self.esnaps[key] = (v, freeze(v))

    def result(self) -> Footprint:
        if self.pend is not None:
            self.reads.add(self.pend)
            self.pend = None
        for key, (v, before) in self.snaps.items():
            if key not in self.writes and freeze(v) != before:
                self.writes.add(key)
        for key, (v, before) in self.esnaps.items():
            if key not in self.writes and freeze(v) != before:
                self.writes.add(key)
                self.wp.add(key[:2])
        return frozenset(self.reads), frozenset(self.writes), frozenset(self.rp), frozenset(self.wp)


def _getattribute(self: Any, name: str) -> Any:
    v = _oga(self, name)
    rec = _REC[0]
    if rec is not None:
        if rec.pend is not None:  # the counter read before this access was a plain read
            rec.reads.add(rec.pend)
            rec.pend = None
        t = type(v)
        if t is not MethodType:
            cls = type(self)
            if name not in _SKIP[cls]:
                key = (_KEYFN[cls](self), name)
                if t is dict or t in INTMAP_TYPES:
                    return TracedDict(v, key)
                if t is set:
                    return TracedSet(v, key)
                if (t is list or t is array or t is bytearray) and (cls, name) in _ELEM_LISTS:
                    return TracedList(v, key)
                if rec.por and (cls, name) in COUNTERS:
                    rec.pend = key
                    return v
                rec.reads.add(key)
                if t in _CONTAINERS:
                    rec.container(key, v)
    return v


def _setattr(self: Any, name: str, value: Any) -> None:
    _osa(self, name, unwrap(value))
    rec = _REC[0]
    if rec is not None:
        pend = rec.pend
        cls = type(self)
        if name not in _SKIP[cls]:
            key = (_KEYFN[cls](self), name)
            if pend is not None:
                rec.pend = None
                if pend == key:  # `x.c += k`: an add, a write of an anonymous element of the counter
                    rec.wp.add(key)
                    return
                rec.reads.add(pend)
            rec.writes.add(key)
        elif pend is not None:
            rec.reads.add(pend)
            rec.pend = None


def register(classes: dict[type, tuple[Any, frozenset[str]]], element_lists: Any = ()) -> None:
    """Declare another model's state classes (name function or None for a singleton, attributes that are
    not state) and its element-indexed list attributes: the Promela twin's executor does."""
    for cls, (fn, skip) in classes.items():
        _KEYFN[cls] = fn if fn is not None else (lambda o, n=cls.__name__: (n,))
        _SKIP[cls] = skip
    global _ELEM_LISTS
    _ELEM_LISTS = _ELEM_LISTS | frozenset(element_lists)


def _install(classes: Any = STATE_CLASSES) -> None:
    for cls in classes:
        cls.__getattribute__ = _getattribute  # type: ignore[method-assign]
        cls.__setattr__ = _setattr  # type: ignore[method-assign]


def _uninstall(classes: Any = STATE_CLASSES) -> None:
    for cls in classes:
        del cls.__getattribute__
        del cls.__setattr__


class Tracer:
    """Records footprints of steps of one executor's world. `start()` before the step, `stop()` after.
    `classes`: the state classes to trace (default: septlab's model; see register()); `por`: the
    reductions' footprint -- COUNTERS' updates are commuting adds and an element-indexed list's length is
    an element of its own (the explorers ask for it; `explain` draws every write of a lock and does not)."""

    def __init__(self, classes: Any = None, por: bool = False) -> None:
        self.por = por  # the reductions' footprint (Recorder.por): the explorers' tracers
        self.registry: dict[int, tuple[Any, Key]] = {}  # id(container) -> (container, key)
        self.classes = tuple(classes if classes is not None else STATE_CLASSES)
        self.roots: list[Any] = []
        self.rec: Recorder | None = None

    # --- naming containers held in locals ---------------------------------------------------------
    def _walk(self, roots: list[Any]) -> None:
        reg: dict[int, tuple[Any, Key]] = {}
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            o = stack.pop()
            if id(o) in seen:
                continue
            seen.add(id(o))
            cls = type(o)
            skip = _SKIP[cls]
            k = _KEYFN[cls](o)
            for name, v in _fields(o, cls):
                if name not in skip:
                    self._reach(v, (k, name), reg, stack)
        self.registry = reg

    @staticmethod
    def _reach(v: Any, key: Key, reg: dict[int, tuple[Any, Key]], stack: list[Any]) -> None:
        t = type(v)
        if t in _KEYFN:
            stack.append(v)
        elif t in _CONTAINERS or t is tuple:
            if t is not tuple:
                reg[id(v)] = (v, key)
            if t in INTMAP_TYPES or t is array or t is bytearray:  # ints only: nothing to name inside
                return
            if t is dict:
                if _LEAVES.issuperset(map(type, v)) and _LEAVES.issuperset(map(type, v.values())):
                    return
            elif _LEAVES.issuperset(map(type, v)):  # an SPTE table: 512 ints, nothing to name inside
                return
            items = v.items() if t is dict else v
            for x in items:
                tx = type(x)
                if tx is int or tx is str:
                    continue
                if t is dict:
                    for y in x:  # key and value
                        if type(y) in _KEYFN or type(y) in _CONTAINERS or type(y) is tuple:
                            Tracer._reach(y, key, reg, stack)
                else:
                    Tracer._reach(x, key, reg, stack)

    def _aliases(self, gen: GeneratorType, rec: Recorder) -> None:
        """Containers the stepping task holds in locals: reads of whatever attribute they belong to."""
        found: list[Any] = []
        while gen is not None:
            fr = gen.gi_frame
            if fr is None:
                break
            for v in fr.f_locals.values():
                if type(v) in _CONTAINERS:
                    found.append(v)
            gen = gen.gi_yieldfrom  # type: ignore[assignment]
        if not found:
            return
        if any(self.registry.get(id(v), (None,))[0] is not v for v in found):
            self._walk(self.roots)
        for v in found:
            ent = self.registry.get(id(v))
            if ent is not None and ent[0] is v:  # else the task's own (reachable from no state object)
                rec.reads.add(ent[1])
                rec.container(ent[1], v)

    # --- one step ---------------------------------------------------------------------------------
    def start(self, roots: list[Any], gen: GeneratorType, enabling: Any) -> None:
        """Begin recording a step of the task whose generator is `gen`. `roots`: the world's state objects
        every other one is reachable from (a new world -- after a re-execution -- is named afresh);
        `enabling()` evaluates the step's enabling condition, which the step reads too."""
        if not self.roots or roots[0] is not self.roots[0]:
            self.registry = {}
        self.roots = roots
        rec = self.rec = Recorder(self.por)
        _install(self.classes)
        _REC[0] = rec
        try:
            enabling()
            self._aliases(gen, rec)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> Footprint:
        rec = self.rec
        _REC[0] = None
        _uninstall(self.classes)
        assert rec is not None
        self.rec = None
        return rec.result()


def _fields(o: Any, cls: type) -> list[tuple[str, Any]]:
    """(attribute, value) of a state object, slotted or not."""
    try:
        return list(_oga(o, "__dict__").items())
    except AttributeError:
        pass
    out: list[tuple[str, Any]] = []
    for c in cls.__mro__:
        for name in getattr(c, "__slots__", ()):
            try:
                out.append((name, _oga(o, name)))
            except AttributeError:
                continue
    return out


def dependent(a: Footprint, b: Footprint) -> bool:
    """Two steps of different tasks commute unless one writes what the other reads or writes; a whole
    attribute overlaps each of its elements."""
    ra, wa, rpa, wpa = a
    rb, wb, rpb, wpb = b
    return not (wa.isdisjoint(rb) and wa.isdisjoint(wb) and ra.isdisjoint(wb)
                and wa.isdisjoint(rpb) and wa.isdisjoint(wpb) and ra.isdisjoint(wpb)
                and wpa.isdisjoint(rb) and wpa.isdisjoint(wb) and rpa.isdisjoint(wb))
