"""docs/fidelity.md maps every modelled kernel function to its kernel file, and lists every audit divergence."""

from __future__ import annotations

import re
from pathlib import Path

from septlab.kernel import markdown_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
BEGIN, END = "<!-- BEGIN GENERATED: septlab hooks --markdown -->", "<!-- END GENERATED -->"


def test_function_map_is_current():
    text = DOC.read_text()
    assert BEGIN in text and END in text
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip() + "\n"
    assert table == markdown_table(), "regenerate: septlab hooks --markdown, between the markers in docs/fidelity.md"


def test_every_audit_divergence_has_a_status():
    text = DOC.read_text()
    for n in range(1, 25):
        m = re.search(rf"^\| D{n} \|[^\n]*\| (fixed|simplification|partly fixed|open)[^|]*\|", text, re.M)
        assert m, f"D{n} has no row with a status in docs/fidelity.md"
