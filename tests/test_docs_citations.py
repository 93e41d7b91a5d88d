"""The project carries what it cites.

1. Every facts label cited in septlab/, tests/, bench/, docs/ (except docs/facts.md) and README.md exists as a
   heading or an `<a id=...>` anchor in docs/facts.md. Citation forms recognised:
     subsection labels   (f.5)  f.21, f.22  a.5  c.4/e  (a.4)-(a.7)  f.7-f.13   (letters a-h, ranges expanded)
     section letters     section (f)   FD (e)   FD d   § g   ", (e)" or "/e" right after a subsection label
     invariants          FD invariant 23, facts invariant 2            -> f.23, f.2
     kernel eras         E<digit> as a whole word, e.g. E3              -> heading "E3 ..."
     sources             [S4]  [S6b]                                   -> anchor S4, S6b
     audit divergences   D<1-2 digits> as a whole word, e.g. D5         -> heading "D5 ..."
2. No file in the repository points outside it: not at the shared docs directory (by relative or absolute
   path), not at the old facts document by name; and a mention of another shared-docs file name (the anchors
   or audit documents) must name a file the repository has.
This file is not scanned for citations: its examples exercise the regexes.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FACTS = ROOT / "docs" / "facts.md"
SELF = Path(__file__).resolve()
SCAN = ("septlab", "tests", "bench", "docs", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".pml", ".txt", ".toml", ".cfg", ".ini", ".sh", ".json", ""}
SKIP_DIRS = {".git", ".venv", "__pycache__", ".hypothesis", ".ruff_cache", ".pytest_cache", "results"}

# --- citation forms ---------------------------------------------------------------------------------
# A subsection label: one section letter a-h, a dot, 1-2 digits; optionally parenthesised. Not part of a longer
# word or dotted name (x.f.5, abc.4, v6.19, 1.2.3) and not followed by more digits or a further ".<digit>".
_SUB = r"\(?(?<![\w.])([a-h])\.(\d{1,2})(?![\w]|\.\d)\)?"
SUB_RE = re.compile(_SUB)
RANGE_RE = re.compile(_SUB + r"\s*[-\u2013]\s*" + _SUB)
# ", (e)" or "/e" directly after a subsection label or range: "(c.1)-(c.3), (e)", "FD c.4/e".
TAIL_RE = re.compile(_SUB + r"(?:\s*[-\u2013]\s*" + _SUB + r")?" + r"(?:\s*,\s*\(([a-h])\)|/([a-h])(?![\w.]))")
SECTION_RES = (
    re.compile(r"\bsections?\s+\(([a-h])\)"),              # section (f)
    re.compile(r"\bFD\s+\(?([a-h])\)?(?![\w]|\.\d)"),       # FD (e), FD d., FD h,
    re.compile(r"\u00a7\s?\(?([a-h])\)?(?![\w]|\.\d)"),     # § g
)
INVARIANT_RE = re.compile(r"\b(?:FD|facts(?:\.md)?|facts[- ]doc(?:ument)?)\s+invariants?\s+(\d{1,2})\b")
ERA_RE = re.compile(r"(?<![\w.])E(\d)(?![\w]|\.\d)")
SOURCE_RE = re.compile(r"\[(S\d{1,2}[a-z]?)\]")
AUDIT_RE = re.compile(r"(?<![\w.])(D\d{1,2})(?![\w]|\.\d)")

# --- anchors in docs/facts.md ---------------------------------------------------------------------------
HEADING_RE = re.compile(r"^#{1,6}\s+\(?([A-Za-z]\w*(?:\.\w+)?)\)?(?=[\s:]|$)", re.M)
ANCHOR_RE = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"\s*>")


def _repo_files() -> list[Path]:
    """Tracked plus untracked-but-not-ignored files (git ls-files is read-only); os.walk without git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
        return sorted({ROOT / n for n in names if (ROOT / n).is_file()})
    except (OSError, subprocess.CalledProcessError):
        files = []
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            files += [Path(dirpath) / f for f in filenames]
        return sorted(files)


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", "replace")


def _scanned_files() -> list[Path]:
    out = []
    for p in _repo_files():
        rel = p.relative_to(ROOT)
        if rel.parts[0] not in SCAN or p in (FACTS, SELF) or p.suffix not in TEXT_SUFFIXES:
            continue
        if any(part in SKIP_DIRS for part in rel.parts):
            continue
        out.append(p)
    return out


def cited_labels(text: str) -> set[str]:
    """Every facts label `text` cites, normalised to the anchor name used in docs/facts.md."""
    labels: set[str] = set()
    for m in SUB_RE.finditer(text):
        labels.add(f"{m.group(1)}.{int(m.group(2))}")
    for m in RANGE_RE.finditer(text):
        (a, lo), (b, hi) = (m.group(1), int(m.group(2))), (m.group(3), int(m.group(4)))
        if a == b and lo <= hi:
            labels.update(f"{a}.{n}" for n in range(lo, hi + 1))
    for m in TAIL_RE.finditer(text):
        labels.add(m.group(5) or m.group(6))
    for rx in SECTION_RES:
        labels.update(m.group(1) for m in rx.finditer(text))
    labels.update(f"f.{int(m.group(1))}" for m in INVARIANT_RE.finditer(text))
    labels.update(f"E{m.group(1)}" for m in ERA_RE.finditer(text))
    labels.update(m.group(1) for m in SOURCE_RE.finditer(text))
    labels.update(m.group(1) for m in AUDIT_RE.finditer(text))
    return labels


