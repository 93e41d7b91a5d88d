"""`septlab conformance`: the table (header, mismatches first), the summary line, --json, the exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A model with REMOVE's TLB-tracking precondition taken out: the command must notice and exit 1.
MUTANT = "import septlab.tdx_module.module as M; M.TdxModule._is_tracked = staticmethod(lambda td, bepoch: True); "


def septlab(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", prelude + "from septlab.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_table_header_summary_and_exit_status(tmp_path):
    out = tmp_path / "conf.json"
    p = septlab("conformance", "--json", str(out))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("leaf x entry state x level: module (intel/tdx-module TDX_1.5.01 72d8cffb214b")
    assert lines[1].split() == ["table", "leaf", "state", "level", "context", "module", "says", "septlab", "says",
                                "verdict"]
    summary = lines[-1]
    assert summary.startswith("conformance: ") and "(leaf, entry state, level) pairs covered" in summary
    assert "0 unlisted" in summary and " match, " in summary and " mismatch (" in summary
    rows = lines[3:lines.index(next(ln for ln in lines if ln.startswith("  ")))]
    verdicts = [r.split()[-1] for r in rows]
    assert "MISMATCH" not in verdicts and verdicts[-1] == "match"
    assert verdicts.index("match") > max(i for i, v in enumerate(verdicts) if v not in ("match", "unverified"))
    doc = json.loads(out.read_text())
    assert doc["summary_line"] == summary
    assert doc["summary"]["unlisted"] == 0 and doc["summary"]["checks"] == len(doc["rows"]) == len(rows)
    assert doc["sources"]["tdx_module"]["commit"] == "72d8cffb214b74ae94d75afce36423020f74b47c"
    assert {s["id"] for s in doc["simplifications"]} >= {"no-migration", "private-leaves-4k-only"}


def test_mismatches_only_prints_no_matching_row():
    p = septlab("conformance", "--mismatches-only")
    assert p.returncode == 0, p.stderr
    rows = [ln for ln in p.stdout.splitlines()[3:] if ln and not ln.startswith(("  ", "conformance: "))]
    assert rows and all(r.split()[-1] not in ("match", "unverified") for r in rows)


def test_an_unlisted_mismatch_exits_1_and_comes_first():
    p = septlab("conformance", "--mismatches-only", prelude=MUTANT)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr
    first = p.stdout.splitlines()[3].split()
    assert first[:4] == ["sept", "TDH.MEM.PAGE.REMOVE", "BLOCKED", "4K"] and first[-1] == "MISMATCH", first
    assert "TDX_TLB_TRACKING_NOT_DONE|RCX" in first and "accept" in first
    assert p.stdout.splitlines()[-1].endswith("unverified") and " 0 unlisted" not in p.stdout.splitlines()[-1]


def test_help_teaches_and_bad_json_path_is_one_line(tmp_path):
    p = septlab("conformance", "--help")
    assert p.returncode == 0 and "--mismatches-only" in p.stdout and "--json" in p.stdout
    assert "seamcall_sept_state_lookup" in p.stdout and "simplifications.yaml" in p.stdout
    p = septlab("conformance", "--json", str(tmp_path))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len([ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]) == 1
