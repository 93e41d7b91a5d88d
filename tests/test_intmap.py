"""IntMap (septlab/intmap.py) behaves as a dict of ints, in its small and its chunked form, with 8-byte
slots (IntMap, EntryMap) and 1-byte ones (ByteIntMap, ByteEntryMap: values 0..254)."""

from __future__ import annotations

import pickle
import random
import sys

import pytest

from septlab import intmap
from septlab.intmap import INTMAP_TYPES, ByteEntryMap, ByteIntMap, EntryMap, IntMap

ALL = [IntMap, EntryMap, ByteIntMap, ByteEntryMap]
BYTE = (ByteIntMap, ByteEntryMap)
# The values each kind holds: [lo, hi]
RANGE = {
    IntMap: (-(1 << 63) + 1, (1 << 63) - 1),
    EntryMap: (-(1 << 63) + 1, (1 << 63) - 1),
    ByteIntMap: (0, 254),
    ByteEntryMap: (0, 254),
}


def value(cls: type, n: int) -> int:
    """n itself, or (byte forms) n folded into 0..254."""
    return n % 255 if issubclass(cls, BYTE) else n


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("spread", [50, 5000, 1 << 40])
def test_random_operations_match_a_dict(cls: type, spread: int) -> None:
    rng = random.Random(spread * 7 + ALL.index(cls))
    lo, hi = RANGE[cls]
    m, d = cls(), {}
    for n in range(4000):
        k = rng.randrange(-spread, spread)
        op = rng.randrange(8)
        if op < 3:
            v = rng.randrange(max(lo, -(1 << 62)), min(hi, 1 << 62) + 1)
            m[k] = v
            d[k] = v
        elif op == 3:
            assert m.pop(k, None) == d.pop(k, None)
        elif op == 4 and k in d:
            del m[k]
            del d[k]
        elif op == 5:
            assert m.setdefault(k, 5) == d.setdefault(k, 5)
        else:
            assert m.get(k) == d.get(k) and (k in m) == (k in d)
        assert len(m) == len(d)
        if n % 500 == 0:
            assert m.items() == sorted(d.items()) and m == d and list(m) == sorted(d)
            assert type(m) in INTMAP_TYPES and isinstance(m, cls)
    assert m.items() == sorted(d.items())
    assert m.keys() == sorted(d) and m.values() == [v for _, v in sorted(d.items())]
    c = m.copy()
    assert c == m and type(c) is type(m) and cls(d) == m
    c[10**6] = 1
    assert c != m and 10**6 not in m


@pytest.mark.parametrize("cls", ALL)
def test_grows_into_chunks_and_gives_memory_back(cls: type) -> None:
    m = cls()
    n = intmap.SMALL + 10
    for k in range(1000, 1000 + n):
        m[k] = value(cls, k * 2)
    assert m._d is None and m._chunks and len(m) == n and type(m) is not cls and isinstance(m, cls)
    assert m[1000 + n - 1] == value(cls, 2 * (1000 + n - 1)) and 999 not in m and m.get(1000 + n) is None
    for k in range(1000, 1000 + n):
        del m[k]
    assert not m and m == {} and not m._chunks and type(m) is cls


