"""Output files: checked before the work, written atomically, named safely.

A result that took minutes to compute must not be lost to a typo in `--json`: every output path is
checked for writability before any schedule runs (`check_output_path`), and written through a
temp file in the same directory + rename (`write_atomic`), honouring the umask and an existing
file's mode, and following a symlink to its target instead of replacing the link. Names that come
from inputs (scenario and variant names) become file names only through `safe_filename`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

PLOT_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class OutputError(Exception):
    """An output path that cannot be written (exit status 2)."""


def printable(text: object) -> str:
    """User-provided text with control characters (ESC, BEL, ...) shown escaped, never sent raw to a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def safe_filename(*parts: str, suffix: str = "") -> str:
    """A file name built from input-derived parts: only [A-Za-z0-9._+-], no leading dot, bounded length."""
    name = "-".join(_UNSAFE.sub("_", p) for p in parts if p).lstrip(".") or "unnamed"
    return name[:150] + suffix


def _target(path: Path) -> Path:
    """Where a write to `path` lands: a symlink's target (the link itself stays)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_output_path(path: Path, what: str, directory: bool = False) -> None:
    """Fail now, before the work, if `path` cannot be written (or, for a directory, created)."""
    target = _target(path)
    if directory:
        if target.exists() and not target.is_dir():
            raise OutputError(f"{what} {path}: exists and is not a directory")
    elif target.is_dir():
        raise OutputError(f"{what} {path}: is a directory")
    probe = target if directory and target.exists() else target.parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{what} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: directory {probe} is not writable")
    if not directory and target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"{what} {path}: file is not writable")


def check_plot_path(path: Path) -> str:
    """The matplotlib format for a `--plot` path, from its extension (PNG under any name is a lie)."""
    fmt = PLOT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"--plot {path}: unknown picture format {path.suffix or '(no extension)'!r}; "
                          f"use {', '.join(PLOT_FORMATS)}")
    check_output_path(path, "--plot")
    return fmt


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def write_atomic(path: Path, data: bytes, what: str = "output") -> None:
    """Write `data` to `path` via temp file + fsync + rename: readers see the old or the new file, never half."""
    target = _target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"{what} {path}: cannot write: {e.strerror or e}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, obj: Any, what: str = "output") -> None:
    """JSON, indented, key order as given, one trailing newline; atomically."""
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode(), what)


def read_json_object(path: Path, kind: str, max_bytes: int, error: type[Exception]) -> dict[str, Any]:
    """Read one JSON object written by septlab (a trace, a compare result) or raise `error` with one
    line naming the file (and the line, for invalid JSON): a directory, a missing or unreadable file,
    one too large to be `kind`, invalid UTF-8 or JSON, or a top level that is not an object."""
    where = printable(path)
    if path.is_dir():
        raise error(f"{where}: is a directory, not a {kind} file")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{where}: {size} bytes: larger than a {kind} can be ({max_bytes >> 20} MiB)")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise error(f"{where}: no such {kind} file") from None
    except OSError as e:
        raise error(f"{where}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        line = getattr(e, "lineno", 1)
        raise error(f"{where}:{line}: not a septlab {kind} (invalid JSON: {printable(getattr(e, 'msg', e))})") from None
    except (RecursionError, MemoryError, ValueError) as e:
        raise error(f"{where}: not a septlab {kind} ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise error(f"{where}:1: not a septlab {kind} (top level is not an object)")
    return data
