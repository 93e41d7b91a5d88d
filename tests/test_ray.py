"""--ray: the same answers on a (local, private) Ray cluster as in one process."""

from __future__ import annotations

import pytest

from septlab.explore.driver import run_batch
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.scenarios import load_scenario
from septlab.variants import get_variant

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    from septlab.explore.cluster import connect

    connect("local")
    yield
    ray.shutdown()


def test_run_batch_on_ray_is_the_one_process_batch(cluster, tmp_path):
    scn = load_scenario("seed")
    for var in (get_variant("bug-free-before-reclaim"), get_variant("tdx-free")):
        one = run_batch(scn, var, True, 0, 16)
        rb = run_batch(scn, var, True, 0, 16, ray=True)
        assert (one.counts, one.metrics, one.done) == (rb.counts, rb.metrics, rb.done)
        assert (one.first_bad and one.first_bad.choices) == (rb.first_bad and rb.first_bad.choices)


def test_a_variant_file_travels_by_its_text(cluster, tmp_path):
    f = tmp_path / "leaky.py"
    f.write_text('''from septlab.kvm.tdp_mmu import __tdp_mmu_free_sp as free_spt_only
from septlab.variants import Variant


def tdp_mmu_free_unused_sp(kvm, sp):
    kvm.sp_by_spt.pop(sp.spt, None)
    free_spt_only(kvm, sp)
    return 0
    yield


VARIANT = Variant("leaky-file", "test", {"tdp_mmu_free_unused_sp": tdp_mmu_free_unused_sp}, kind="mutant",
                  catches=("leak-at-destroy",))
''')
    var = get_variant(str(f))
    scn = load_scenario("seed")
    one = run_batch(scn, var, True, 0, 12)
    rb = run_batch(scn, var, True, 0, 12, ray=True)
    assert one.counts == rb.counts and one.metrics == rb.metrics


@pytest.mark.parametrize("variant", ["tdx-free", "bug-free-before-reclaim"])
def test_check_on_ray_counts_and_finds_what_one_process_does(cluster, variant):
    from septlab.explore.ray_check import run_ray_check

    scn = load_scenario("boot-teardown" if variant == "tdx-free" else "zap-yield", small=True)
    one = run_check(scn, get_variant(variant), False, CheckOptions(strategy="dfs", por=False, liveness=True))
    rc = run_ray_check(scn, get_variant(variant), False, CheckOptions(strategy="dfs", por=False, liveness=True), 2)
    if variant == "tdx-free":
        s, t = one.stats, rc.stats
        assert (s.states, s.transitions, s.revisits, s.terminal, one.complete) == \
            (t.states, t.transitions, t.revisits, t.terminal, rc.complete) == (580, s.transitions, s.revisits,
                                                                              s.terminal, True)
    else:
        assert rc.violation is not None and rc.violation.invariant == one.violation.invariant
        assert rc.choices


def test_unreachable_cluster_is_a_clean_error():
    from septlab.explore.cluster import RayUnavailable, connect

    with pytest.raises(RayUnavailable, match="cannot reach"):
        connect("127.0.0.1:1")


def test_a_killed_ray_worker_has_its_item_redone(cluster):
    from septlab.explore.ray_check import RayCheck

    class KillOnce(RayCheck):
        killed = False

        def _merge(self, pl):
            super()._merge(pl)
            if not self.killed:  # after the first finished item, kill a worker (busy or not)
                self.killed = True
                ray.kill(self.procs[0][0])

    rc = KillOnce(load_scenario("boot-teardown", small=True), get_variant("tdx-free"), False,
                  CheckOptions(strategy="dfs", por=False, liveness=False), 2)
    r = rc.run()
    assert rc.killed and r.complete and r.stats.states == 580