def facts_anchors() -> set[str]:
    text = FACTS.read_text(encoding="utf-8")
    return set(HEADING_RE.findall(text)) | set(ANCHOR_RE.findall(text))


# --- the regexes themselves ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("rule text (f.5)", {"f.5"}),
    ("(f.1, f.2)", {"f.1", "f.2"}),
    ("TDX_BUG_ON* in tdx.c (f.7-f.13)", {f"f.{n}" for n in range(7, 14)}),
    ("Facts: docs/facts.md (a.4)-(a.7), (c.1)-(c.3), (e).", {"a.4", "a.5", "a.6", "a.7", "c.1", "c.2", "c.3", "e"}),
    ("# a.5: AUG also from REMOVED", {"a.5"}),
    ("Kernel: FD c.4/e: E4 adds", {"c.4", "e", "E4"}),
    ("FD (e) tdx_pamt_put", {"e"}),
    ("where FD e says", {"e"}),
    ("matches the diff and FD d.", {"d"}),
    ("(FD h, [S4] note)", {"h", "S4"}),
    ("Matches FD b.7 [S16].", {"b.7", "S16"}),
    ("FD invariant 23 goes unchecked", {"f.23"}),
    ("The invariants of section (f), each", {"f"}),
    ("(kernel era E3, the June 2026 merge", {"E3"}),
    ("E1/E2 tdx_sept_free_private_spt", {"E1", "E2"}),
    ("see the audit's D5 and D13.", {"D5", "D13"}),
    ("facts doc \u00a7 g", {"g"}),
])
def test_citation_forms_are_recognised(text, expected):
    assert cited_labels(text) == expected


@pytest.mark.parametrize("text", [
    "v6.19 and 6.11-6.12, python3.11, version 1.2.3",
    "0xC0000B0E00000000 0xE1 0xD5 0xa9 PT_EPT=8 TDX_1.5.01 -DNOREDUCE -DBFS",
    "x.f.5 self.c.4 abc.4 a.b.1 e.g. i.e. f.read() c.41x",
    "E2BIG EPT_E3X D3D gfn E10 D100",
    "e.g. (a) first, (b) second; step #145 ; RFC v5 #20; rows (1), (2)",
    "SEAMCALL#99 section 3.4, read-side section (nesting counted per task)",
])
def test_unrelated_text_is_not_a_citation(text):
    assert cited_labels(text) == set()


# --- the project's own docs ---------------------------------------------------------------------------------

def test_facts_doc_exists_and_has_its_sections():
    anchors = facts_anchors()
    missing = [a for a in ["a", "b", "c", "d", "e", "f", "g", "h", "E1", "E2", "E3", "E4"]
               + [f"f.{n}" for n in range(1, 24)] if a not in anchors]
    assert not missing, f"docs/facts.md lacks headings for {missing}"


def test_every_cited_label_exists_in_facts_doc():
    anchors = facts_anchors()
    missing: list[str] = []
    for path in _scanned_files():
        text = _text(path)
        if text is None:
            continue
        rel = path.relative_to(ROOT)
        seen: set[str] = set()
        for lineno, line in enumerate(text.splitlines(), 1):
            for label in sorted(cited_labels(line) - anchors):
                seen.add(label)
                missing.append(f"{rel}:{lineno}: cites {label!r}: {line.strip()[:100]}")
        # A range or a ", (e)" tail may be wrapped onto the next line (also inside # comments).
        joined = re.sub(r"[ \t]*\n[ \t]*(?:#[ \t]*)?", " ", text)
        for label in sorted(cited_labels(joined) - anchors - seen):
            missing.append(f"{rel}: cites {label!r} across a line break")
    assert not missing, "labels cited but not defined in docs/facts.md:\n" + "\n".join(missing)


# Built by concatenation so this file does not match itself.
_OUTSIDE = ("../" + "shared", "/work/" + "shared", "kernel-tdx" + "-sept")
# Other documents that only exist outside the repository: a mention must name a file the repository has.
_OUTSIDE_DOCS = re.compile(r"[\w./-]*\b(?:style-)?anchors\.md|[\w./-]*\bfidelity-audit\.md")


def test_nothing_points_outside_the_repository():
    files = _repo_files()
    basenames = {p.name for p in files}
    bad = []
    for path in files:
        text = _text(path)
        if text is None:
            continue
        rel = path.relative_to(ROOT)
        for lineno, line in enumerate(text.splitlines(), 1):
            for needle in _OUTSIDE:
                if needle in line:
                    bad.append(f"{rel}:{lineno}: {needle!r}: {line.strip()[:100]}")
            for m in _OUTSIDE_DOCS.finditer(line):
                if path == SELF:
                    continue
                if Path(m.group(0)).name not in basenames:
                    bad.append(f"{rel}:{lineno}: {m.group(0)!r} is not in the repository: {line.strip()[:100]}")
    assert not bad, "references to documents outside the repository:\n" + "\n".join(bad)
