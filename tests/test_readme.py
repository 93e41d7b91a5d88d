"""The README's examples run verbatim from a fresh copy of the project (tests/readme_examples.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.readme_examples import ROOT, blocks, commands


def test_example_parsing():
    text = "```sh\nseptlab run -s seed \\\n  -v x   # exit 1 on a violation\n# comment\nmake demo\n```\n"
    [(lang, body)] = blocks(text)
    assert lang == "sh" and commands(body) == [("septlab run -s seed -v x", 1), ("make demo", 0)]


def test_readme_examples_run_verbatim():
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "readme_examples.py")], capture_output=True,
                       text=True, timeout=3000)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "all as documented" in p.stdout
