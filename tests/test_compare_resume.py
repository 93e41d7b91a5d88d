"""compare keeps every finished row (--json rewritten as each finishes) and --resume runs only the rest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_cli import ROOT, assert_clean_error, septlab

ROWS = ["compare", "-s", "seed", "--variants", "tdx-free,bug-rcu-no-grace-period", "-n", "3"]


def _results(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"]


def test_resume_reuses_finished_rows_and_runs_the_missing_ones(tmp_path):
    full = septlab(*ROWS, "--json", "full.json", "--plot", "full.png", cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    rows = _results(tmp_path / "full.json")
    assert len(rows) == 4
    # an earlier run that finished the first two rows; one kept row carries a marker a re-run would not
    data = json.loads((tmp_path / "full.json").read_text())
    data["results"] = data["results"][:2]
    data["results"][0]["metrics"]["rcu_callbacks"] = 424242
    (tmp_path / "part.json").write_text(json.dumps(data))
    res = septlab(*ROWS, "--json", "part.json", "--plot", "part.png", "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "2 of 4 rows finished earlier, 2 to run" in res.stderr
    assert "424242" in res.stdout  # the kept row was not run again
    def words(text: str) -> list[str]:  # the table's rule widens with the marker's column
        return [w for w in text.split() if set(w) != {"─"}]

    assert words(res.stdout.replace("424242", str(rows[0]["metrics"]["rcu_callbacks"]))) == words(full.stdout)
    got = _results(tmp_path / "part.json")
    assert got[0]["metrics"]["rcu_callbacks"] == 424242
    got[0]["metrics"]["rcu_callbacks"] = rows[0]["metrics"]["rcu_callbacks"]
    assert got == rows  # the rows run now and the violating rows' traces equal the full run's
    assert (tmp_path / "part-memory.png").read_bytes() == (tmp_path / "full-memory.png").read_bytes()


def test_resume_of_a_finished_run_runs_nothing_and_draws_the_same_plot(tmp_path):
    assert septlab(*ROWS, "--json", "r.json", "--plot", "a.png", cwd=tmp_path).returncode == 0
    before = (tmp_path / "r.json").read_text()
    res = septlab(*ROWS, "--json", "r.json", "--plot", "b.png", "--resume", cwd=tmp_path)
    assert res.returncode == 0 and "4 of 4 rows finished earlier, 0 to run" in res.stderr
    assert (tmp_path / "r.json").read_text() == before
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_row_cut_short_is_run_again(tmp_path):
    assert septlab(*ROWS, "--json", "r.json", cwd=tmp_path).returncode == 0
    data = json.loads((tmp_path / "r.json").read_text())
    data["results"][1]["schedules"] = 1  # interrupted after one of its three schedules
    (tmp_path / "r.json").write_text(json.dumps(data))
    res = septlab(*ROWS, "--json", "r.json", "--resume", cwd=tmp_path)
    assert "3 of 4 rows finished earlier, 1 to run" in res.stderr
    assert _results(tmp_path / "r.json")[1]["schedules"] == 3


def test_resume_refuses_another_comparison_in_one_line(tmp_path):
    assert septlab(*ROWS, "--json", "r.json", cwd=tmp_path).returncode == 0
    assert_clean_error(septlab(*ROWS[:-1], "4", "--json", "r.json", "--resume", cwd=tmp_path),
                       "r.json", "field 'schedules'", "--resume")
    data = json.loads((tmp_path / "r.json").read_text())
    (tmp_path / "edited.json").write_text(json.dumps({**data, "scenario_digest": "0" * 16}))  # the YAML was edited
    assert_clean_error(septlab(*ROWS, "--json", "edited.json", "--resume", cwd=tmp_path),
                       "edited.json", "field 'scenario_digest'")
    assert_clean_error(septlab(*ROWS, "--set", "fault_rate=0.5", "--json", "r.json", "--resume", cwd=tmp_path),
                       "r.json", "field ")
    assert_clean_error(septlab(*ROWS, "--resume", cwd=tmp_path), "--resume", "--json")
    (tmp_path / "bad.json").write_text('{"command": "compare",')
    assert_clean_error(septlab(*ROWS, "--json", "bad.json", "--resume", cwd=tmp_path), "bad.json:1", "invalid JSON")
    assert_clean_error(septlab("compare", "-s", "seed", "--variants", "tdx-free,tdx-free", cwd=tmp_path), "given twice")


def test_resume_without_a_file_starts_fresh(tmp_path):
    res = septlab(*ROWS, "--json", "new.json", "--resume", cwd=tmp_path)
    assert res.returncode == 0 and len(_results(tmp_path / "new.json")) == 4


def test_a_killed_compare_keeps_its_finished_rows(tmp_path):
    """SIGKILL (no chance to clean up) after the first row: that row is in --json, --resume runs the rest."""
    args = ["compare", "-s", "boot-teardown", "--set", "memory=32MiB", "--variants", "tdx-free,rcu-free",
            "-n", "1", "--json", "r.json"]
    cmd = [sys.executable, "-c", "from septlab.cli import main; main()", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    deadline = time.monotonic() + 240
    path = tmp_path / "r.json"
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and json.loads(path.read_text())["rows_written"] >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = json.loads(path.read_text())
    assert 1 <= kept["rows_written"] < 4, "the compare ended before it could be killed mid-way"
    res = septlab(*args, "--resume", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{kept['rows_written']} of 4 rows finished earlier" in res.stderr
    final = json.loads(path.read_text())
    assert final["rows_written"] == 4 and not final["interrupted"]
    assert final["results"][:kept["rows_written"]] == kept["results"]
    assert [(r["variant"], r["dpamt"]) for r in final["results"]] == [
        ("tdx-free", False), ("tdx-free", True), ("rcu-free", False), ("rcu-free", True)]
