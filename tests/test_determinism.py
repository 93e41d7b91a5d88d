"""Same seed => byte-identical trace; a trace replays to the same violation and metrics."""

from __future__ import annotations

import json

from septlab.explore.driver import replay_trace, run_schedule, trace_header, trace_json, write_json_atomic
from septlab.scenarios import load_scenario
from septlab.variants import get_variant


def _trace(scn, variant, dpamt, seed):
    var = get_variant(variant)
    r = run_schedule(scn, var, dpamt, seed, history=False)
    return json.dumps(trace_json(trace_header(scn, var, dpamt, seed, scn.fault_rate, {}), r), sort_keys=False)


def test_same_seed_gives_byte_identical_trace(seed_scenario):
    for variant, dpamt in (("tdx-free", True), ("rcu-free", True), ("bug-pamt-put-missing", True)):
        for seed in (0, 7, 31):
            assert _trace(seed_scenario, variant, dpamt, seed) == _trace(seed_scenario, variant, dpamt, seed)


def test_different_seeds_explore_different_schedules(seed_scenario):
    assert len({_trace(seed_scenario, "tdx-free", False, s) for s in range(8)}) == 8


def test_history_does_not_change_the_run(seed_scenario):
    var = get_variant("rcu-free")
    a = run_schedule(seed_scenario, var, True, 5, history=False)
    b = run_schedule(seed_scenario, var, True, 5, history=True)
    assert (a.choices, a.steps, a.metrics) == (b.choices, b.steps, b.metrics)


def test_replay_reproduces_violation_and_metrics(tmp_path, seed_scenario):
    var = get_variant("bug-remove-without-track")
    r = run_schedule(seed_scenario, var, True, 3, history=False)
    assert r.violations
    path = tmp_path / "t.json"
    write_json_atomic(path, trace_json(trace_header(seed_scenario, var, True, 3, seed_scenario.fault_rate, {}), r))
    data, rep = replay_trace(path)
    assert [v.invariant for v in rep.violations] == [v["invariant"] for v in data["violations"]]
    assert rep.steps == data["steps"] and rep.metrics == data["metrics"]
    assert rep.choices == r.choices


def test_scenario_override_is_part_of_the_run():
    a = load_scenario("boot-teardown", {"memory": "4MiB"})
    b = load_scenario("boot-teardown", {"memory": "8MiB"})
    assert a.digest != b.digest and b.memory_pages == 2 * a.memory_pages == 2048
    ra = run_schedule(a, get_variant("tdx-free"), False, 0)
    rb = run_schedule(b, get_variant("tdx-free"), False, 0)
    assert ra.status == rb.status == "done" and not ra.violations and not rb.violations
    assert rb.metrics["seamcalls"]["TDH.MEM.PAGE.AUG"] == 2048
