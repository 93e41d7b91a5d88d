"""Run the README's examples verbatim, in a fresh copy of the project, and check their exit statuses.

Usage: python tests/readme_examples.py [--keep]

What counts as an example: every line of a ```sh block (a trailing backslash continues a command; a
trailing `# exit N` comment is the status the command must end with, 0 otherwise), and every
```python / ```yaml block whose first line is `# <file name>` (written into the copy before the sh
blocks run, so the examples can use them). `make test` lines are skipped: that is the command that
runs this script. The copy holds exactly the files git would clone (tracked and not ignored), so
this is what a new user sees after `git clone`.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")
EXPECT = re.compile(r"#\s*exit\s+(\d+)\b")


def blocks(text: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    lang, body = None, []
    for line in text.splitlines():
        m = FENCE.match(line)
        if m and lang is None:
            lang, body = m.group(1), []
        elif line.startswith("```") and lang is not None:
            out.append((lang, body))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def commands(lines: list[str]) -> list[tuple[str, int]]:
    """(command, expected exit status) from an sh block; continuation lines joined."""
    cmds: list[tuple[str, int]] = []
    cur = ""
    for raw in lines:
        line = raw.rstrip()
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        m = EXPECT.search(cur)
        cmd = cur.split(" #")[0] if " #" in cur else cur
        cmds.append((" ".join(cmd.split()), int(m.group(1)) if m else 0))
        cur = ""
    return cmds


def fresh_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def main() -> int:
    keep = "--keep" in sys.argv
    text = (ROOT / "README.md").read_text()
    tmp = Path(tempfile.mkdtemp(prefix="septlab-readme-"))
    work = tmp / "septlab"
    work.mkdir()
    fresh_copy(work)
    script = ["set -u", f"cd {shlex.quote(str(work))}", "fail=0"]
    n = 0
    for lang, body in blocks(text):
        if lang in ("python", "yaml") and body and re.match(r"#\s*[\w./-]+\.(py|ya?ml)\s*$", body[0]):
            name = body[0].lstrip("#").strip()
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text("\n".join(body) + "\n")
        elif lang == "sh":
            for cmd, want in commands(body):
                if cmd.startswith("make test"):
                    continue
                n += 1
                if cmd.startswith((". ", "source ")):
                    script.append(cmd)
                    continue
                q = shlex.quote(cmd)
                script += ["t0=$SECONDS", f"( {cmd} ) > .readme.out 2>&1; rc=$?", f"echo \"[$((SECONDS - t0)) s] \"'$ '{q}",
                           f"if [ $rc -ne {want} ]; then echo \"FAILED (exit $rc, README says {want}): \"{q}; "
                           "tail -20 .readme.out; fail=1; fi"]
    script.append("exit $fail")
    p = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True, timeout=3000)
    sys.stdout.write(p.stdout + p.stderr)
    print(f"README examples: {n} commands, {'all as documented' if p.returncode == 0 else 'FAILURES above'}")
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {work}")
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
