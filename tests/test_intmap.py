"""IntMap (septlab/intmap.py) behaves as a dict of ints, in its small and its chunked form."""

from __future__ import annotations

import random

import pytest

from septlab import intmap
from septlab.intmap import INTMAP_TYPES, EntryMap, IntMap


@pytest.mark.parametrize("cls", [IntMap, EntryMap])
@pytest.mark.parametrize("spread", [50, 5000, 1 << 40])
def test_random_operations_match_a_dict(cls: type, spread: int) -> None:
    rng = random.Random(spread * 7 + (cls is EntryMap))
    m, d = cls(), {}
    for n in range(4000):
        k = rng.randrange(-spread, spread)
        op = rng.randrange(8)
        if op < 3:
            v = rng.randrange(-(1 << 62), 1 << 62)
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


def test_grows_into_chunks_and_gives_memory_back() -> None:
    m = IntMap()
    n = intmap.SMALL + 10
    for k in range(1000, 1000 + n):
        m[k] = k * 2
    assert m._d is None and m._chunks and len(m) == n and type(m) is not IntMap
    assert m[1000 + n - 1] == 2 * (1000 + n - 1) and 999 not in m and m.get(1000 + n) is None
    for k in range(1000, 1000 + n):
        del m[k]
    assert not m and m == {} and not m._chunks and type(m) is IntMap


def test_entry_key_lanes_are_dense() -> None:
    """S-EPT entry keys (gfn << 3 | level) of consecutive 4 KiB gfns share chunks."""
    m = EntryMap()
    for gfn in range(100_000):
        m[(gfn << 3) | 1] = gfn
    assert len(m._chunks) == -(-100_000 // (1 << intmap.CHUNK_BITS))
    assert m[(99_999 << 3) | 1] == 99_999 and (99_999 << 3) | 2 not in m


def test_only_ints() -> None:
    m = IntMap()
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
