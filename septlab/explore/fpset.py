"""A set of 64-bit fingerprints in an open-addressing numpy table: 16 bytes per state at <= 50% load.

Fingerprint mode may, with probability ~ n^2 / 2^65, merge two distinct states (as TLC and SPIN's
hash-compact do); `--full-states` stores the canonical states instead.

Both sets support what the explorer's checkpoints and Ctrl-C handling need: `add` can journal what it
inserted and `discard` takes it out again exactly (an interrupted step is rolled back, so the checkpoint
written after a KeyboardInterrupt never claims a state whose subtree was not explored), and the
fingerprint set is saved and loaded as a raw uint64 array, inserted in bulk with numpy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

EMPTY = np.uint64(0)
MIN_CAPACITY = 1 << 16


def _insert_distinct(table: np.ndarray, fps: np.ndarray) -> None:
    """Vectorised linear-probing insert of distinct, nonzero fingerprints none of which is in `table` yet.

    Each round, every pending fingerprint whose current slot is empty may claim it (one winner per slot);
    all others move one slot on. A fingerprint only ever moves past occupied slots, which is exactly the
    invariant `_probe` relies on, so lookups find every fingerprint inserted this way."""
    mask = np.uint64(len(table) - 1)
    pending = fps
    slot = (pending & mask).astype(np.intp)
    while pending.size:
        free = np.flatnonzero(table[slot] == EMPTY)
        if free.size:
            _, first = np.unique(slot[free], return_index=True)
            win = free[first]
            table[slot[win]] = pending[win]
            keep = np.ones(pending.size, dtype=bool)
            keep[win] = False
            pending = pending[keep]
            slot = slot[keep]
        slot = (slot + 1) & int(mask)


def probe(table: np.ndarray, fp: int) -> tuple[int, bool]:
    """Linear probing in a power-of-two table: the slot holding fp, or the empty slot where it would go."""
    mask = len(table) - 1
    i = fp & mask
    while True:
        v = int(table[i])
        if v == 0 or v == fp:
            return i, v == fp
        i = (i + 1) & mask


class FingerprintSet:
    def __init__(self, capacity: int = MIN_CAPACITY):
        self.table = np.zeros(capacity, dtype=np.uint64)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)

    @staticmethod
    def _capacity(n: int) -> int:
        cap = MIN_CAPACITY
        while n * 2 > cap:
            cap *= 2
        return cap

    def _grow(self) -> None:
        """Double the table. The new table is built aside and swapped in with one assignment (the mask is
        derived from the table's length), so an interrupt here leaves either the old or the new table."""
        old = self.table
        new = np.zeros(len(old) * 2, dtype=np.uint64)
        _insert_distinct(new, old[old != EMPTY])
        self.table = new

    def _probe(self, fp: int) -> tuple[int, bool]:
        return probe(self.table, fp)

    def add(self, fp: int, journal: list[Any] | None = None) -> bool:
        """Insert; False if it was already present. Fingerprint 0 is remapped (0 marks empty slots).
        A new fingerprint is appended to `journal` before it is stored, so it can be discarded again."""
        fp = fp or 1
        i, present = self._probe(fp)
        if present:
            return False
        if journal is not None:
            journal.append(fp)
        self.table[i] = fp
        self.n += 1
        if self.n * 2 > len(self.table):
            self._grow()
        return True

    def discard(self, fp: int) -> bool:
        """Remove fp (backward-shift deletion, so no tombstones and every other lookup stays exact)."""
        fp = fp or 1
        i, present = self._probe(fp)
        if not present:
            return False
        t = self.table
        mask = len(t) - 1
        j = i
        while True:
            j = (j + 1) & mask
            v = int(t[j])
            if v == 0:
                break
            home = v & mask
            # v may fill the hole at i unless its home slot lies cyclically in (i, j]
            if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
                t[i] = v
                i = j
        t[i] = 0
        self.n -= 1
        return True

    def recount(self) -> None:
        """Recompute the size from the table (after a rollback that an interrupt may have cut short)."""
        self.n = int(np.count_nonzero(self.table))

    def __contains__(self, fp: int) -> bool:
        return self._probe(fp or 1)[1]

    def to_array(self) -> np.ndarray:
        """The stored fingerprints (nonzero, distinct) as a uint64 array, in table order."""
        return self.table[self.table != EMPTY]

    def to_list(self) -> list[int]:
        return self.to_array().tolist()

    @classmethod
    def from_array(cls, fps: np.ndarray) -> FingerprintSet:
        """A set holding `fps` (distinct and nonzero: the caller checks), built in bulk."""
        s = cls(cls._capacity(len(fps)))
        _insert_distinct(s.table, np.ascontiguousarray(fps, dtype=np.uint64))
        s.n = len(fps)
        return s


class FullStateSet:
    """Stores canonical states themselves (no hash-collision risk; far more memory)."""

    def __init__(self, states: Iterable[tuple] = ()) -> None:
        self.s: set[tuple] = set(states)

    def __len__(self) -> int:
        return len(self.s)

    def add(self, st: tuple, journal: list[Any] | None = None) -> bool:
        if st in self.s:
            return False
        if journal is not None:
            journal.append(st)
        self.s.add(st)
        return True

    def discard(self, st: tuple) -> bool:
        if st in self.s:
            self.s.discard(st)
            return True
        return False

    def recount(self) -> None:
        """Nothing to do: the Python set's size is always exact."""
