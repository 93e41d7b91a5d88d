"""IntMap: an int -> int mapping with a dict's interface, stored in fixed-size `array('q')` chunks.

Per-page model state (PAMT page types and owners, guest_memfd's gfn -> pfn, the S-EPT entries of a TD,
which pages may hold TD-keyed cache lines) is a dict keyed by pfn, gfn or S-EPT entry key. At real
sizes (a 4 GiB TD has a million 4 KiB pages) a dict costs 40-80 bytes an entry plus an int object for
every key and value it alone holds; the keys are dense (pfns of one per-CPU range, gfns of one memslot),
so an array slot of 8 bytes does. Keys that are far apart only cost the chunks they touch. Up to
SMALL entries a map is a plain dict: the small worlds `septlab check` builds by the thousand stay as
cheap to build, read and canonicalise as before.

Differences from dict, on purpose and invisible to the model:
- keys and values are ints (a value in [-2**63 + 1, 2**63)); anything else raises TypeError on store
  and is simply absent on lookup;
- iteration (keys(), values(), items(), iter) is in ascending key order, not insertion order: the
  model only iterates these maps where order does not matter (the canonical state sorts them anyway),
  and a key order cannot depend on how tasks interleaved;
- keys(), values() and items() return lists (a snapshot), not live views.

EntryMap keeps keys that differ in their low 3 bits apart: S-EPT entry keys are
`(gfn >> 9 * (level - 1)) << 3 | level`, so each level's entries sit next to each other (one slot per
4 KiB entry) instead of one slot in eight.

ByteIntMap and ByteEntryMap are the same maps for values 0..254 (enums, small ids), with 1-byte slots
(array('B'), 255 for a missing key) instead of 8: PAMT page types, S-EPT entry states and the HKID of
a page's possibly TD-keyed cache lines. They refuse a value outside 0..254 with TypeError, in either
form: never truncated.

Small and large forms are two classes over one layout: a map switches its `__class__` when it spills
into chunks (and back when emptied), so neither form tests which one it is on every call. The byte
forms' large classes run the 8-byte ones' code with the width's typecode and sentinel as globals
(_BYTE_GLOBALS): one source, no per-call cost. A large map's get() is still a Python call (~4x a
dict's); that is the price of 8 bytes (or 1) a page.

The footprint tracer (explore/footprint.py, traced.py) wraps an IntMap attribute the way it wraps a
dict, and the canonical state (explore/state.py) reads it through items().
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping
from itertools import compress
from types import FunctionType
from typing import Any

_ABSENT = -(1 << 63)  # the slot of a key that is not in the map (see _BYTE_GLOBALS for the byte forms)
CHUNK_BITS = 10  # 1,024 slots (8 KiB, or 1 KiB for the byte forms) per chunk
_CHUNK = 1 << CHUNK_BITS
_MASK = _CHUNK - 1
_TYPECODE = "q"  # the slots' array typecode
_EMPTY = array(_TYPECODE, [_ABSENT]) * _CHUNK  # a new chunk's slots
_OFFSETS = range(_CHUNK)
SMALL = 512  # up to this many entries a map is a plain dict (small worlds: `check` builds thousands)
_NO_DEFAULT: Any = object()  # pop() without a default
_LANE = 3  # EntryMap: the low bits of a key that select its lane
_LANE_MASK = (1 << _LANE) - 1
_CL = CHUNK_BITS + _LANE


class IntMap:
    """A dict of int keys to int values. This class is the small form (a plain dict in `_d`); past
    SMALL entries the map becomes a _ChunkedIntMap (arrays of 1,024 slots per touched key range)."""

    __slots__ = ("_d", "_chunks", "_len")
    _small: type  # the class of this kind's small form
    _large: type  # ... and of its large form
    _holds = "ints"  # the values it takes, for TypeError's message

    def __init__(self, items: Mapping[int, int] | Iterable[tuple[int, int]] = ()):
        self._d: dict[int, int] | None = {}  # the small form; None in the large one
        self._chunks: dict[int, array] = {}  # the large form: chunk id -> slots
        self._len = 0  # entries in chunks (the large form)
        if items:
            self.update(items)

    # --- the small form --------------------------------------------------------------------------------
    def get(self, k: Any, default: Any = None) -> Any:
        return self._d.get(k, default)  # type: ignore[union-attr]

    def __getitem__(self, k: Any) -> int:
        return self._d[k]  # type: ignore[index]

    def __contains__(self, k: Any) -> bool:
        return k in self._d  # type: ignore[operator]

    def __setitem__(self, k: int, v: int) -> None:
        if type(k) is not int or type(v) is not int or v == _ABSENT:
            raise _cannot_store(self, k, v)
        d = self._d
        d[k] = v  # type: ignore[index]
        if len(d) > SMALL:  # type: ignore[arg-type]
            self._spill()

    def _spill(self) -> None:
        """Past SMALL entries: become the large form, the dict's entries moved into chunks."""
        d, self._d = self._d, None
        self.__class__ = self._large
        for k, v in d.items():  # type: ignore[union-attr]
            self[k] = v

    def pop(self, k: Any, default: Any = _NO_DEFAULT) -> Any:
        if default is _NO_DEFAULT:
            return self._d.pop(k)  # type: ignore[union-attr]
        return self._d.pop(k, default)  # type: ignore[union-attr]

    def __len__(self) -> int:
        return len(self._d)  # type: ignore[arg-type]

    def items(self) -> list[tuple[int, int]]:
        """(key, value) pairs in ascending key order."""
        return sorted(self._d.items())  # type: ignore[union-attr]

    def __delitem__(self, k: Any) -> None:
        del self._d[k]  # type: ignore[union-attr]

    # --- either form -----------------------------------------------------------------------------------

    def setdefault(self, k: int, default: Any = None) -> Any:
        v = self.get(k, _ABSENT)
        if v != _ABSENT:
            return v
        self[k] = default
        return default

    def __bool__(self) -> bool:
        return len(self) > 0

    def keys(self) -> list[int]:
        return [k for k, _ in self.items()]

    def values(self) -> list[int]:
        return [v for _, v in self.items()]

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())

    def update(self, other: Any = (), **kw: Any) -> None:
        pairs = other.items() if hasattr(other, "items") else other
        for k, v in pairs:
            self[k] = v
        for k, v in kw.items():
            self[k] = v

    def clear(self) -> None:
        self.__class__ = self._small
        self._d = {}
        self._chunks = {}
        self._len = 0

    def copy(self) -> IntMap:
        out = self._small()
        out.__class__ = type(self)
        out._d = None if self._d is None else dict(self._d)
        out._chunks = {cid: array(c.typecode, c) for cid, c in self._chunks.items()}
        out._len = self._len
        return out

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, IntMap):
            return len(self) == len(other) and self.items() == other.items()
        if isinstance(other, Mapping):
            return len(self) == len(other) and all(self.get(k, _ABSENT) == v for k, v in other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{self._small.__name__}({dict(self.items())!r})"


def _cannot_store(m: IntMap, k: Any, v: Any) -> TypeError:
    return TypeError(f"{m._small.__name__} holds {m._holds}: cannot store {k!r} -> {v!r}")


def _refused(m: IntMap, cid: int, c: array, off: int, k: int, v: int) -> None:
    """A large form's store of a value its slots cannot hold (2**63 in 'q', 300 in 'B': the array
    raised OverflowError, the slot is as it was): undo the count and the chunk it made, and refuse it
    with the TypeError of any other value the map cannot hold."""
    absent = type(m)._absent
    if c[off] == absent:
        m._len -= 1
        if c.count(absent) == _CHUNK:  # an empty chunk: made for this store
            del m._chunks[cid]
    raise _cannot_store(m, k, v)


def _getitem_via_get(self: IntMap, k: Any) -> int:
    """m[k] of a large form: its get() with a sentinel (the slots hold ints, absent is _ABSENT)."""
    v = self.get(k, _ABSENT)
    if v == _ABSENT:
        raise KeyError(k)
    return v


class _ChunkedIntMap(IntMap):
    """IntMap's large form: key k in chunk k >> CHUNK_BITS, slot k & _MASK. The methods are written out
    (no shared helper): they run for nearly every modelled step, and a call costs more than the
    arithmetic. A key that is not an int is never in the map."""

    __slots__ = ()
    _absent = _ABSENT

    def get(self, k: Any, default: Any = None) -> Any:
        try:
            c = self._chunks.get(k >> CHUNK_BITS)
        except TypeError:
            return default
        if c is None:
            return default
        v = c[k & _MASK]
        return default if v == _ABSENT else v

    __getitem__ = _getitem_via_get

    def __contains__(self, k: Any) -> bool:
        try:
            c = self._chunks.get(k >> CHUNK_BITS)
        except TypeError:
            return False
        return c is not None and c[k & _MASK] != _ABSENT

    def __setitem__(self, k: int, v: int) -> None:
        if type(k) is not int or type(v) is not int or v == _ABSENT:
            raise _cannot_store(self, k, v)
        c = self._chunks.get(k >> CHUNK_BITS)
        if c is None:
            c = self._chunks[k >> CHUNK_BITS] = array(_TYPECODE, _EMPTY)
        try:  # costs nothing (CPython 3.11) unless the slot cannot hold v
            if c[k & _MASK] == _ABSENT:
                self._len += 1
            c[k & _MASK] = v
        except OverflowError:
            _refused(self, k >> CHUNK_BITS, c, k & _MASK, k, v)

    def pop(self, k: Any, default: Any = _NO_DEFAULT) -> Any:
        try:
            c = self._chunks.get(k >> CHUNK_BITS)
        except TypeError:
            c = None
        v = _ABSENT if c is None else c[k & _MASK]
        if v == _ABSENT:
            if default is _NO_DEFAULT:
                raise KeyError(k)
            return default
        c[k & _MASK] = _ABSENT  # type: ignore[index]
        self._len -= 1
        if not self._len:  # emptied: back to the small form, memory given back
            self.clear()
        return v

    def __delitem__(self, k: Any) -> None:
        try:
            c = self._chunks.get(k >> CHUNK_BITS)
        except TypeError:
            raise KeyError(k) from None
        if c is None or c[k & _MASK] == _ABSENT:
            raise KeyError(k)
        c[k & _MASK] = _ABSENT
        self._len -= 1
        if not self._len:
            self.clear()

    def __len__(self) -> int:
        return self._len

    def items(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for cid in sorted(self._chunks):  # chunks are disjoint key ranges: in order, so are their keys
            c = self._chunks[cid]
            base = cid << CHUNK_BITS
            out += [(base + off, c[off]) for off in compress(_OFFSETS, map(_ABSENT.__ne__, c))]
        return out

    def __iter__(self) -> Iterator[int]:
        """The keys in ascending order, one at a time: min() and max() of a million-entry map need no
        list of it (guest_memfd's release takes both)."""
        for cid in sorted(self._chunks):
            base = cid << CHUNK_BITS
            for off in compress(_OFFSETS, map(_ABSENT.__ne__, self._chunks[cid])):
                yield base + off


class EntryMap(IntMap):
    """An IntMap keyed by S-EPT entry keys (sept.entry_key(): the level in the low 3 bits): in the
    large form each level is a lane of its own, so consecutive 4 KiB entries take consecutive slots."""

    __slots__ = ()


class _ChunkedEntryMap(EntryMap):
    """EntryMap's large form: key k in chunk ((k >> (_LANE + CHUNK_BITS)) << _LANE) | lane, slot
    (k >> _LANE) & _MASK, lane = k & _LANE_MASK."""

    __slots__ = ()
    _absent = _ABSENT

    def get(self, k: Any, default: Any = None) -> Any:
        try:
            c = self._chunks.get(((k >> _CL) << _LANE) | (k & _LANE_MASK))
        except TypeError:
            return default
        if c is None:
            return default
        v = c[(k >> _LANE) & _MASK]
        return default if v == _ABSENT else v

    __getitem__ = _getitem_via_get

    def __contains__(self, k: Any) -> bool:
        return self.get(k, _ABSENT) != _ABSENT

    def __setitem__(self, k: int, v: int) -> None:
        if type(k) is not int or type(v) is not int or v == _ABSENT:
            raise _cannot_store(self, k, v)
        cid = ((k >> _CL) << _LANE) | (k & _LANE_MASK)
        c = self._chunks.get(cid)
        if c is None:
            c = self._chunks[cid] = array(_TYPECODE, _EMPTY)
        off = (k >> _LANE) & _MASK
        try:  # costs nothing (CPython 3.11) unless the slot cannot hold v
            if c[off] == _ABSENT:
                self._len += 1
            c[off] = v
        except OverflowError:
            _refused(self, cid, c, off, k, v)

    def pop(self, k: Any, default: Any = _NO_DEFAULT) -> Any:
        v = self.get(k, _ABSENT)
        if v == _ABSENT:
            if default is _NO_DEFAULT:
                raise KeyError(k)
            return default
        self._chunks[((k >> _CL) << _LANE) | (k & _LANE_MASK)][(k >> _LANE) & _MASK] = _ABSENT
        self._len -= 1
        if not self._len:
            self.clear()
        return v

    def __delitem__(self, k: Any) -> None:
        if self.pop(k, _ABSENT) == _ABSENT:
            raise KeyError(k)

    def __len__(self) -> int:
        return self._len

    def items(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for cid, c in self._chunks.items():
            base, lane = (cid >> _LANE) << CHUNK_BITS, cid & _LANE_MASK
            out += [(((base + off) << _LANE) | lane, v) for off, v in enumerate(c) if v != _ABSENT]
        out.sort()
        return out


# --- the byte forms ------------------------------------------------------------------------------------

BYTE_ABSENT = 255  # a byte form's slot of a key that is not in the map: the values are 0..254


def _byte_setitem(self: IntMap, k: int, v: int) -> None:
    """The small byte forms' store: the value must fit the large form's byte slot (0..254), checked
    here so that a map refuses the same values whatever its size."""
    if type(k) is not int or type(v) is not int or not 0 <= v < BYTE_ABSENT:
        raise _cannot_store(self, k, v)
    d = self._d
    d[k] = v  # type: ignore[index]
    if len(d) > SMALL:  # type: ignore[arg-type]
        self._spill()


class ByteIntMap(IntMap):
    """An IntMap of small values, 0..254: 1 byte a slot (array('B'), 255 marks a missing key) instead
    of 8 in the large form. For per-page maps whose values are enums or small ids (PAMT page types,
    the HKID a page's cache lines may carry). A value out of range raises TypeError like any other
    value an IntMap cannot hold: never truncated. Unsigned, not signed with -128 as the sentinel: the
    maps using it hold no negative value, and HKIDs get 0..254 rather than 0..127."""

    __slots__ = ()
    _holds = "ints 0..254"
    __setitem__ = _byte_setitem


class ByteEntryMap(EntryMap):
    """An EntryMap of small values, 0..254 (ByteIntMap's byte slots in EntryMap's lanes): S-EPT entry
    states."""

    __slots__ = ()
    _holds = "ints 0..254"
    __setitem__ = _byte_setitem


# A byte form's large class runs _ChunkedIntMap's (or _ChunkedEntryMap's) code with these globals: the
# module's, but _ABSENT is 255, _TYPECODE 'B' and _EMPTY a chunk of 1,024 bytes. The code reads them as
# it reads the module's (LOAD_GLOBAL, specialised the same way), so both widths share one source at no
# cost a call -- unlike closures (+2-3% instructions a get or store: the cells are copied into and
# cleared from every frame) or class attributes (an attribute lookup a call). _ABSENT doubles as get()'s
# "no such key" default in the large forms (m[k], pop(), `in`): 255 serves as well, being no value a
# byte form holds. Each copy has a code object of its own, not just other globals: CPython 3.11 keeps
# the specialised `self._chunks`, `self._len` (inline caches, keyed by the instance's type) in the code
# object, and one shared by the IntMap and the ByteIntMap a step uses in turn (PAMT `owner` and
# `ptype`) would miss on every switch: +1.5% instructions a modelled step in boot-teardown.
_BYTE_GLOBALS: dict[str, Any] = {}


def _copy(f: FunctionType, qualname: str, globals_: dict[str, Any]) -> FunctionType:
    """f with a code object of its own (its own inline caches; named `qualname`) and `globals_`."""
    g = FunctionType(f.__code__.replace(co_qualname=qualname), globals_, f.__name__, f.__defaults__, f.__closure__)
    g.__qualname__, g.__doc__, g.__kwdefaults__ = qualname, f.__doc__, f.__kwdefaults__
    return g


def _byte_form(name: str, small: type, wide: type) -> type:
    """The large form `name` of byte form `small`: `wide`'s methods over _BYTE_GLOBALS."""
    ns = {k: _copy(f, f"{name}.{k}", _BYTE_GLOBALS) for k, f in vars(wide).items() if isinstance(f, FunctionType)}
    return type(
        name, (small,), {"__slots__": (), "__module__": __name__, "__doc__": wide.__doc__, "_absent": BYTE_ABSENT, **ns}
    )


_BYTE_GLOBALS.update(globals(), _ABSENT=BYTE_ABSENT, _TYPECODE="B", _EMPTY=array("B", [BYTE_ABSENT]) * _CHUNK)
_ChunkedByteIntMap = _byte_form("_ChunkedByteIntMap", ByteIntMap, _ChunkedIntMap)
_ChunkedByteEntryMap = _byte_form("_ChunkedByteEntryMap", ByteEntryMap, _ChunkedEntryMap)
for _small, _large in (
    (IntMap, _ChunkedIntMap),
    (EntryMap, _ChunkedEntryMap),
    (ByteIntMap, _ChunkedByteIntMap),
    (ByteEntryMap, _ChunkedByteEntryMap),
):
    _small._small = _large._small = _small
    _small._large = _large._large = _large
del _small, _large


# Every IntMap class, for the footprint tracer and the canonical state (which test types exactly).
INTMAP_TYPES = frozenset(
    {
        IntMap,
        _ChunkedIntMap,
        EntryMap,
        _ChunkedEntryMap,
        ByteIntMap,
        _ChunkedByteIntMap,
        ByteEntryMap,
        _ChunkedByteEntryMap,
    }
)
