"""Containers seen through the footprint tracer: element reads and writes are recorded one by one.

While a step's footprint is recorded (explore/footprint.py), reading a dict (or an IntMap, which has a
dict's interface: septlab/intmap.py), set or (some) list attribute of a state object returns one of
these wrappers around the very same container, so that `d.get(k)`, `k in s` or `sptes[i] = v` become
reads and writes of the element key `(object, attr, k)` instead of the whole attribute. Anything that looks at the whole container (iteration, `len`, a method
not listed here) is a read of the whole attribute; anything that changes it other than one element is a
write of the whole attribute. A wrapper kept in a generator local across a `yield` goes on recording
into whichever step is being recorded (or nowhere, outside one). Assigning a wrapper to an attribute
stores the container itself, and the canonical state (explore/state.py) sees through it.
"""

from __future__ import annotations

from typing import Any

# The recorder of the step being run, or None: [Recorder | None], shared with explore/footprint.py.
REC: list[Any] = [None]


class Traced:
    """Base of the wrappers: the container `_c` and the key `_k` of the attribute holding it."""

    __slots__ = ("_c", "_k")

    def __init__(self, c: Any, k: tuple[Any, ...]):
        self._c = c
        self._k = k

    # --- recording -----------------------------------------------------------------------------------
    def _rw(self, elem: Any = None, write: bool = False, whole: bool = False) -> None:
        rec = REC[0]
        if rec is None:
            return
        key = self._k if whole else (*self._k, elem)
        if not whole:
            rec.elem_parent(key, write)
        (rec.writes if write else rec.reads).add(key)
        if write:
            rec.reads.add(key)

    def _get(self, elem: Any, v: Any) -> Any:
        rec = REC[0]
        if rec is not None:
            rec.elem_value((*self._k, elem), v)
        return v

    def _whole(self) -> Any:
        self._rw(whole=True)
        return self._c

    def _changes(self) -> Any:
        self._rw(whole=True, write=True)
        return self._c

    # --- the whole container -------------------------------------------------------------------------
    def __iter__(self) -> Any:
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())

    def __bool__(self) -> bool:
        return bool(self._whole())

    def __eq__(self, other: Any) -> bool:
        return self._whole() == (other._c if isinstance(other, Traced) else other)

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._whole())

    def copy(self) -> Any:
        return self._whole().copy()

    def clear(self) -> None:
        self._changes().clear()

    def __getattr__(self, name: str) -> Any:
        """Any other method: read and write of the whole attribute (conservative)."""
        self._rw(whole=True, write=True)
        return getattr(self._c, name)


class TracedDict(Traced):
    __slots__ = ()

    def __getitem__(self, k: Any) -> Any:
        self._rw(k)
        return self._get(k, self._c[k])

    def get(self, k: Any, default: Any = None) -> Any:
        self._rw(k)
        return self._get(k, self._c.get(k, default))

    def __contains__(self, k: Any) -> bool:
        self._rw(k)
        return k in self._c

    def __setitem__(self, k: Any, v: Any) -> None:
        self._rw(k, write=True)
        self._c[k] = unwrap(v)

    def __delitem__(self, k: Any) -> None:
        self._rw(k, write=True)
        del self._c[k]

    def pop(self, k: Any, *default: Any) -> Any:
        self._rw(k, write=True)
        return self._c.pop(k, *default)

    def setdefault(self, k: Any, default: Any = None) -> Any:
        self._rw(k, write=k not in self._c)
        return self._get(k, self._c.setdefault(k, unwrap(default)))

    def keys(self) -> Any:
        return self._whole().keys()

    def values(self) -> Any:
        return self._whole().values()

    def items(self) -> Any:
        return self._whole().items()

    def update(self, *a: Any, **kw: Any) -> None:
        self._changes().update(*a, **kw)


class TracedSet(Traced):
    __slots__ = ()

    def __contains__(self, x: Any) -> bool:
        self._rw(x)
        return x in self._c

    def add(self, x: Any) -> None:
        self._rw(x, write=True)
        self._c.add(x)

    def discard(self, x: Any) -> None:
        self._rw(x, write=True)
        self._c.discard(x)

    def remove(self, x: Any) -> None:
        self._rw(x, write=True)
        self._c.remove(x)

    def _other(self, o: Any) -> Any:
        return o._c if isinstance(o, Traced) else o

    def __or__(self, o: Any) -> Any:
        return self._whole() | self._other(o)

    def __and__(self, o: Any) -> Any:
        return self._whole() & self._other(o)

    def __sub__(self, o: Any) -> Any:
        return self._whole() - self._other(o)

    def __xor__(self, o: Any) -> Any:
        return self._whole() ^ self._other(o)

    def __ror__(self, o: Any) -> Any:
        return self._other(o) | self._whole()

    def __rand__(self, o: Any) -> Any:
        return self._other(o) & self._whole()

    def __rsub__(self, o: Any) -> Any:
        return self._other(o) - self._whole()

    def __rxor__(self, o: Any) -> Any:
        return self._other(o) ^ self._whole()


# The pseudo-element of an element-indexed list that is its length (never an index: those are ints >= 0).
LEN = "len"


class TracedList(Traced):
    """Element-indexed lists and arrays only (an SPTE table, a page-owner bytearray): anything that moves
    elements (append, pop, insert, sort) is a write of the whole list. For the reductions' footprint
    (Recorder.por) `len()` and truth read the element LEN only: an element assignment cannot change the
    length, and everything that can is a whole write, which overlaps LEN like any element."""

    __slots__ = ()

    def __len__(self) -> int:
        rec = REC[0]
        if rec is not None and rec.por:
            self._rw(LEN)
            return len(self._c)
        return len(self._whole())

    def __bool__(self) -> bool:
        return self.__len__() > 0

    def __getitem__(self, i: Any) -> Any:
        if type(i) is int and i >= 0:
            self._rw(i)
            return self._get(i, self._c[i])
        return self._whole()[i]

    def __setitem__(self, i: Any, v: Any) -> None:
        if type(i) is int and i >= 0:
            self._rw(i, write=True)
            self._c[i] = unwrap(v)
        else:
            self._changes()[i] = v

    def __contains__(self, x: Any) -> bool:
        return x in self._whole()

    def index(self, *a: Any) -> int:
        return self._whole().index(*a)

    def count(self, x: Any) -> int:
        return self._whole().count(x)

    def append(self, x: Any) -> None:
        self._changes().append(unwrap(x))


def unwrap(v: Any) -> Any:
    """The container behind a wrapper (what is stored and what the canonical state sees)."""
    return v._c if isinstance(v, Traced) else v


TRACED_TYPES = (TracedDict, TracedSet, TracedList)
