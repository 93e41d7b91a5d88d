"""The command-line contract: exit codes, one-line errors naming file/line/field, JSON shapes, plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def septlab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", "from septlab.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300)


def assert_clean_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    text = p.stdout + p.stderr
    assert p.returncode == 2, text
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("body,needles", [
    ("name: x\nthreads: [\n  - {kind: vcpu\n", ["broken.yaml:", "YAML syntax error"]),
    ("name: x\nthreads: 17\n", ["broken.yaml:2:", "threads", "not of type 'array'"]),
    ("name: x\nthreads:\n  - kind: vpcu\n    vcpu: 0\n", ["broken.yaml:3:", "threads[0].kind"]),
    ("name: x\nvcpus: 1\nthreads:\n  - kind: vcpu\n    vcpu: 3\n    access: []\n", ["broken.yaml:5:", "threads[0].vcpu"]),
    ("name: x\nthreads:\n  - kind: vcpu\n    vcpu: 0\n    access:\n      - {gfn: -1}\n", ["broken.yaml:6:", "gfn"]),
    ("name: x\nfaults: {TDH.MEM.NOPE: [TDX_OPERAND_BUSY]}\nthreads:\n  - {kind: zapper, ops: []}\n",
     ["broken.yaml:2:", "faults"]),
    ("- just\n- a list\n", ["broken.yaml:1:", "mapping"]),
])
def test_malformed_scenarios_give_one_line_with_file_line_field(tmp_path, body, needles):
    f = tmp_path / "broken.yaml"
    f.write_text(body)
    assert_clean_error(septlab("run", "--scenario", str(f), "--variant", "tdx-free"), *needles)


def test_binary_scenario_and_missing_file(tmp_path):
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"\x00\xff\xfe garbage")
    assert_clean_error(septlab("run", "--scenario", str(f), "--variant", "tdx-free"), "bin.yaml", "UTF-8")
    assert_clean_error(septlab("run", "--scenario", str(tmp_path / "nope.yaml"), "--variant", "tdx-free"), "nope.yaml")


@pytest.mark.parametrize("args,needle", [
    (["run", "--scenario", "seed", "--variant", "no-such"], "unknown variant 'no-such'"),
    (["run", "--scenario", "seed", "--variant", "tdx-free", "--schedules", "0"], "--schedules"),
    (["run", "--scenario", "seed", "--variant", "tdx-free", "--bogus"], "--bogus"),
    (["run", "--scenario", "seed", "--variant", "tdx-free", "--set", "vcpus=lots"], "vcpus"),
    (["compare", "--scenario", "seed", "--variants", "tdx-free", "--dpamt", "sometimes"], "--dpamt"),
    (["compare", "--scenario", "seed", "--variants", ","], "--variants"),
])
def test_bad_flags_give_one_line(args, needle):
    assert_clean_error(septlab(*args), needle)


def test_bad_traces(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1, "scenario": "seed"')
    assert_clean_error(septlab("replay", str(bad)), "bad.json:", "invalid JSON")
    bad.write_text(json.dumps({"format": 2, "scenario": "seed", "variant": "tdx-free", "dpamt": "yes", "seed": 0,
                               "choices": "", "digest": "0", "steps": 0}))
    assert_clean_error(septlab("replay", str(bad)), "field 'dpamt'")
    assert_clean_error(septlab("replay", str(tmp_path / "missing.json")), "no such trace")


def test_run_exit_codes_trace_and_replay(tmp_path):
    ok = septlab("run", "--scenario", "seed", "--variant", "tdx-free", "--schedules", "5", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "no invariant violated in 5 schedule(s)" in ok.stdout
    bad = septlab("run", "--scenario", "seed", "--variant", "rcu-free", "--dpamt", "--schedules", "2",
                  "--json", "r.json", cwd=tmp_path)
    assert bad.returncode == 1
    assert "WARNING: inconsistent lock state" in bad.stdout and "tdx_pamt_put" in bad.stdout
    assert "{SOFTIRQ-ON-W} -> {IN-SOFTIRQ-W}" in bad.stdout
    trace = tmp_path / "septlab-traces" / "seed-rcu-free-dpamt-seed0.json"
    assert trace.is_file() and f"septlab replay {trace.relative_to(tmp_path)}" in bad.stdout
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["violations"] == {"lock-context": 2}
    rep = septlab("replay", str(trace))
    assert rep.returncode == 1 and "same violations, same metrics" in rep.stdout


def test_kasan_report_names_alloc_and_free(tmp_path):
    p = septlab("run", "--scenario", "seed", "--variant", "bug-free-before-reclaim", cwd=tmp_path)
    assert p.returncode == 1
    assert "invariant 'free-while-tdx-owned'" in p.stdout
    assert "PT_EPT" in p.stdout and "--- page" in p.stdout and "TDH.MEM.SEPT.ADD: ok" in p.stdout


def test_compare_json_shape_and_plot(tmp_path):
    p = septlab("compare", "--scenario", "seed", "--variants", "rcu-free,tdx-free", "--dpamt", "both",
                "--schedules", "4", "--json", "c.json", "--plot", "c.png", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    d = json.loads((tmp_path / "c.json").read_text())
    assert d["scenario"] == "seed"
    rows = {(r["variant"], r["dpamt"]): r for r in d["results"]}
    assert set(rows) == {("rcu-free", False), ("rcu-free", True), ("tdx-free", False), ("tdx-free", True)}
    for r in rows.values():
        assert r["schedules"] == 4
        assert isinstance(r["metrics"]["peak_pages"], int) and r["metrics"]["peak_pages"] > 0
        assert "TDH.MEM.SEPT.ADD" in r["metrics"]["seamcalls"]
    assert rows[("rcu-free", True)]["violations"]["lock-context"] == 4
    assert rows[("rcu-free", False)]["metrics"]["retained_page_steps"] > rows[("tdx-free", False)]["metrics"]["retained_page_steps"] == 0
    png = (tmp_path / "c.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_listings():
    v = septlab("variants")
    assert v.returncode == 0 and "tdx-free" in v.stdout and "bug-rcu-no-grace-period" in v.stdout
    s = septlab("scenarios")
    assert s.returncode == 0 and all(n in s.stdout for n in ("seed", "boot-teardown", "conversion-storm"))
    h = septlab("--help")
    assert h.returncode == 0 and "septlab compare" in h.stdout


def test_user_variant_from_file(tmp_path):
    f = tmp_path / "my_variant.py"
    f.write_text(
        "from septlab.variants import Variant\n"
        "def tdx_track(kvm):\n"
        "    return 0\n"
        "    yield\n"
        "VARIANT = Variant('my-no-track', 'mine', {'tdx_track': tdx_track}, kind='mutant')\n")
    p = septlab("run", "--scenario", "seed", "--variant", str(f), cwd=tmp_path)
    assert p.returncode == 1 and "TDX_TLB_TRACKING_NOT_DONE" in p.stdout
    trace = next((tmp_path / "septlab-traces").glob("*.json"))
    assert septlab("replay", str(trace), "--variant", str(f)).returncode == 1
    f.write_text("VARIANT = 3\n")
    assert_clean_error(septlab("run", "--scenario", "seed", "--variant", str(f)), "my_variant.py", "VARIANT")
    f.write_text("from septlab.variants import Variant\nVARIANT = Variant('x', 'y', {'no_such_hook': 1})\n")
    assert_clean_error(septlab("run", "--scenario", "seed", "--variant", str(f)), "unknown hook 'no_such_hook'")


def test_run_keeps_each_swarm_configurations_fault_rate(tmp_path):
    """Without --fault-rate, `septlab run` used to force the scenario's base rate on every swarm
    configuration, so seed's BUSY-heavy configurations (fault rates 0.3 and 0.5) never ran as written:
    the CLI and run_schedule() disagreed on the same seeds. Now they are the same schedules, and the trace
    records the rate its schedule ran with."""
    from septlab.explore.driver import run_schedule
    from septlab.scenarios import load_scenario
    from septlab.variants import get_variant

    scn, var = load_scenario("seed"), get_variant("bug-sept-zap-gate-racy")
    hits = [s for s in range(45, 60) if run_schedule(scn, var, True, s, history=False).violations]
    assert hits
    p = septlab("run", "--scenario", "seed", "--variant", "bug-sept-zap-gate-racy", "--dpamt", "--seed", "45",
                "--schedules", "15", "--trace-dir", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "each swarm configuration its own" in p.stderr
    trace = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert trace["seed"] == hits[0] and trace["fault_rate"] == scn.alternative(hits[0]).fault_rate
