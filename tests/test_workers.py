"""--workers: the same answers from one process and from a pool, and a dead worker's work redone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from septlab.explore.driver import run_batch
from septlab.explore.pool import WorkerDied, chunks, ordered_map
from septlab.scenarios import load_scenario
from septlab.variants import get_variant


def _summary(b):  # everything a run/compare report is made of
    return (b.done, b.bounded, b.counts, b.metrics, b.first_series, b.retained_series,
            b.first_bad and (b.first_bad.seed, b.first_bad.choices, [v.title for v in b.first_bad.violations]))


@pytest.mark.parametrize("variant", ["tdx-free", "bug-free-before-reclaim"])
def test_batch_is_the_same_with_two_workers(variant):
    scn = load_scenario("seed")
    one = run_batch(scn, get_variant(variant), True, 0, 24)
    two = run_batch(scn, get_variant(variant), True, 0, 24, workers=2)
    assert _summary(one) == _summary(two)
    if variant.startswith("bug-"):
        assert two.counts and two.first_bad is not None


def test_chunks_cover_every_item_once():
    for n in (1, 7, 100, 1001):
        for w in (1, 2, 3):
            got = [i for c in chunks(n, w) for i in c]
            assert got == list(range(n))


def _die_once(marker: Path):
    def job(x: int) -> int:
        if x == 3 and not marker.exists():
            marker.write_text("died")
            os.kill(os.getpid(), signal.SIGKILL)
        return x * x
    return job


def test_a_dead_worker_has_its_work_redone(tmp_path):
    assert list(ordered_map(_die_once(tmp_path / "m"), list(range(10)), 2)) == [x * x for x in range(10)]
    assert (tmp_path / "m").exists()


def test_a_chunk_that_always_kills_its_worker_is_an_error():
    def job(x: int) -> int:
        if x == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    with pytest.raises(WorkerDied, match="item 1"):
        list(ordered_map(job, [0, 1, 2], 2))
