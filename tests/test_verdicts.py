"""Trustworthy verdicts: never a pass that wasn't earned, never a lost result, nothing run that wasn't asked for.

One result status (complete / bounded: why / violated) in every command, table and JSON; bad input and
unwritable outputs are one line + exit 2 before the work; traces are data; Ctrl-C keeps what finished.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from rich.console import Console

from septlab.explore.driver import TraceError, load_trace, run_batch, run_schedule, trace_header, trace_json
from septlab.explore.verdict import BOUNDED, COMPLETE, VIOLATED, batch_verdict, schedule_verdict
from septlab.outputs import OutputError, check_output_path, printable, safe_filename, write_json_atomic
from septlab.scenarios import load_scenario
from septlab.variants import get_variant
from tests.test_cli import ROOT, assert_clean_error, septlab

LOOPING_HOOK = (
    "from septlab.variants import Variant\n"
    "from septlab.host.task import Op, OP_RUN\n"
    "def tdx_track(kvm):\n"
    "    while True:  # never returns: the run can only end at the step bound\n"
    "        yield Op(OP_RUN, None, 'spin')\n"
    "    return 0\n"
    "VARIANT = Variant('looping-track', 'tdx_track spins forever', {'tdx_track': tdx_track})\n")


# --- 1. bounded is never a pass ----------------------------------------------------------------------

def test_schedule_verdicts():
    assert schedule_verdict("done", [], 10).kind == COMPLETE
    v = schedule_verdict("step-bound", [], 150)
    assert v.kind == BOUNDED and "max_steps 150" in v.why and v.exit_code == 4 and not v.passed
    assert schedule_verdict("step-bound", ["use-after-free"], 150).kind == VIOLATED
    assert batch_verdict(10, 10, 0, {}, False).exit_code == 0
    assert batch_verdict(10, 4, 0, {}, True).exit_code == 130
    assert batch_verdict(10, 4, 0, {"double-free": 1}, True).exit_code == 1
    assert "interrupted after 4 of 10" in batch_verdict(10, 4, 0, {}, True).why


def test_step_bound_hides_a_leak_and_is_reported_bounded(tmp_path):
    """bug-leak-unused-sp is caught only by the end-of-run check; cut at 150 steps it must not pass."""
    scn = load_scenario("seed", {"max_steps": "150"})
    r = run_schedule(scn, get_variant("bug-leak-unused-sp"), True, 0, history=False)
    assert r.status == "step-bound" and r.verdict.kind == BOUNDED
    p = septlab("run", "--scenario", "seed", "--variant", "bug-leak-unused-sp", "--set", "max_steps=150",
                "--schedules", "3", "--json", "r.json", cwd=tmp_path)
    assert p.returncode == 4, p.stdout + p.stderr
    assert "no invariant violated" not in p.stdout
    assert "result: bounded: 3 of 3 schedules cut short" in p.stdout and "NOT a pass" in p.stdout
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["kind"] == "bounded" and d["schedules_bounded"] == 3 and d["status"].startswith("bounded: ")


def test_hook_that_loops_forever_is_a_soft_lockup_or_bounded_never_a_pass(tmp_path):
    f = tmp_path / "loop.py"
    f.write_text(LOOPING_HOOK)
    # cut off before the soft-lockup watchdog's 2,000 steps: bounded
    p = septlab("run", "--scenario", "seed", "--variant", str(f), "--set", "max_steps=1500", cwd=tmp_path)
    assert p.returncode == 4, p.stdout + p.stderr
    assert "bounded" in p.stdout and "max_steps 1500" in p.stdout
    # past it: the watchdog names the spinning task
    p = septlab("run", "--scenario", "seed", "--variant", str(f), "--set", "max_steps=3000", cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "watchdog: BUG: soft lockup" in p.stdout and "violated: soft-lockup" in p.stdout


def test_compare_rows_carry_status_and_fail_on_violation(tmp_path):
    p = septlab("compare", "--scenario", "seed", "--variants", "tdx-free,bug-leak-unused-sp", "--dpamt", "on",
                "--schedules", "2", "--set", "max_steps=150", "--json", "c.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "c.json").read_text())["results"]
    assert {r["kind"] for r in rows} == {"bounded"} and all(r["schedules_bounded"] == 2 for r in rows)
    assert "NOT shown safe" in p.stdout and "safe in" not in p.stdout
    p = septlab("compare", "--scenario", "seed", "--variants", "tdx-free", "--dpamt", "on", "--schedules", "2",
                "--set", "max_steps=150", "--fail-on-violation", cwd=tmp_path)
    assert p.returncode == 4
    p = septlab("compare", "--scenario", "seed", "--variants", "tdx-free,rcu-free", "--dpamt", "on",
                "--schedules", "2", "--fail-on-violation", cwd=tmp_path)
    assert p.returncode == 1
    p = septlab("compare", "--scenario", "seed", "--variants", "tdx-free", "--dpamt", "on", "--schedules", "2",
                "--fail-on-violation", cwd=tmp_path)
    assert p.returncode == 0


# --- 3. one error boundary ----------------------------------------------------------------------------

def _trace(tmp_path: Path, variant: str = "rcu-free", dpamt: bool = True) -> Path:
    scn = load_scenario("seed")
    var = get_variant(variant)
    r = run_schedule(scn, var, dpamt, 0, history=False)
    path = tmp_path / "t.json"
    write_json_atomic(path, trace_json(trace_header(scn, var, dpamt, 0, scn.fault_rate, {}), r))
    return path


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d.update(dpamt=not d["dpamt"]), "field 'digest'"),
    (lambda d: d.update(choices=d["choices"][: len(d["choices"]) // 2]), "field 'digest'"),
    (lambda d: d.update(variant="tdx-free"), "field 'digest'"),
    (lambda d: d.update(set=["max_steps", "1"]), "field 'set'"),
    (lambda d: d.update(seed="zero"), "field 'seed'"),
])
def test_edited_traces_are_refused_in_one_line(tmp_path, edit, needle):
    path = _trace(tmp_path)
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    assert_clean_error(septlab("replay", str(path)), needle)


def test_trace_that_does_not_replay_is_bad_input_not_a_violation(tmp_path):
    """A consistent trace (digest recomputed) of another model: divergence is exit 2, not exit 1 or 3."""
    from septlab.explore.driver import _digest

    path = _trace(tmp_path)
    d = json.loads(path.read_text())
    d["dpamt"] = False
    d["digest"] = _digest(d)
    path.write_text(json.dumps(d))
    assert_clean_error(septlab("replay", str(path)), "does not replay")
    d["choices"] = ".".join(d["choices"].split(".")[:5])
    d["digest"] = _digest(d)
    path.write_text(json.dumps(d))
    assert_clean_error(septlab("replay", str(path)), "does not replay")


def test_trace_directory_deep_nesting_and_huge_values(tmp_path):
    assert_clean_error(septlab("replay", str(tmp_path)), "is a directory")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert_clean_error(septlab("replay", str(deep)), "deep.json")
    with pytest.raises(TraceError):
        load_trace(deep)


def test_replay_never_imports_the_file_a_trace_names(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\n"
                    "from septlab.variants import Variant\nVARIANT = Variant('evil', 'x')\n")
    path = _trace(tmp_path, "tdx-free")
    from septlab.explore.driver import _digest

    for name in (str(evil), "evil"):
        d = json.loads(path.read_text())
        d["variant"], d["variant_file"], d["variant_source"] = name, str(evil), str(evil)
        d["digest"] = _digest(d)
        path.write_text(json.dumps(d))
        assert_clean_error(septlab("replay", str(path)), "--variant")
        assert not marker.exists()


def test_user_variant_trace_replays_with_variant_given_on_the_command_line(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text("from septlab.variants import Variant\n"
                 "def tdx_track(kvm):\n    return 0\n    yield\n"
                 "VARIANT = Variant('my-no-track', 'mine', {'tdx_track': tdx_track}, kind='mutant')\n")
    p = septlab("run", "--scenario", "seed", "--variant", str(f), cwd=tmp_path)
    assert p.returncode == 1
    trace = next((tmp_path / "septlab-traces").glob("*.json"))
    assert f"--variant {f}" in p.stdout
    assert_clean_error(septlab("replay", str(trace)), "--variant")
    assert septlab("replay", str(trace), "--variant", str(f)).returncode == 1


@pytest.mark.parametrize("flag", ["--json", "--plot", "--trace-dir"])
def test_unwritable_outputs_fail_before_the_work(tmp_path, flag):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"  # root can write anywhere: use a path under a regular file instead
        blocker.write_text("")
        target = blocker / ("out.png" if flag == "--plot" else "out")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / ("out.png" if flag == "--plot" else "out")
    cmd = ["compare", "--scenario", "seed", "--variants", "tdx-free", "--schedules", "100000", flag, str(target)] \
        if flag != "--trace-dir" else ["run", "--scenario", "seed", "--variant", "tdx-free", "--schedules",
                                        "100000", flag, str(target)]
    t0 = time.monotonic()
    assert_clean_error(septlab(*cmd, cwd=tmp_path), flag)
    assert time.monotonic() - t0 < 30  # refused before 100,000 schedules


def test_check_refuses_to_overwrite_a_checkpoint_and_checks_paths(tmp_path):
    ck = tmp_path / "ck.bin"
    ck.write_text("mine")
    assert_clean_error(septlab("check", "--scenario", "boot-teardown", "--variant", "tdx-free", "--checkpoint",
                               str(ck), cwd=tmp_path), "exists")
    assert ck.read_text() == "mine"
    assert_clean_error(septlab("check", "--scenario", "boot-teardown", "--variant", "tdx-free", "--checkpoint",
                               str(tmp_path), cwd=tmp_path), "is a directory")


def test_markup_and_escapes_in_user_text_are_shown_not_interpreted(tmp_path):
    d = tmp_path / "[bold]x[" / "]"  # the path reads .../[bold]x[/]/...: Rich markup with a closing tag
    d.mkdir(parents=True)
    f = d / "s\x1b[31m.yaml"
    f.write_text("name: x\nthreads: 17\n")
    p = septlab("run", "--scenario", str(f), "--variant", "tdx-free", cwd=tmp_path)
    line = assert_clean_error(p, "[bold]x[/]", "threads")
    assert "\x1b" not in p.stdout + p.stderr and "\\x1b" in line
    assert printable("a\x1b[2Jb\x07") == "a\\x1b[2Jb\\x07"


def test_internal_errors_are_one_line_exit_3(tmp_path):
    f = tmp_path / "crash.py"
    f.write_text("from septlab.variants import Variant\n"
                 "def tdx_track(kvm):\n    raise ZeroDivisionError('boom')\n    yield\n"
                 "VARIANT = Variant('crashy', 'raises', {'tdx_track': tdx_track})\n")
    p = septlab("run", "--scenario", "seed", "--variant", str(f), cwd=tmp_path)
    text = p.stdout + p.stderr
    assert p.returncode == 3 and "Traceback" not in text and "ZeroDivisionError" in text
    f.write_text("import sys\nfrom septlab.variants import Variant\n"
                 "def tdx_track(kvm):\n    sys.exit(0)\n    yield\n"
                 "VARIANT = Variant('exity', 'exits', {'tdx_track': tdx_track})\n")
    p = septlab("run", "--scenario", "seed", "--variant", str(f), cwd=tmp_path)
    assert p.returncode == 3, "sys.exit(0) in a hook must never look like a pass"


# --- 4./5. names, memory --------------------------------------------------------------------------------

def test_safe_filename_and_trace_paths_stay_inside_trace_dir():
    for bad in ("../../etc/passwd", "/abs", ".hidden", "a\x00b", "x" * 500):
        n = safe_filename(bad, "tdx-free", suffix=".json")
        assert "/" not in n and not n.startswith(".") and len(n) <= 160 and "\x00" not in n


def test_run_memory_does_not_grow_with_schedules(monkeypatch):
    """What a batch keeps after its schedules (counts, merged metrics, one counterexample) is flat in N."""
    import septlab.explore.driver as driver

    monkeypatch.setattr(driver, "RETAINED_SERIES", 8)  # the plot's series: the one thing kept per schedule
    scn = load_scenario("seed")
    var = get_variant("rcu-free")  # violates in every schedule: the first counterexample only is kept

    def kept(n: int) -> int:
        gc.collect()
        tracemalloc.start()
        b = run_batch(scn, var, True, 0, n)
        gc.collect()
        cur, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert b.done == n
        return cur

    run_batch(scn, var, True, 0, 2)  # first-call imports and caches are not the batch's
    small, big = kept(16), kept(48)  # both past the retained-page series a batch keeps for its plot
    assert big < small * 1.25, (small, big)


# --- 6. smaller contract breaks ---------------------------------------------------------------------------

def test_outputs_honour_umask_follow_symlinks_and_formats(tmp_path):
    old = os.umask(0o022)
    try:
        f = tmp_path / "o.json"
        write_json_atomic(f, {"a": 1})
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
    finally:
        os.umask(old)
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json_atomic(link, {"b": 2})
    assert link.is_symlink() and json.loads(real.read_text()) == {"b": 2}
    with pytest.raises(OutputError):
        check_output_path(tmp_path, "--json")
    assert_clean_error(septlab("compare", "--scenario", "seed", "--variants", "tdx-free", "--plot",
                               str(tmp_path / "p.txt")), "--plot", ".txt")


def test_plot_shows_the_answer_in_each_format(tmp_path):
    p = septlab("compare", "--scenario", "seed", "--variants", "rcu-free,tdx-free", "--dpamt", "both",
                "--schedules", "4", "--plot", "c.svg", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    svg = (tmp_path / "c.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "violates lock-context" in svg and "no violation" in svg and "first TDH.PHYMEM.PAGE.RECLAIM" in svg


def test_mean_curve_aligns_at_first_reclaim():
    from septlab.metrics.plot import mean_curve

    xs, ys = mean_curve([[(100, 1), (110, 0)], [(5, 2), (25, 0)]])
    assert xs[0] == 0 and ys[0] == 1.5 and ys[-1] == 0


def test_compare_table_is_readable_at_80_columns():
    from septlab.cli import compare_table
    from septlab.explore.driver import run_batch as rb

    scn = load_scenario("seed")
    rows = [rb(scn, get_variant(n), d, 0, 2) for n in ("rcu-free", "tdx-free", "tdx-alloc-hook") for d in (0, 1)]
    c = Console(width=80, record=True, file=open(os.devnull, "w"))
    c.print(compare_table("seed", 2, 0, rows, 80))
    text = c.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for name in ("rcu-free", "tdx-free", "tdx-alloc-hook", "lock-context"):
        assert name in text


def test_long_single_run_reports_progress():
    scn = load_scenario("boot-teardown", {"memory": "64MiB"})
    ticks: list[int] = []
    run_schedule(scn, get_variant("tdx-free"), False, 0, history=False, tick=ticks.append)
    assert ticks and ticks == sorted(ticks) and ticks[-1] > 0


def test_ctrl_c_keeps_what_finished(tmp_path):
    """SIGINT mid-run: exit 130, the JSON says how far it got; compare keeps its finished rows."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for cmd, key in ((["run", "--scenario", "seed", "--variant", "tdx-free", "--schedules", "1000000"], None),
                     (["compare", "--scenario", "seed", "--variants", "tdx-free,rcu-free", "--dpamt", "on",
                       "--schedules", "1000000"], "results")):
        out = tmp_path / f"{cmd[0]}.json"
        p = subprocess.Popen([sys.executable, "-c", "from septlab.cli import main; main()", *cmd, "--json", str(out)],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        p.send_signal(signal.SIGINT)
        so, se = p.communicate(timeout=60)
        assert p.returncode == 130, so + se
        assert "Traceback" not in so + se
        d = json.loads(out.read_text())
        if key:
            row = d["results"][0]
            assert d["interrupted"] and row["interrupted"] and row["kind"] == "bounded" and row["schedules"] > 0
        else:
            assert d["interrupted"] and d["kind"] == "bounded" and d["schedules_run"] > 0


def test_ctrl_c_in_check_keeps_a_resumable_checkpoint(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ck = tmp_path / "ck"
    args = ["check", "--scenario", "seed", "--variant", "tdx-free", "--exhaustive", "--strategy", "dfs",
            "--checkpoint", str(ck), "--json", str(tmp_path / "c.json")]
    p = subprocess.Popen([sys.executable, "-c", "from septlab.cli import main; main()", *args], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    p.send_signal(signal.SIGINT)
    so, se = p.communicate(timeout=120)
    assert p.returncode == 130, so + se
    d = json.loads((tmp_path / "c.json").read_text())
    assert d["kind"] == "bounded" and "interrupted" in d["why"] and d["stats"]["states"] > 0
    assert ck.is_file()
    r = septlab(*args, "--resume", "--time-limit", "1", cwd=tmp_path)
    assert r.returncode == 4 and "resumed from checkpoint" in r.stdout, r.stdout + r.stderr