@pytest.mark.parametrize("cls", [EntryMap, ByteEntryMap])
def test_entry_key_lanes_are_dense(cls: type) -> None:
    """S-EPT entry keys (gfn << 3 | level) of consecutive 4 KiB gfns share chunks."""
    m = cls()
    for gfn in range(100_000):
        m[(gfn << 3) | 1] = value(cls, gfn)
    assert len(m._chunks) == -(-100_000 // (1 << intmap.CHUNK_BITS))
    assert m[(99_999 << 3) | 1] == value(cls, 99_999) and (99_999 << 3) | 2 not in m


@pytest.mark.parametrize("cls", ALL)
def test_only_ints(cls: type) -> None:
    m = cls()
    with pytest.raises(TypeError):
        m[1] = (2, 3)  # type: ignore[assignment]
    with pytest.raises(TypeError):
        m["a"] = 1  # type: ignore[index]
    assert m.get("a") is None and "a" not in m
    with pytest.raises(KeyError):
        m[7]
    with pytest.raises(KeyError):
        del m[7]
    assert m.pop(7, "x") == "x"
    for k in range(intmap.SMALL + 1):
        m[k] = 0  # 0 is a value like any other
    assert m._d is None and m[3] == 0 and m.get("a") is None and "a" not in m
    with pytest.raises(KeyError):
        m["a"]


def test_footprints_see_intmap_elements() -> None:
    """The tracer wraps an IntMap attribute like a dict: one element is its own key."""
    from septlab.explore import footprint
    from septlab.explore.traced import REC
    from septlab.tdx_module.pamt import Pamt

    pamt = Pamt()
    pamt.ptype[5] = 3

    def record(body):  # type: ignore[no-untyped-def]
        rec = footprint.Recorder()
        footprint._install()
        REC[0] = rec
        try:
            body()
        finally:
            REC[0] = None
            footprint._uninstall()
        return rec.result()

    a = record(lambda: pamt.ptype.__setitem__(6, 1))
    b = record(lambda: pamt.ptype.get(5))
    c = record(lambda: sorted(pamt.ptype.items()))
    assert (("Pamt",), "ptype", 6) in a[1] and (("Pamt",), "ptype", 5) in b[0]
    assert not footprint.dependent(a, b) and footprint.dependent(a, c)
    assert isinstance(pamt.ptype, IntMap) and pamt.ptype == {5: 3, 6: 1}


@pytest.mark.parametrize("cls", ALL)
def test_values_out_of_range_are_refused(cls: type) -> None:
    """A value the slots cannot hold raises TypeError in either form, and leaves the map as it was:
    never truncated (a byte form's 256 is not 0), never a count or chunk of a store that failed.
    (The 8-byte small forms, plain dicts, test only for the sentinel -2**63: a range check would cost
    every small store, and a value past 2**63 - 1 is refused when the map spills into chunks.)"""
    lo, hi = RANGE[cls]
    bad = [lo - 1, hi + 1, -(1 << 70), 1 << 70, True] + ([-1, 255, 256, 1000] if cls in BYTE else [])
    m = cls({1: lo, 2: hi})
    for large in (False, True):
        if large:
            m.update((k, value(cls, k)) for k in range(1000, 1000 + intmap.SMALL))
            assert m._d is None
        before, chunks = m.items(), set(m._chunks)
        for k in (1, 3, 1 << 40):  # present, absent in a chunk, absent in no chunk
            for v in bad if large or cls in BYTE else [lo - 1, True]:
                with pytest.raises(TypeError):
                    m[k] = v
                with pytest.raises(TypeError):
                    m.setdefault(k | 1 << 50, v)
        assert m.items() == before and len(m) == len(before) and set(m._chunks) == chunks
        assert m[1] == lo and m[2] == hi
    with pytest.raises(TypeError):
        cls({5: lo - 1})


@pytest.mark.parametrize("cls", BYTE)
def test_byte_forms_take_a_byte_a_slot(cls: type) -> None:
    """100k dense keys in a byte form: ~1 byte a slot (chunks of 1,024 one-byte slots), against 8 in the
    8-byte form; the same items and equality across widths."""
    wide_cls = EntryMap if cls is ByteEntryMap else IntMap
    keys = [(g << 3) | 1 for g in range(100_000)] if cls is ByteEntryMap else range(100_000)
    m, wide = cls(), wide_cls()
    for i, k in enumerate(keys):
        m[k] = wide[k] = i % 9
    size = sum(sys.getsizeof(c) for c in m._chunks.values())
    wide_size = sum(sys.getsizeof(c) for c in wide._chunks.values())
    assert all(c.itemsize == 1 for c in m._chunks.values())
    assert 100_000 <= size <= 1.1 * 100_000 and wide_size >= 7 * size  # chunk headers: ~1.08 vs ~8.1
    assert m == wide and wide == m and m.items() == wide.items() and m == dict(wide.items())
    c = m.copy()
    assert type(c) is type(m) and c == m and all(x.itemsize == 1 for x in c._chunks.values())
    c[keys[0]] = 200
    assert c != m and m[keys[0]] == 0
    p = pickle.loads(pickle.dumps(m))
    assert type(p) is type(m) and p == m


def test_model_maps_use_the_byte_forms() -> None:
    """PAMT page types, S-EPT entry states and td_keyed HKIDs are small: the byte forms hold them."""
    from septlab.host.host import Host
    from septlab.tdx_module.pamt import PT_NAMES, Pamt
    from septlab.tdx_module.sept import SEPT_NAMES
    from septlab.tdx_module.td import Td

    assert type(Pamt().ptype) is ByteIntMap and type(Td(tdr=1, hkid=1).sept_state) is ByteEntryMap
    assert type(Host().td_keyed) is ByteIntMap
    assert all(0 <= v <= 254 for v in [*PT_NAMES, *SEPT_NAMES])
    assert {ByteIntMap, ByteEntryMap} <= INTMAP_TYPES and all(
        type(m) in INTMAP_TYPES
        for m in (ByteIntMap(dict.fromkeys(range(600), 1)), ByteEntryMap(dict.fromkeys(range(600), 1)))
    )


def test_byte_forms_run_copies_of_the_wide_code() -> None:
    """A byte form's large class runs the 8-byte one's bytecode with its own globals (sentinel 255,
    'B' chunks) and code objects of its own: CPython's per-code-object inline caches then stay
    specialised for each type (intmap.py, _BYTE_GLOBALS)."""
    for wide, byte in [
        (intmap._ChunkedIntMap, intmap._ChunkedByteIntMap),
        (intmap._ChunkedEntryMap, intmap._ChunkedByteEntryMap),
    ]:
        for name in ("get", "__getitem__", "__contains__", "__setitem__", "pop", "__delitem__", "items"):
            f, g = getattr(wide, name), getattr(byte, name)
            assert f.__code__ is not g.__code__ and f.__code__.co_code == g.__code__.co_code, name
            assert (f.__globals__["_ABSENT"], g.__globals__["_ABSENT"]) == (-(1 << 63), 255)
            assert g.__qualname__ == f"{byte.__name__}.{name}" and g.__module__ == "septlab.intmap"
