"""A set of 64-bit fingerprints in an open-addressing numpy table: 16 bytes per state at <= 50% load.

Fingerprint mode may, with probability ~ n^2 / 2^65, merge two distinct states (as TLC and SPIN's
hash-compact do); `--full-states` stores the canonical states instead.
"""

from __future__ import annotations

import numpy as np

EMPTY = np.uint64(0)


class FingerprintSet:
    def __init__(self, capacity: int = 1 << 16):
        self.table = np.zeros(capacity, dtype=np.uint64)
        self.mask = capacity - 1
        self.n = 0

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)

    def _grow(self) -> None:
        old = self.table[self.table != EMPTY]
        self.table = np.zeros(len(self.table) * 2, dtype=np.uint64)
        self.mask = len(self.table) - 1
        self.n = 0
        for fp in old.tolist():
            self.add(fp)

    def _probe(self, fp: int) -> tuple[int, bool]:
        """Linear probing: the slot holding fp, or the empty slot where it would go."""
        t = self.table
        i = fp & self.mask
        while True:
            v = int(t[i])
            if v == 0 or v == fp:
                return i, v == fp
            i = (i + 1) & self.mask

    def add(self, fp: int) -> bool:
        """Insert; False if it was already present. Fingerprint 0 is remapped (0 marks empty slots)."""
        fp = fp or 1
        i, present = self._probe(fp)
        if present:
            return False
        self.table[i] = fp
        self.n += 1
        if self.n * 2 > len(self.table):
            self._grow()
        return True

    def __contains__(self, fp: int) -> bool:
        return self._probe(fp or 1)[1]

    def to_list(self) -> list[int]:
        return self.table[self.table != EMPTY].tolist()


class FullStateSet:
    """Stores canonical states themselves (no hash-collision risk; far more memory)."""

    def __init__(self) -> None:
        self.s: set[tuple] = set()

    def __len__(self) -> int:
        return len(self.s)

    def add(self, st: tuple) -> bool:
        if st in self.s:
            return False
        self.s.add(st)
        return True
