"""`septlab explain`: race diagrams of real counterexamples, golden-tested, and --explain on run/check/replay.

The golden files are the exact text a developer would paste into a reply. When the model changes on
purpose, regenerate them with `SEPTLAB_UPDATE_GOLDEN=1 pytest tests/test_explain.py` and read the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from septlab.check.explain import Recording, explain_trace, involved, recorder, relevant
from septlab.explore.driver import run_schedule, trace_header, trace_json, write_json_atomic
from septlab.scenarios import load_scenario
from septlab.variants import get_variant

GOLDEN = Path(__file__).parent / "golden"
# (scenario, variant, DPAMT, seed): a KASAN use-after-free race (a lockless walker against a page table
# freed without a grace period) and a WARN (a BUSY the no-fail removal path does not retry)
CASES = {
    "rcu-no-grace-period": ("seed", "bug-rcu-no-grace-period", True, 0),
    "busy-no-retry": ("seed", "bug-busy-no-retry", True, 1),
}


def _trace(tmp_path: Path, scenario: str, variant: str, dpamt: bool, seed: int) -> Path:
    scn = load_scenario(scenario)
    var = get_variant(variant)
    r = run_schedule(scn, var, dpamt, seed, history=False)
    assert r.violations, "the mutant no longer violates anything on this seed: pick another"
    path = tmp_path / f"{variant}.json"
    write_json_atomic(path, trace_json(trace_header(scn, var, dpamt, seed, scn.fault_rate, {}), r))
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_explain_matches_golden(tmp_path, name):
    path = _trace(tmp_path, *CASES[name])
    _data, _res, text = explain_trace(path)
    assert text is not None
    text = text.replace(str(path), "TRACE.json") + "\n"
    golden = GOLDEN / f"explain-{name}.txt"
    if os.environ.get("SEPTLAB_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_race_shows_the_free_and_the_use_in_their_own_columns(tmp_path):
    """The UAF diagram draws the freeing step (zapper) and the use (vcpu1) in different columns, with
    the page's free from its history, and leaves out steps that touch none of the objects."""
    path = _trace(tmp_path, *CASES["rcu-no-grace-period"])
    _d, res, text = explain_trace(path)
    lines = text.splitlines()
    header = next(ln for ln in lines if ln.lstrip().startswith("vcpu0"))
    cols = {t: header.index(t) for t in ("vcpu1", "zapper")}
    freed = next(i for i, ln in enumerate(lines) if "freed" in ln and "free_page()" in ln)
    assert lines[freed].index("=>") > cols["zapper"]  # under the zapper's column
    use = next(ln for ln in lines if ln.startswith(f"#{res.violations[0].step} "))
    assert cols["vcpu1"] <= len(use) - len(use.lstrip(" #0123456789")) + 1 or "tdp_read_spte" in use
    assert "BUG: KASAN: use-after-free" in text
    drawn = [ln for ln in lines if ln.startswith("#")]
    assert 3 < len(drawn) < res.steps // 4


def test_relevance_is_by_footprint_not_by_label():
    """Only steps whose recorded footprint touches the violation's page are drawn: a step of the same
    kind (a tdp_read_spte) on another page is not."""
    scn = load_scenario("seed")
    rec = Recording()
    r = run_schedule(scn, get_variant("bug-rcu-no-grace-period"), True, 0, history=True, observer=recorder(rec))
    v = r.violations[0]
    inv = involved(v, rec)
    assert v.pfns[0] in inv.pfns and inv.sps
    rows = relevant(rec, v, inv)
    assert rows[-1].step == v.step
    reads = [s for s in rec.steps[: v.step] if "tdp_read_spte" in s.chain]
    assert len([s for s in reads if s in rows]) < len(reads)
    assert len(rec.steps) == r.steps  # every step recorded exactly once


def test_explain_cli_and_explain_flags(tmp_path):
    from click.testing import CliRunner

    from septlab.cli import cli

    path = _trace(tmp_path, *CASES["busy-no-retry"])
    runner = CliRunner()
    res = runner.invoke(cli, ["explain", str(path)])
    assert res.exit_code == 0, res.output
    assert "septlab explain: 'busy-in-no-fail-path'" in res.output and "zapper1" in res.output
    rep = runner.invoke(cli, ["replay", "--explain", str(path)])
    assert rep.exit_code == 1 and "septlab explain:" in rep.output and "same violations" in rep.output
    run = runner.invoke(cli, ["run", "-s", "seed", "-v", "bug-busy-no-retry", "--dpamt", "--seed", "1", "--explain",
                              "--trace-dir", str(tmp_path / "t")])
    assert run.exit_code == 1 and "septlab explain:" in run.output and "^ WARNING: TDH.MEM.PAGE.REMOVE" in run.output


def test_explain_refuses_a_clean_trace(tmp_path, capsys):
    from septlab.cli import main

    scn = load_scenario("seed")
    var = get_variant("tdx-free")
    r = run_schedule(scn, var, False, 0, history=False)
    path = tmp_path / "clean.json"
    write_json_atomic(path, trace_json(trace_header(scn, var, False, 0, scn.fault_rate, {}), r))
    with pytest.raises(SystemExit) as e:
        main(["explain", str(path)])
    assert e.value.code == 2
    assert "nothing to explain" in capsys.readouterr().err


def test_check_explain_draws_the_counterexample(tmp_path, capsys):
    from septlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["check", "--scenario", "boot-teardown", "--variant", "bug-frozen-on-hook-failure", "--explain",
              "--trace-dir", str(tmp_path)])
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert "septlab explain: 'frozen-spte-left'" in out and "tdx_sept_map_nonleaf_spte(): TDH.MEM.SEPT.ADD" in out
    assert "the steps touching pfn" in out and "explorer check/bfs" in out
