"""`septlab check`: exhaustive exploration of every schedule the chooser could make.

Generators cannot be copied, so this is stateful search by re-execution (as loom and CHESS do):
to reach a node, the world is rebuilt and the choice prefix replayed; states are identified by
canonical fingerprints (explore/state.py) and never expanded twice. Every transition the runtime
could choose is explored: which runnable task steps next, and for SEAMCALLs every failure the
scenario's fault model allows; grace-period ends are steps of the RCU task.

Reductions, each behind a flag:
- state caching (always): a state reached again is not re-expanded;
- POR (`--por on`, DFS): sleep sets over footprints traced while each step runs (explore/footprint.py):
  after a step, a transition explored before it from the same state (or asleep there) stays asleep if its
  footprint does not conflict with the step's. With state caching, each state keeps the sleep set it was
  expanded with; reached again with a sleep set lacking some of those transitions, it is expanded again
  for those only (Godefroid). Sleep sets prune transitions, never states: a complete search visits every
  state. `--por dpor` (explore/dpor.py) is dynamic POR, which also prunes states.
- preemption bounding (`--preemptions K`, CHESS, DFS and BFS): at most K switches away from a runnable task.
  Every search node carries (preemptions used, last task); a state reached again with more preemptions left
  than when it was expanded is expanded again. Bounded searches, like depth-bounded ones, are reported as
  "bounded: not a proof".

Checkpoints (`--checkpoint`, `--resume`) are data only, never pickle, so a crafted file cannot run code.
Format 3, all integers little-endian:

    SEPTLAB-CHECKPOINT 3\\n                           magic line (format version)
    {"header": {...}, "sections": [...]}\\n           envelope: one JSON line, at most 1 MiB
    section payloads, back to back                   sizes as declared in the envelope
    SHA-256 of every byte above (32 bytes)           truncation, bit flips and edits are detected

The header names the check (scenario source and digest, variant, DPAMT, strategy, POR, bounds, state mode);
a checkpoint of another check is refused before its body is read. Sections, in this fixed order, each
zlib-compressed or stored raw: `doc` (JSON: stats, persisted bounds, found invariants, coverage, the DFS
stack), `visited` (uint64 fingerprints), `visited_states` (JSON, full-state mode: the states hash-consed,
every distinct sub-tuple stored once), the preemption budgets and POR sleep marks (uint64 keys, int64/uint8
values), the BFS frontier and tree (int64 parents, task ids and preemption counts, uint64 injected error
codes) and, for liveness (format 3), the search nodes' fingerprints and the state graph (uint64 states,
three task masks per state, five words per edge: source, target, task, injected error, progress mask). Loading checks the declared sizes against the file and a decompression ratio cap before
allocating, verifies the digest, then checks every field's type and range (a bad one is a one-line
CheckpointError naming the file and the field).

Interruption: `CheckOptions.should_stop` is polled like the time limit; a KeyboardInterrupt inside the
search rolls the current step back (journaled inserts into the visited set, budgets, stats, coverage), so
the final checkpoint is exactly resumable, and the partial result comes back with `interrupted=True`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..scenarios import Scenario
from ..tdx_module import errno as E
from ..variants import Variant
from .executor import Executor, Transition
from .footprint import Tracer, dependent
from .fpset import FingerprintSet, FullStateSet
from .liveness import Lasso, StateGraph, find_lassos
from .state import fingerprint

CHECKPOINT_FORMAT = 3
MAGIC = b"SEPTLAB-CHECKPOINT 3\n"
_MAGIC_STEM = b"SEPTLAB-CHECKPOINT "
_MAX_ENVELOPE = 1 << 20  # bytes of the envelope line
_MAX_RATIO = 1100  # zlib cannot expand more than ~1032:1; a larger declared raw size is a lie
_MAX_NESTING = 64  # full states nest ~12 deep
_CHUNK = 1 << 20
_U64 = (1 << 64) - 1
# The sections in file order and what each holds: "json" or a numpy dtype. Random fingerprints do not
# compress, so those arrays are stored raw; everything else goes through zlib (level 1: fast).
_SECTIONS: tuple[tuple[str, str], ...] = (
    ("doc", "json"), ("visited", "<u8"), ("visited_states", "json"),
    ("budget_keys", "<u8"), ("budget_vals", "<i8"), ("asleep_keys", "<u8"), ("asleep_vals", "|u1"),
    ("frontier", "<i8"), ("tree_parent", "<i8"), ("tree_tid", "<i8"), ("tree_err", "<u8"), ("tree_pre", "<i8"),
    ("node_fp", "<u8"), ("graph_nodes", "<u8"), ("graph_info", "<u8"), ("graph_edges", "<u8"),
)
_RAW = {"visited", "budget_keys", "asleep_keys", "node_fp", "graph_nodes", "graph_edges"}
# Bounds of one invocation, not of the search space: never persisted, or a resumed search could not complete.
_RUN_BOUNDS = {"time limit", "interrupted"}
_NODE_KEYS = ("trs", "i", "sleep", "pre", "last", "chosen", "done", "gp", "last_enabled")


class CheckpointError(Exception):
    """A checkpoint that does not belong to this check, is damaged, or would be clobbered (exit status 2)."""


@dataclass
class CheckOptions:
    strategy: str = "dfs"  # "dfs" or "bfs" (shortest counterexample)
    por: bool = False  # sleep sets (--por on)
    max_depth: int | None = None
    preemptions: int | None = None
    full_states: bool = False
    stop_at_first: bool = True
    checkpoint: Path | None = None
    checkpoint_every: float = 30.0
    resume: bool = False
    overwrite_checkpoint: bool = False  # a new check may replace an existing checkpoint file
    time_limit: float | None = None  # seconds of this invocation (a resumed search gets its own budget)
    progress: Callable[["CheckStats"], None] | None = None
    should_stop: Callable[[], bool] | None = None  # polled like the time limit; True ends the search, "interrupted"
    liveness: bool = False  # record the state graph and look for fair non-progress cycles (needs por=False)
    dpor: bool = False  # dynamic POR over traced footprints (explore/dpor.py): DFS, unbounded, no checkpoint
    light_replay: bool = True  # re-execute checked prefixes without call chains or records (False: as before)


def por_unsupported(opts: CheckOptions) -> list[str]:
    """What sleep sets (--por on) cannot be combined with."""
    return [why for bad, why in (
        (opts.checkpoint is not None or opts.resume,
         "--checkpoint (sleeping transitions carry footprints a checkpoint does not store)"),
    ) if bad and opts.por]


def dpor_unsupported(opts: CheckOptions) -> list[str]:
    """The options a DPOR search cannot honour, as the user spelled them, with why."""
    return [why for bad, why in (
        (opts.strategy != "dfs", "--strategy bfs (DPOR backtracks along one depth-first path)"),
        (opts.preemptions is not None, "a preemption bound (DPOR's backtrack sets assume every schedule; "
                                       "say --exhaustive)"),
        (opts.liveness, "--liveness on (a reduced graph may lack the transition that closes a cycle)"),
        (opts.checkpoint is not None or opts.resume, "--checkpoint (backtrack sets and summaries are not saved)"),
    ) if bad]


@dataclass
class CheckStats:
    states: int = 0
    transitions: int = 0
    revisits: int = 0  # successors already seen (pruned by state caching)
    sleep_pruned: int = 0  # transitions not taken because they were asleep (POR)
    preemption_pruned: int = 0
    depth_pruned: int = 0
    terminal: int = 0
    max_depth: int = 0
    frontier: int = 0
    steps_executed: int = 0
    elapsed: float = 0.0  # across resumes
    resumed_from: int = 0
    checkpoints: int = 0

    @property
    def states_per_s(self) -> float:
        return self.states / self.elapsed if self.elapsed else 0.0


@dataclass
class CheckResult:
    stats: CheckStats
    complete: bool
    bounded_by: list[str]
    violation: Any = None
    path: list[Transition] = field(default_factory=list)
    choices: list[tuple[int, int]] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)
    bytes_per_state: float = 0.0
    visited_bytes: int = 0
    found: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False  # stopped by should_stop or a KeyboardInterrupt (bounded_by has "interrupted")
    terminals: set[int] = field(default_factory=set)  # fingerprints of the terminal states reached
    por: dict[str, int] = field(default_factory=dict)  # DPOR's counters (races, summary races, cycles)


class Coverage:
    """Which SEAMCALL x entry-state x outcome, which kernel steps and which events a search reached.

    Every count is journaled until the explorer's current step commits, so an interrupted step's counts
    can be taken back (the resumed search counts that step again)."""

    def __init__(self) -> None:
        self.seamcalls: dict[tuple[str, str, str], int] = {}
        self.steps: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.journal: list[tuple[dict[Any, int], Any]] = []

    def _inc(self, d: dict[Any, int], k: Any) -> None:
        self.journal.append((d, k))
        d[k] = d.get(k, 0) + 1

    def note_step(self, what: str) -> None:
        self._inc(self.steps, what)

    def note_seamcall(self, leaf: int, state: str, outcome: str) -> None:
        self._inc(self.seamcalls, (E.leaf_name(leaf), state, outcome))

    def note_event(self, ev: str) -> None:
        self._inc(self.events, ev)

    def rollback(self) -> None:
        for d, k in reversed(self.journal):
            n = d.get(k)
            if n is not None:
                if n <= 1:
                    del d[k]
                else:
                    d[k] = n - 1
        self.journal.clear()

    def as_json(self) -> dict[str, Any]:
        return {"seamcall_entry_state": [{"leaf": a, "entry_state": b, "outcome": c, "count": n}
                                         for (a, b, c), n in sorted(self.seamcalls.items())],
                "steps": dict(sorted(self.steps.items())), "events": dict(sorted(self.events.items()))}

    def to_doc(self) -> dict[str, Any]:
        """Checkpoint form: plain lists and string-keyed dicts."""
        return {"seamcalls": [[a, b, c, n] for (a, b, c), n in sorted(self.seamcalls.items())],
                "steps": dict(sorted(self.steps.items())), "events": dict(sorted(self.events.items()))}


# --- checkpoint encoding -------------------------------------------------------------------------------
def _short(v: Any) -> str:
    r = repr(v).replace("\n", " ")
    return r if len(r) <= 60 else r[:57] + "..."


class _Fields:
    """Type and range checks for a decoded checkpoint: every value is checked before use, so a damaged or
    crafted file fails here with a one-line error naming the field, never later inside the model."""

    def __init__(self, path: Path, nthreads: int | None, errors: set[int] | None):
        self.path = path
        self.nthreads = nthreads
        self.errors = errors

    def fail(self, where: str, why: str) -> NoReturn:
        raise CheckpointError(f"{self.path}: {where}: {why}")

    def integer(self, v: Any, where: str, lo: int | None = None, hi: int | None = None) -> int:
        if type(v) is not int or (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f" in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            self.fail(where, f"expected an integer{rng}, got {_short(v)}")
        return v

    def boolean(self, v: Any, where: str) -> bool:
        if type(v) is not bool:
            self.fail(where, f"expected true or false, got {_short(v)}")
        return v

    def string(self, v: Any, where: str) -> str:
        if type(v) is not str:
            self.fail(where, f"expected a string, got {_short(v)}")
        return v

    def array(self, v: Any, where: str) -> list[Any]:
        if type(v) is not list:
            self.fail(where, f"expected a list, got {_short(v)}")
        return v

    def obj(self, v: Any, where: str, keys: Collection[str] | None = None) -> dict[str, Any]:
        if type(v) is not dict:
            self.fail(where, f"expected an object, got {_short(v)}")
        if keys is not None and set(v) != set(keys):
            extra, missing = sorted(set(v) - set(keys)), sorted(set(keys) - set(v))
            self.fail(where, f"fields differ (unexpected {extra}, missing {missing})")
        return v

    def counts(self, v: Any, where: str) -> dict[str, int]:
        d = self.obj(v, where)
        for k, n in d.items():
            self.integer(n, f"{where}[{k!r}]", 1)
        return d

    def transition(self, v: Any, where: str) -> Transition:
        if type(v) is not list or len(v) != 2:
            self.fail(where, f"expected a transition [task, injected error], got {_short(v)}")
        tid = self.integer(v[0], f"{where}.task", 0, None if self.nthreads is None else self.nthreads - 1)
        err = self.integer(v[1], f"{where}.error", 0, _U64)
        if self.errors is not None and err not in self.errors:
            self.fail(f"{where}.error", f"{err:#x} is not in this scenario's fault model")
        return (tid, err)

    def opt_transition(self, v: Any, where: str) -> Transition | None:
        return None if v is None else self.transition(v, where)

    def transitions(self, v: Any, where: str) -> list[Transition]:
        return [self.transition(x, f"{where}[{k}]") for k, x in enumerate(self.array(v, where))]


def _strict_json(raw: bytes, where: str, f: _Fields) -> Any:
    """JSON without NaN/Infinity and without duplicate keys (either would be a sign of a crafted file)."""

    def pairs(kv: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(kv)
        if len(d) != len(kv):
            raise ValueError("duplicate key")
        return d

    def no_constants(c: str) -> Any:
        raise ValueError(f"{c} is not allowed")

    try:
        return json.loads(raw, object_pairs_hook=pairs, parse_constant=no_constants)
    except RecursionError:
        f.fail(where, "nested too deeply")
    except (ValueError, UnicodeDecodeError) as e:
        f.fail(where, f"not valid JSON ({_short(str(e))})")


def _encode_states(states: Iterable[tuple]) -> dict[str, Any]:
    """Full states, hash-consed: every distinct tuple is one node, listed after the nodes it contains; inside
    a node, `[k]` refers to node k and anything else is a literal. States of one search share almost all of
    their sub-tuples (852 boot-teardown states: 3,645 distinct tuples instead of 116,511), so this is far
    smaller than the states and loads into shared tuples. A sub-tuple is looked up before it is walked, so
    Python-level work is proportional to the distinct nodes; equal sub-tuples are one node."""
    memo: dict[Any, int] = {}
    nodes: list[list[Any]] = []

    def node(t: tuple) -> int:
        k = memo.get(t)
        if k is None:
            items = [[node(x)] if type(x) is tuple else x for x in t]
            k = memo[t] = len(nodes)
            nodes.append(items)
        return k

    roots = []
    for st in states:  # distinct already: no memo lookup (hashing a whole state is the expensive part)
        if type(st) is not tuple:
            raise TypeError(f"full-state checkpoints need tuple states, not {type(st).__name__}")
        items = [[node(x)] if type(x) is tuple else x for x in st]  # children first: they get lower indices
        roots.append(len(nodes))
        nodes.append(items)
    return {"nodes": nodes, "states": roots}


def _decode_states(doc: Any, f: _Fields) -> list[tuple]:
    """Rebuild hash-consed states without recursion: a reference must point to an earlier node (so there are
    no cycles) and nesting is capped (hashing a deeply nested tuple recurses in C)."""
    d = f.obj(doc, "visited_states", ("nodes", "states"))
    nodes: list[tuple] = []
    depth: list[int] = []
    for k, items in enumerate(f.array(d["nodes"], "visited_states.nodes")):
        w = f"visited_states.nodes[{k}]"
        if type(items) is not list:
            f.fail(w, f"expected a list, got {_short(items)}")
        out = []
        dp = 1
        for x in items:
            t = type(x)
            if t is list:
                if len(x) != 1 or type(x[0]) is not int or not 0 <= x[0] < k:
                    f.fail(w, f"bad reference {_short(x)} (must name an earlier node)")
                out.append(nodes[x[0]])
                dp = max(dp, depth[x[0]] + 1)
            elif t is int or t is bool or x is None:
                out.append(x)
            else:
                f.fail(w, f"a state holds {_short(x)} (only integers, booleans and null occur in states)")
        if dp > _MAX_NESTING:
            f.fail(w, "nested too deeply")
        nodes.append(tuple(out))
        depth.append(dp)
    n = len(nodes)
    return [nodes[f.integer(r, f"visited_states.states[{k}]", 0, n - 1)]
            for k, r in enumerate(f.array(d["states"], "visited_states.states"))]


def _write_atomic(path: Path, chunks: list[bytes]) -> None:
    """Write, fsync and rename over `path`, so a crash or a second Ctrl-C leaves the old file or the new one.
    The temporary file is created with O_EXCL and mode 0666, which the kernel masks with the umask (and
    default ACLs), so the checkpoint gets the permissions any other file the user creates would get
    (mkstemp would make it 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise CheckpointError(f"{path}: cannot create a temporary file next to it")
    try:
        with os.fdopen(fd, "wb") as fh:
            for c in chunks:
                fh.write(c)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_checkpoint(path: Path, header: dict[str, Any], payload: dict[str, Any]) -> None:
    """Encode `payload` (one value per section: JSON-able or an array) in format 2 and write it atomically."""
    datas: list[bytes] = []
    secs: list[dict[str, Any]] = []
    for name, typ in _SECTIONS:
        v = payload[name]
        if typ == "json":
            raw = json.dumps(v, separators=(",", ":"), allow_nan=False).encode()
        else:
            raw = np.ascontiguousarray(v, dtype=np.dtype(typ)).tobytes()
        comp = "none" if name in _RAW else "zlib"
        data = raw if comp == "none" else zlib.compress(raw, 1)
        secs.append({"name": name, "type": typ, "compression": comp, "bytes": len(data), "raw_bytes": len(raw)})
        datas.append(data)
    env = json.dumps({"header": header, "sections": secs}, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    h = hashlib.sha256(MAGIC)
    h.update(env)
    for d in datas:
        h.update(d)
    _write_atomic(path, [MAGIC, env, *datas, h.digest()])


def read_checkpoint(path: Path, expect_header: dict[str, Any], f: _Fields) -> dict[str, Any]:
    """Read and verify a format-3 checkpoint: magic, envelope, header (must equal `expect_header`), declared
    sizes against the file, the SHA-256 digest, then decode each section (JSON parsed strictly, arrays as
    numpy). Nothing here evaluates code; every size is checked before the bytes are read or inflated."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            magic = fh.read(len(MAGIC))
            if magic != MAGIC:
                if magic.startswith(b"\x80"):
                    f.fail("magic", "not a septlab checkpoint: this is a pickle (format-1 checkpoints and pickles "
                           "are never loaded, they could run code); start over with --overwrite-checkpoint")
                if magic.startswith(_MAGIC_STEM):
                    ver = "".join(c for c in magic[len(_MAGIC_STEM):].decode("ascii", "replace") if c.isalnum())
                    f.fail("magic", f"checkpoint format {ver or '?'}; this septlab reads format {CHECKPOINT_FORMAT}")
                f.fail("magic", "not a septlab checkpoint (no 'SEPTLAB-CHECKPOINT 2' line)")
            line = fh.readline(_MAX_ENVELOPE + 1)
            if not line.endswith(b"\n") or len(line) > _MAX_ENVELOPE:
                f.fail("envelope", "missing, cut short or longer than 1 MiB")
            env = f.obj(_strict_json(line, "envelope", f), "envelope", ("header", "sections"))
            _check_header(f, env["header"], expect_header)
            secs = _check_sections(f, env["sections"])
            expected = len(MAGIC) + len(line) + sum(s["bytes"] for s in secs) + 32
            if size != expected:
                f.fail("digest", f"file is {size:,} bytes, its envelope declares {expected:,}: truncated or extended")
            h = hashlib.sha256(magic)
            h.update(line)
            raws: dict[str, bytearray] = {}
            for s in secs:  # sizes were checked against the file: allocating them is bounded by its size
                buf = bytearray(s["bytes"])
                view = memoryview(buf)
                pos = 0
                while pos < len(buf):
                    got = fh.readinto(view[pos:pos + _CHUNK])
                    if not got:
                        f.fail("digest", "file ended early: truncated")
                    pos += got
                view.release()
                h.update(buf)
                raws[s["name"]] = buf
            if fh.read(33) != h.digest():
                f.fail("digest", "SHA-256 mismatch: the file was damaged or edited")
        out: dict[str, Any] = {}
        for s in secs:
            name = s["name"]
            raw: bytes | bytearray = raws.pop(name)
            if s["compression"] == "zlib":
                d = zlib.decompressobj()
                try:
                    raw = d.decompress(raw, s["raw_bytes"] + 1)
                except zlib.error as e:
                    f.fail(name, f"bad zlib data ({e})")
                if len(raw) != s["raw_bytes"] or not d.eof or d.unconsumed_tail or d.unused_data:
                    f.fail(name, f"inflates to other than the declared {s['raw_bytes']:,} bytes")
            elif len(raw) != s["raw_bytes"]:
                f.fail(name, "raw size differs from the declared one")
            out[name] = _strict_json(raw, name, f) if s["type"] == "json" else np.frombuffer(raw, np.dtype(s["type"]))
        return out
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or type(e).__name__})") from None
    except MemoryError:
        raise CheckpointError(f"{path}: checkpoint too large to load into memory") from None


def _check_header(f: _Fields, got: Any, want: dict[str, Any]) -> None:
    got = f.obj(got, "header")
    if set(got) != set(want):
        f.fail("header", f"checkpoint is for a different check (header fields {sorted(got)})")
    for k, v in want.items():
        g = got[k]
        if type(g) is not type(v) or g != v:
            f.fail(f"header.{k}", f"checkpoint is for a different check: {_short(g)} in the checkpoint, "
                   f"{_short(v)} in this one")


def _check_sections(f: _Fields, secs: Any) -> list[dict[str, Any]]:
    secs = f.array(secs, "envelope.sections")
    if len(secs) != len(_SECTIONS):
        f.fail("envelope.sections", f"expected {len(_SECTIONS)} sections, got {len(secs)}")
    for k, ((name, typ), s) in enumerate(zip(_SECTIONS, secs, strict=True)):
        w = f"envelope.sections[{k}]"
        s = f.obj(s, w, ("name", "type", "compression", "bytes", "raw_bytes"))
        if s["name"] != name or s["type"] != typ:
            f.fail(w, f"expected section {name!r} of type {typ!r}, got {_short(s['name'])} {_short(s['type'])}")
        comp = "none" if name in _RAW else "zlib"
        if s["compression"] != comp:
            f.fail(f"{w}.compression", f"expected {comp!r}, got {_short(s['compression'])}")
        n = f.integer(s["bytes"], f"{w}.bytes", 0, 1 << 50)
        raw = f.integer(s["raw_bytes"], f"{w}.raw_bytes", 0, n if comp == "none" else _MAX_RATIO * n + 64)
        if typ != "json" and raw % np.dtype(typ).itemsize:
            f.fail(f"{w}.raw_bytes", f"not a whole number of {typ} items")
    return secs


# --- the explorer ----------------------------------------------------------------------------------------
class Explorer:
    """Search over any executor with: reset(), transitions(), execute(tr), state(), finish(), stopped,
    violations, steps_executed, step, choices, and the optional hooks step_info(tr) (coverage), events()
    and, for POR, threads/world/checker (footprints are traced on the world)."""

    def __init__(self, ex: Any, opts: CheckOptions, header: dict[str, Any]):
        self.o = opts
        self.ex = ex
        self.header = header
        self.stats = CheckStats()
        self.cov = Coverage()
        self.bounded: set[str] = set()
        self.found: dict[str, int] = {}  # invariant -> violating states found (stop_at_first=False)
        self.visited: Any = FullStateSet() if opts.full_states else FingerprintSet()
        self.budget: dict[int, int] = {}  # fp -> most preemptions left when expanded (bounded mode)
        # fp -> the sleep set it was last expanded with (POR): a state reached again with a sleep set that
        # lacks some of these transitions is expanded again, for those only (Godefroid's state caching
        # with sleep sets)
        self.asleep: dict[int, frozenset[Transition]] = {}
        self._sleep_sets: dict[frozenset, frozenset] = {}
        self.tracer: Any = None
        # BFS tree, one slot per node: parent, transition into it, preemptions used (bounded mode only)
        self.bfs_parent: list[int] = []
        self.bfs_tr: list[Transition] = []
        self.bfs_pre: list[int] = []
        self.bfs_fp: list[int] = []  # fingerprint of each node's state (liveness: the graph's edge sources)
        self._intern: dict[Transition, Transition] = {}
        self.interrupted = False
        # undo journal of the step in progress: visited inserts, (dict, key, old value or None)
        self._undo_keys: list[Any] = []
        self._undo: list[tuple[dict[int, Any], int, Any]] = []
        self._last_ckpt = time.monotonic()
        self._last_report = 0.0
        self._t0 = self._run_t0 = time.monotonic()  # elapsed origin (across resumes), this invocation's start
        if hasattr(ex, "record"):
            ex.record = False  # choice lists are rebuilt for the one path that is reported
        if opts.liveness and opts.por:
            raise ValueError("liveness needs every transition: sleep sets (POR) may prune the one that closes a cycle")
        # the state graph for liveness (explore/liveness.py), when the executor can describe its states
        self.graph: StateGraph | None = StateGraph() if opts.liveness and hasattr(ex, "liveness_masks") else None
        self.lasso: Lasso | None = None
        self.terminals: set[int] = set()

    # --- helpers -------------------------------------------------------------------------------------
    def _key(self) -> Any:
        st = self.ex.state()
        return st if self.o.full_states else fingerprint(st)

    def _fp(self, key: Any) -> int:
        """The uint64 key of budgets and sleep marks (the fingerprint, also in full-state mode)."""
        return fingerprint(key) if self.o.full_states else key

    def _step(self, tr: Transition) -> None:
        """Execute one transition, with coverage if the executor reports it."""
        f = getattr(self.ex, "step_info", None)
        if f is None:
            self.ex.execute(tr)
        else:
            f(tr, self.cov)

    def _footprint_step(self, tr: Transition) -> Any:
        """Execute one transition with its footprint recorded (explore/footprint.py): what it read and
        wrote, and what made it possible (the executor's footprint_enabling)."""
        ex = self.ex
        if self.tracer is None:
            self.tracer = Tracer(getattr(ex, "footprint_classes", None), por=True)
        tid = tr[0]
        self.tracer.start(ex.footprint_roots(), ex.threads[tid].gen, lambda: ex.footprint_enabling(tid))
        try:
            self._step(tr)
        finally:
            fpr = self.tracer.stop()
        return fpr

    def _replay(self, path: list[Transition]) -> None:
        """Back to the state after `path`. Light (Executor.replay: no call chains, no per-step records)
        unless the options ask for the full re-execution of earlier releases (the benchmark's baseline)."""
        ex = self.ex
        fast = getattr(ex, "replay", None)
        if fast is not None and self.o.light_replay:
            fast(path)
            return
        ex.reset()
        for tr in path:
            ex.execute(tr)

    def _rerun(self, path: list[Transition], viol: Any) -> Any:
        """Re-execute a reported path in full (choice list, call chains) and take its violation from that
        run: a light replay earlier on the path left call chains out of lockdep's and KASAN's records."""
        ex = self.ex
        ex.record = True
        ex.reset()
        for tr in path:
            ex.execute(tr)
        if viol is not None and "lasso" in getattr(viol, "details", {}):
            return viol  # a liveness lasso is the explorer's own report, not the checker's
        fresh = list(ex.violations)
        if not fresh and not getattr(ex, "stopped", False) and hasattr(ex, "finish") and not ex.transitions():
            ex.finish()
            fresh = list(ex.violations)
        if viol is None:
            return fresh[0] if fresh else None
        return next((v for v in fresh if v.invariant == viol.invariant), viol)

    def _events_from(self) -> None:
        f = getattr(self.ex, "events", None)
        for ev in (f() if f else ()):
            self.cov.note_event(ev)

    def _at_leaf(self) -> Any:
        """A terminal state: count it, evaluate the end-of-run invariants, return the violation if any."""
        self._count_leaf()
        self.ex.finish()
        self._events_from()
        return self._violation()

    def _count_leaf(self) -> None:
        """A terminal state is a state too (SPIN counts end states): count it once, never expand it."""
        self.stats.terminal += 1
        key = self._key()
        self.terminals.add(self._fp(key))
        if self.visited.add(key, self._undo_keys):
            self.stats.states += 1

    def _note_found(self) -> None:
        for v in {x.invariant for x in self.ex.violations}:
            self.found[v] = self.found.get(v, 0) + 1

    def _violation(self) -> Any:
        v = self.ex.violations
        return v[0] if v else None

    def _progress(self, frontier: int) -> None:
        s = self.stats
        s.elapsed = time.monotonic() - self._t0
        s.frontier = frontier
        s.steps_executed = self.ex.steps_executed
        if self.o.progress:
            self.o.progress(s)

    def _tick(self, frontier: Any, size: int) -> None:
        """Every so often: report progress; every checkpoint interval: write the checkpoint."""
        now = time.monotonic()
        if now - self._last_report > 0.25:
            self._last_report = now
            self._progress(size)
        if self.o.checkpoint and now - self._last_ckpt > self.o.checkpoint_every:
            self._save_checkpoint(frontier)

    def _should_end(self, progressed: bool) -> bool:
        """Polled before every step. The time limit counts from the start of this invocation, and only once
        it made progress, so `--time-limit T --resume` run repeatedly always advances and finishes."""
        o = self.o
        if o.should_stop is not None and o.should_stop():
            self._interrupt()
            return True
        if progressed and o.time_limit is not None and time.monotonic() - self._run_t0 > o.time_limit:
            self.bounded.add("time limit")
            return True
        return False

    def _interrupt(self) -> None:
        self.interrupted = True
        self.bounded.add("interrupted")

    def _start(self) -> bool:
        """Start this invocation's clock; True if it resumes from the checkpoint. A new check refuses to
        replace an existing checkpoint unless asked to (it may hold days of search)."""
        self._run_t0 = self._t0 = self._last_ckpt = time.monotonic()
        refuse_overwrite(self.o)
        return bool(self.o.resume and self.o.checkpoint and self.o.checkpoint.exists())

    # --- one step as a transaction (a KeyboardInterrupt rolls it back) ------------------------------------
    def _begin(self) -> tuple[dict[str, Any], dict[str, int]]:
        self._undo_keys.clear()
        self._undo.clear()
        self.cov.journal.clear()
        return vars(self.stats).copy(), dict(self.found)

    def _rollback(self, stats: dict[str, Any], found: dict[str, int]) -> None:
        """Undo the uncommitted step: take its new states out of the visited set, restore budgets and sleep
        marks, stats, found and coverage. The step is then pending again and a resume redoes it."""
        for key in reversed(self._undo_keys):
            self.visited.discard(key)
        self.visited.recount()
        for d, k, old in reversed(self._undo):
            if old is None:
                d.pop(k, None)
            else:
                d[k] = old
        self._undo_keys.clear()
        self._undo.clear()
        self.cov.rollback()
        self.stats.__dict__.update(stats)
        self.found = found

    def _result(self, complete: bool, viol: Any = None, path: list[Transition] | None = None) -> CheckResult:
        s = self.stats
        s.elapsed = time.monotonic() - self._t0
        s.steps_executed = self.ex.steps_executed
        choices: list[tuple[int, int]] = []
        if path is not None:
            viol = self._rerun(path, viol)
            choices = list(self.ex.choices)
        if not isinstance(self.visited, FullStateSet):  # fingerprints, here or shared between workers
            vb = self.visited.nbytes
        else:  # full states: pickled size of a sample (a lower bound of the in-memory size) + set slots
            import pickle as _p  # dumps only, for a size estimate; checkpoints never use pickle
            import sys

            sample = list(self.visited.s)[:200]
            avg = sum(len(_p.dumps(x, protocol=5)) for x in sample) / max(1, len(sample))
            vb = int(avg * len(self.visited)) + sys.getsizeof(self.visited.s)
        vb += 48 * (len(self.budget) + len(self.asleep))
        vb += 16 * len(self.bfs_parent) + 8 * len(self.bfs_pre)  # list slots (ints and transitions are shared)
        return CheckResult(s, complete and not self.bounded, sorted(self.bounded), viol, path or [], choices,
                           self.cov.as_json(), vb / max(1, s.states), vb, dict(self.found), self.interrupted,
                           set(self.terminals))

    # --- liveness ------------------------------------------------------------------------------------
    def _graph_state(self, key: Any, trs: list[Transition]) -> int:
        fp = self._fp(key)
        if self.graph is not None:
            self.graph.state(fp, *self.ex.liveness_masks(trs))
        return fp

    def _graph_edge(self, src: int | None, tr: Transition, key: Any, trs: list[Transition]) -> int:
        """Record the step just executed (src --tr--> the current state) and the state; its fingerprint."""
        fp = self._graph_state(key, trs)
        if self.graph is not None and src is not None:
            self.graph.edge(src, tr, fp, self.ex.progressed())
        return fp

    def _liveness(self) -> tuple[Any, list[Transition]] | None:
        """After a search without safety violation: the best confirmed lasso, as (violation, path), where
        the path runs the loop often enough for the random-run watchdog to fire on replay."""
        g = self.graph
        if g is None:
            return None
        ex = self.ex
        for lasso in find_lassos(g, len(ex.threads), ex.daemons()):
            whats = self._confirm(lasso)
            if whats is None:
                continue
            self.lasso = lasso
            return self._lasso_violation(lasso, whats), self._lasso_path(lasso)
        return None

    def _confirm(self, lasso: Lasso) -> list[tuple[str, str]] | None:
        """Re-execute prefix + loop twice: the loop must be enabled step by step and come back to the state
        it started in. Returns (task, step) of one loop iteration."""
        ex = self.ex
        ex.reset()
        for tr in lasso.prefix:
            if tr not in ex.transitions():
                return None
            ex.execute(tr)
        start = ex.fingerprint()
        whats: list[tuple[str, str]] = []
        for rep in range(2):
            for tr in lasso.loop:
                if tr not in ex.transitions() or ex.stopped:
                    return None
                info = ex.execute(tr)
                if not rep:
                    whats.append((ex.task_name(tr[0]), info.what))
            if ex.fingerprint() != start or ex.stopped:
                return None
        return whats

    def _lasso_path(self, lasso: Lasso) -> list[Transition]:
        """prefix + the loop repeated past the watchdog's thresholds (and no further than the scenario's
        step bound); the replay stops where the watchdog fires."""
        from ..check.watchdog import WATCH_EVERY, Thresholds

        scn = self.ex.scn
        lim = Thresholds.for_scenario(scn.steps_per_second)
        # the longest threshold, whatever the kind: on replay the starving task may be caught by another
        # detector than the one the loop's shape names (it sits at a mutex when the watchdog scans)
        need = max(lim.soft_lockup, lim.rcu_stall, lim.hung_task)
        reps = (need + 4 * WATCH_EVERY + len(lasso.prefix)) // len(lasso.loop) + 2
        reps = max(2, min(reps, (scn.max_steps - len(lasso.prefix)) // len(lasso.loop)))
        return lasso.prefix + lasso.loop * reps

    def _lasso_violation(self, lasso: Lasso, whats: list[tuple[str, str]]) -> Any:
        from ..check.invariants import Violation

        ex = self.ex
        name = ex.task_name(lasso.task)
        what = {"soft-lockup": "keeps running without progress (livelock)",
                "hung-task": "waits forever: nothing it waits for can happen on the loop",
                "rcu-stall": "owes a grace period that never ends"}[lasso.kind]
        title = (f"{lasso.kind}: {name} {what}: a fair {len(lasso.loop)}-step cycle after a "
                 f"{len(lasso.prefix)}-step prefix")
        lines = [title, f"starving task: {name}; tasks that run on the loop: "
                        f"{', '.join(ex.task_name(t) for t in lasso.steppers)} (weak fairness: every task "
                        "runnable throughout the loop runs on it)",
                 f"prefix: {len(lasso.prefix)} transitions from the initial state",
                 f"loop ({len(lasso.loop)} transition{'s' if len(lasso.loop) != 1 else ''}, then again from its "
                 "first step, forever):"]
        lines += [f"  <{t}> {w}" for t, w in whats]
        return Violation(lasso.kind, len(lasso.prefix), name, title,
                         {"lines": lines, "lasso": {"prefix": len(lasso.prefix), "loop": len(lasso.loop),
                                                    "task": name, "component_states": lasso.component}})

    # --- DFS -----------------------------------------------------------------------------------------
    @staticmethod
    def _budget_key(fp: int, last: int) -> int:
        """Budgets are per (state, last task): whether the next switch is a preemption depends on which
        task ran last, which the state does not record; keyed by state alone, the bounded space would
        depend on which path reached a state first (and DFS and BFS would disagree)."""
        return (fp ^ ((last + 1) * 0x9E3779B97F4A7C15)) & 0xFFFFFFFFFFFFFFFF

    def _admit(self, key: Any, pre_left: int, sleep: frozenset[Transition], last: int = -1
               ) -> bool | frozenset[Transition]:
        """Decide whether a reached state must be expanded (state caching + budgets + sleep sets): False,
        True, or (POR) the only transitions to try -- those its earlier expansion left asleep and this
        path does not. Every change is journaled so that an interrupted step can be rolled back."""
        o = self.o
        fp = self._fp(key)
        new = self.visited.add(key, self._undo_keys)
        more = new
        if o.preemptions is not None:
            bk = self._budget_key(fp, last)
            old = self.budget.get(bk)
            if new or old is None or old < pre_left:
                more = True
                self._undo.append((self.budget, bk, old))
                self.budget[bk] = max(pre_left, old if old is not None else -1)
        if new:
            self.stats.states += 1
        if not o.por:
            return more
        stored = self.asleep.get(fp)
        if more:  # expanded in full, with this path's sleep set
            keep = sleep if stored is None or new else stored & sleep
        elif stored is None or stored <= sleep:
            return False
        else:
            keep = stored & sleep
        self._undo.append((self.asleep, fp, stored))
        self.asleep[fp] = self._sleep_sets.setdefault(keep, keep)
        return True if more else stored - sleep

    def dfs(self) -> CheckResult:
        if self._start():
            stack = self._load_checkpoint()
            at = -1
        else:
            stack = self._root_stack()
            at = 0  # the executor is at stack[at]
        viol, vpath = self._dfs_loop(stack, at)
        if viol is not None:
            return self._result(False, viol, vpath)
        self._progress(0)
        self._final_checkpoint(stack)
        return self._finish()

    def _root_stack(self) -> list[dict[str, Any]]:
        """The initial state, admitted, as a one-node stack (the executor is left at it)."""
        self.ex.reset()
        key0 = self._key()
        self._admit(key0, self.o.preemptions or 0, frozenset())
        stack = [self._node({}, 0, -1)]
        stack[0]["fp"] = self._graph_state(key0, stack[0]["trs"])
        return stack

    def _poll(self, stack: list[dict[str, Any]]) -> None:
        """Called before every DFS step with the stack: a parallel worker gives away work here."""

    def _dfs_loop(self, stack: list[dict[str, Any]], at: int) -> tuple[Any, list[Transition]]:
        """Depth-first search from `stack` (the executor is at stack[at], or anywhere if at is -1) until the
        stack is empty, a bound or a stop request ends it, or a violation is found: (violation, its path)."""
        o = self.o
        viol: Any = None
        vpath: list[Transition] = []
        progressed = False
        # snap is the undo record of the step in progress and None between steps: it is set by one
        # assignment and cleared just after the step's last change, so an interrupt anywhere either finds
        # a committed step or rolls a whole one back.
        snap: tuple[Any, ...] | None = None
        try:
            while stack:
                if self._should_end(progressed):
                    break
                self._poll(stack)
                node = stack[-1]
                snap = (*self._begin(), node, len(stack), node["i"], len(node["done"]), node["chosen"])
                progressed = True
                tr = self._next(node)
                if tr is None:
                    snap = None  # committed: the node is exhausted whether or not the pop below happens
                    stack.pop()
                    continue
                if at != len(stack) - 1:
                    at = -1
                    self._replay([n["chosen"] for n in stack[:-1]])
                node["chosen"] = tr
                at = -1
                # a footprint is needed to keep this node's sleeping transitions asleep after tr, to put an
                # earlier sibling to sleep after tr, or tr after a later one: not for the only transition of
                # a node with nothing asleep (a stretch where one task runs alone costs no tracing)
                if o.por and (node["sleep"] or node["done"] or node["i"] < len(node["trs"])):
                    node["fps"][tr] = self._footprint_step(tr)
                else:
                    if o.por:
                        node["fps"][tr] = None
                    self._step(tr)
                node["done"].append(tr)
                what, trs = self._after_step(len(stack))
                if what == "stop":
                    viol, vpath = trs, [n["chosen"] for n in stack]
                    break
                if what == "end":
                    snap = None
                    continue
                pre = node["pre"] + self._is_preemption(node, tr)
                sleep = self._child_sleep(node, tr) if o.por else {}
                pre_left = (o.preemptions - pre) if o.preemptions is not None else 0
                key = self._key()
                fp = self._graph_edge(node.get("fp"), tr, key, trs)
                adm = self._admit(key, pre_left, frozenset(sleep), tr[0])
                if adm is False:
                    self.stats.revisits += 1
                    snap = None
                    continue
                stack.append(self._node(sleep, pre, tr[0], trs, None if adm is True else adm))
                stack[-1]["fp"] = fp
                snap = None
                at = len(stack) - 1
                self._tick(stack, len(stack))
        except KeyboardInterrupt:
            if snap is not None:
                stats, found, node, n0, i0, d0, c0 = snap
                del stack[n0:]
                node["i"] = i0
                del node["done"][d0:]
                node["chosen"] = c0
                self._rollback(stats, found)
            self._interrupt()
        return viol, vpath

    def _after_step(self, depth: int) -> tuple[str, Any]:
        """After a transition from the node at `depth` of the path: ("stop", violation) when the search
        stops at it, ("end", None) when nothing follows it (a violation noted, a terminal state, the depth
        bound), else ("go", the transitions of the state reached)."""
        o = self.o
        ex = self.ex
        self.stats.transitions += 1
        if depth > self.stats.max_depth:
            self.stats.max_depth = depth
        v = self._violation()
        if v is not None and ex.stopped:
            self._events_from()
            if o.stop_at_first:
                return "stop", v
            self._note_found()
            return "end", None
        trs = ex.transitions()
        if not trs:
            v = self._at_leaf()
            if v is not None:
                if o.stop_at_first:
                    return "stop", v
                self._note_found()
            return "end", None
        if o.max_depth is not None and ex.step >= o.max_depth:
            self.stats.depth_pruned += 1
            self.bounded.add(f"depth {o.max_depth}")
            return "end", None
        return "go", trs

    def _finish(self) -> CheckResult:
        """No safety violation: the liveness verdict on the graph explored, then the result."""
        found = self._liveness() if not self.interrupted else None
        if found is not None:
            return self._result(False, *found)
        return self._result(not self.bounded)

    def _child_sleep(self, node: dict[str, Any], tr: Transition) -> dict[Transition, Any]:
        """Sleep sets (Godefroid): after `tr`, a transition asleep here or explored here before `tr` stays
        asleep if it belongs to another task and its footprint does not conflict with `tr`'s -- running it
        after `tr` reaches what running it before did. Footprints travel with the sleeping transition."""
        fps = node["fps"]
        f = fps[tr]
        if f is None:  # not traced: the node's only transition, nothing asleep (see _dfs_loop)
            return {}
        sl = node["sleep"]
        cand = list(sl.items()) if isinstance(sl, dict) else [(u, None) for u in sl]
        cand += [(u, fps.get(u)) for u in node["done"][:-1]]
        return {u: g for u, g in cand if u[0] != tr[0] and g is not None and not dependent(g, f)}

    def _node(self, sleep: Any, pre: int, last: int, trs: list[Transition] | None = None,
              only: frozenset[Transition] | None = None) -> dict[str, Any]:
        trs = trs if trs is not None else self.ex.transitions()
        en = {tid for tid, _ in trs}
        return {"trs": trs, "i": 0, "sleep": sleep, "pre": pre, "last": last, "chosen": None, "done": [],
                "gp": None, "last_enabled": last in en, "fps": {}, "only": only}

    def _is_preemption(self, node: dict[str, Any], tr: Transition) -> int:
        return int(node["last"] >= 0 and node["last_enabled"] and tr[0] != node["last"])

    def _next(self, node: dict[str, Any]) -> Transition | None:
        trs = node["trs"]
        while node["i"] < len(trs):
            tr = trs[node["i"]]
            node["i"] += 1
            only = node.get("only")
            if tr in node["sleep"] or (only is not None and tr not in only):
                self.stats.sleep_pruned += 1
                continue
            if self.o.preemptions is not None and node["pre"] + self._is_preemption(node, tr) > self.o.preemptions:
                self.stats.preemption_pruned += 1
                self.bounded.add(f"preemptions {self.o.preemptions}")
                continue
            return tr
        return None

    # --- BFS (shortest counterexample) -------------------------------------------------------------
    def _path(self, node: int) -> list[Transition]:
        out = []
        while node > 0:
            out.append(self.bfs_tr[node])
            node = self.bfs_parent[node]
        out.reverse()
        return out

    def _bfs_admit(self, key: Any, pre_left: int, last: int = -1) -> bool:
        """BFS state caching; with a preemption bound, a state reached again with more preemptions left
        than when it was queued is queued again (as DFS re-expands it), else the bound would depend on
        which path happened to reach the state first."""
        new = self.visited.add(key, self._undo_keys)
        if self.o.preemptions is not None:
            fp = self._budget_key(self._fp(key), last)
            old = self.budget.get(fp)
            if not new and old is not None and old >= pre_left:
                return False
            self._undo.append((self.budget, fp, old))
            self.budget[fp] = max(pre_left, old if old is not None else -1)
        elif not new:
            return False
        if new:
            self.stats.states += 1
        return True

    def bfs(self) -> CheckResult:
        """Level by level: the first violation found has a shortest path (fewest steps) to it.
        The tree of search nodes is kept as parent pointers (two list slots per node, three when
        preemptions are bounded: the preemptions used to reach it; its last task is its transition's)."""
        o = self.o
        ex = self.ex
        bound = o.preemptions
        if self._start():
            frontier = self._load_checkpoint()
        else:
            ex.reset()
            key0 = self._key()
            self._bfs_admit(key0, bound or 0)
            self.bfs_parent = [-1]
            self.bfs_tr = [(-1, 0)]
            self.bfs_pre = [0] if bound is not None else []
            self.bfs_fp = [self._graph_state(key0, ex.transitions())]
            frontier = deque([0])
        viol: Any = None
        vpath: list[Transition] = []
        progressed = False
        snap: tuple[Any, ...] | None = None  # undo record of the node being expanded (see dfs)
        try:
            while frontier:
                if self._should_end(progressed):
                    break
                snap = (*self._begin(), frontier[0], len(self.bfs_parent))
                node = frontier.popleft()
                progressed = True
                path = self._path(node)
                self._replay(path)
                at_node = True
                trs = ex.transitions()
                last = self.bfs_tr[node][0]  # -1 at the root
                pre0 = self.bfs_pre[node] if bound is not None else 0
                last_enabled = last >= 0 and any(tid == last for tid, _ in trs)
                for tr in trs:
                    pre = pre0
                    if bound is not None:
                        pre += int(last_enabled and tr[0] != last)
                        if pre > bound:
                            self.stats.preemption_pruned += 1
                            self.bounded.add(f"preemptions {bound}")
                            continue
                    if not at_node:
                        self._replay(path)
                    at_node = False
                    self._step(tr)
                    self.stats.transitions += 1
                    depth = len(path) + 1
                    if depth > self.stats.max_depth:
                        self.stats.max_depth = depth
                    v = self._violation()
                    if v is not None and ex.stopped:
                        self._events_from()
                        if o.stop_at_first:
                            viol, vpath = v, path + [tr]
                            break
                        self._note_found()
                        continue
                    ctrs = ex.transitions()
                    if not ctrs:
                        v = self._at_leaf()
                        if v is not None:
                            if o.stop_at_first:
                                viol, vpath = v, path + [tr]
                                break
                            self._note_found()
                        continue
                    if o.max_depth is not None and ex.step >= o.max_depth:
                        self.stats.depth_pruned += 1
                        self.bounded.add(f"depth {o.max_depth}")
                        continue
                    key = self._key()
                    fp = self._graph_edge(self.bfs_fp[node] if node < len(self.bfs_fp) else None, tr, key, ctrs)
                    if self._bfs_admit(key, (bound - pre) if bound is not None else 0, tr[0]):
                        if len(self.bfs_fp) == len(self.bfs_parent):
                            self.bfs_fp.append(fp)
                        self.bfs_parent.append(node)
                        self.bfs_tr.append(self._intern.setdefault(tr, tr))
                        if bound is not None:
                            self.bfs_pre.append(pre)
                        frontier.append(len(self.bfs_parent) - 1)
                    else:
                        self.stats.revisits += 1
                if viol is not None:
                    break
                snap = None
                self._tick(frontier, len(frontier))
        except KeyboardInterrupt:
            if snap is not None:
                stats, found, node, t0 = snap
                while frontier and frontier[-1] >= t0:  # children queued by the interrupted expansion
                    frontier.pop()
                if not frontier or frontier[0] != node:
                    frontier.appendleft(node)
                del self.bfs_parent[t0:], self.bfs_tr[t0:], self.bfs_pre[t0:], self.bfs_fp[t0:]
                self._rollback(stats, found)
            self._interrupt()
        if viol is not None:
            return self._result(False, viol, vpath)
        self._progress(0)
        self._final_checkpoint(frontier)
        return self._finish()

    # --- checkpoints -------------------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        o = self.o
        return {"format": CHECKPOINT_FORMAT, **self.header, "strategy": o.strategy, "por": o.por,
                "max_depth": o.max_depth, "preemptions": o.preemptions, "full_states": o.full_states,
                "liveness": self.graph is not None}

    def _save_checkpoint(self, frontier: Any) -> None:
        """Everything a resume needs, as data (see the module docstring for the format)."""
        assert self.o.checkpoint is not None
        bfs = self.o.strategy == "bfs"
        self.stats.elapsed = time.monotonic() - self._t0
        self.stats.steps_executed = self.ex.steps_executed
        doc = {"stats": {fd.name: getattr(self.stats, fd.name) for fd in fields(CheckStats)},
               "bounded": sorted(self.bounded - _RUN_BOUNDS), "found": dict(sorted(self.found.items())),
               "coverage": self.cov.to_doc(), "stack": None if bfs else [
                   {"trs": n["trs"], "i": n["i"], "sleep": sorted(n["sleep"]), "pre": n["pre"], "last": n["last"],
                    "chosen": n["chosen"], "done": n["done"], "gp": n["gp"], "last_enabled": n["last_enabled"]}
                   for n in frontier]}
        full = isinstance(self.visited, FullStateSet)
        tr = self.bfs_tr if bfs else []
        payload = {
            "doc": doc,
            "visited": np.zeros(0, np.uint64) if full else self.visited.to_array(),
            "visited_states": _encode_states(self.visited.s) if full else {"nodes": [], "states": []},
            "budget_keys": np.fromiter(self.budget.keys(), np.uint64, len(self.budget)),
            "budget_vals": np.fromiter(self.budget.values(), np.int64, len(self.budget)),
            "asleep_keys": np.fromiter(self.asleep.keys(), np.uint64, len(self.asleep)),
            "asleep_vals": np.fromiter(self.asleep.values(), np.uint8, len(self.asleep)),
            "frontier": np.fromiter(frontier, np.int64, len(frontier)) if bfs else np.zeros(0, np.int64),
            "tree_parent": np.array(self.bfs_parent if bfs else [], np.int64),
            "tree_tid": np.fromiter((t for t, _ in tr), np.int64, len(tr)),
            "tree_err": np.fromiter((e for _, e in tr), np.uint64, len(tr)),
            "tree_pre": np.array(self.bfs_pre if bfs else [], np.int64),
            **self._graph_sections(frontier, bfs),
        }
        write_checkpoint(self.o.checkpoint, self._header(), payload)
        self._last_ckpt = time.monotonic()
        self.stats.checkpoints += 1

    def _graph_sections(self, frontier: Any, bfs: bool) -> dict[str, Any]:
        """The liveness graph: node fingerprints of the search nodes (BFS tree / DFS stack), the states
        with (enabled, owes progress, asleep) masks, the edges as (src, dst, tid, err, progressed)."""
        g = self.graph
        if g is None:
            return {k: np.zeros(0, np.uint64) for k in ("node_fp", "graph_nodes", "graph_info", "graph_edges")}
        fps = self.bfs_fp if bfs else [n["fp"] for n in frontier]
        edges = [x for src, lst in g.out.items() for (tid, err), dst, prog in lst for x in (src, dst, tid, err, prog)]
        return {"node_fp": np.array(fps, np.uint64), "graph_nodes": np.fromiter(g.info.keys(), np.uint64, len(g.info)),
                "graph_info": np.array([x for v in g.info.values() for x in v], np.uint64),
                "graph_edges": np.array(edges, np.uint64)}

    def _restore_graph(self, f: _Fields, sec: dict[str, Any], nodes_expected: int) -> list[int]:
        """Check and install the liveness graph; returns the search nodes' fingerprints."""
        names = ("node_fp", "graph_nodes", "graph_info", "graph_edges")
        if self.graph is None:
            for k in names:
                if sec[k].size:
                    f.fail(k, "liveness data in a checkpoint of a search without liveness")
            return []
        node_fp, nodes, info, edges = (sec[k] for k in names)
        if node_fp.size != nodes_expected:
            f.fail("node_fp", f"{node_fp.size} fingerprints for {nodes_expected} search nodes")
        if info.size != 3 * nodes.size or edges.size % 5:
            f.fail("graph_info", f"{info.size} masks for {nodes.size} states, {edges.size} edge words")
        if np.unique(nodes).size != nodes.size:
            f.fail("graph_nodes", "duplicate states")
        nt = f.nthreads
        if nt is not None and info.size and int(info.max()) >= 1 << nt:
            f.fail("graph_info", f"a task mask names a task beyond the {nt} of this scenario")
        g = StateGraph()
        for k, fp in enumerate(nodes.tolist()):
            g.state(fp, *(int(x) for x in info[3 * k:3 * k + 3]))
        known = g.info
        e = edges.reshape(-1, 5).tolist() if edges.size else []
        for k, (src, dst, tid, err, prog) in enumerate(e):
            w = f"graph_edges[{k}]"
            if src not in known or dst not in known:
                f.fail(w, "an edge between states the graph does not hold")
            if nt is not None and (tid >= nt or prog >= 1 << nt):
                f.fail(w, f"task {tid} / progress mask {prog:#x} beyond the {nt} tasks of this scenario")
            if f.errors is not None and err not in f.errors:
                f.fail(w, f"injected error {err:#x} is not one the scenario's fault model allows")
            g.edge(src, (tid, err), dst, prog)
        if set(node_fp.tolist()) - known.keys():
            f.fail("node_fp", "a search node whose state the graph does not hold")
        self.graph = g
        return node_fp.tolist()

    def _final_checkpoint(self, frontier: Any) -> None:
        """However the search ended short of a violation (complete, bounded, time limit, interrupted), save
        where it stands. A Ctrl-C during this write (the usual moment for an impatient one) gets one retry;
        a second one propagates, and the atomic write leaves the previous checkpoint intact."""
        if not self.o.checkpoint:
            return
        try:
            self._save_checkpoint(frontier)
        except KeyboardInterrupt:
            self._save_checkpoint(frontier)

    def _fields(self, path: Path) -> _Fields:
        threads = getattr(self.ex, "threads", None)
        faults = getattr(self.ex, "faults", None)
        errors = {0} | {e for es in faults.values() for e in es} if isinstance(faults, dict) else None
        return _Fields(path, len(threads) if isinstance(threads, list) else None, errors)

    def _load_checkpoint(self) -> Any:
        path = self.o.checkpoint
        assert path is not None
        f = self._fields(path)
        try:
            return self._restore(f, read_checkpoint(path, self._header(), f))
        except MemoryError:
            raise CheckpointError(f"{path}: checkpoint too large to load into memory") from None
        except RecursionError:
            raise CheckpointError(f"{path}: visited_states: nested too deeply") from None

    def _restore(self, f: _Fields, sec: dict[str, Any]) -> Any:
        """Check every field of a verified checkpoint and install it; returns the DFS stack or BFS frontier."""
        o = self.o
        bfs = o.strategy == "bfs"
        K = o.preemptions
        doc = f.obj(sec["doc"], "doc", ("stats", "bounded", "found", "coverage", "stack"))
        st = f.obj(doc["stats"], "stats", [fd.name for fd in fields(CheckStats)])
        stats = CheckStats()
        for fd in fields(CheckStats):
            v = st[fd.name]
            if fd.name == "elapsed":
                if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
                    f.fail("stats.elapsed", f"expected a non-negative number of seconds, got {_short(v)}")
                v = float(v)
            else:
                v = f.integer(v, f"stats.{fd.name}", 0)
            setattr(stats, fd.name, v)
        bounded = {f.string(b, f"bounded[{k}]") for k, b in enumerate(f.array(doc["bounded"], "bounded"))}
        persisted = {f"depth {o.max_depth}", f"preemptions {K}"}  # the bounds of this search space, nothing else
        if not bounded <= persisted:
            f.fail("bounded", f"{sorted(bounded - persisted)} is not a bound of this check")
        found = f.counts(doc["found"], "found")
        cv = f.obj(doc["coverage"], "coverage", ("seamcalls", "steps", "events"))
        cov = Coverage()
        for k, row in enumerate(f.array(cv["seamcalls"], "coverage.seamcalls")):
            w = f"coverage.seamcalls[{k}]"
            if type(row) is not list or len(row) != 4:
                f.fail(w, f"expected [leaf, entry state, outcome, count], got {_short(row)}")
            key = (f.string(row[0], w), f.string(row[1], w), f.string(row[2], w))
            if key in cov.seamcalls:
                f.fail(w, "duplicate row")
            cov.seamcalls[key] = f.integer(row[3], f"{w}.count", 1)
        cov.steps = dict(f.counts(cv["steps"], "coverage.steps"))
        cov.events = dict(f.counts(cv["events"], "coverage.events"))

        # visited
        if o.full_states:
            if len(sec["visited"]):
                f.fail("visited", "fingerprints in a full-state checkpoint")
            states = _decode_states(sec["visited_states"], f)
            visited: Any = FullStateSet(states)
            if len(visited) != len(states):
                f.fail("visited_states", "duplicate states")
        else:
            vs = sec["visited_states"]
            if vs != {"nodes": [], "states": []}:
                f.fail("visited_states", "full states in a fingerprint checkpoint")
            arr = sec["visited"]
            if arr.size and (not arr.all() or np.unique(arr).size != arr.size):
                f.fail("visited", "fingerprints must be distinct and nonzero")
            visited = FingerprintSet.from_array(arr)
        if len(visited) != stats.states:
            f.fail("visited", f"{len(visited):,} states stored but stats.states is {stats.states:,}")

        def keyed(kname: str, vname: str, lo: int, hi: int, allowed: bool) -> dict[int, int]:
            keys, vals = sec[kname], sec[vname]
            if keys.size != vals.size:
                f.fail(vname, f"{vals.size} values for {keys.size} keys")
            if keys.size and not allowed:
                f.fail(kname, "present although this check does not use it")
            if np.unique(keys).size != keys.size:
                f.fail(kname, "duplicate keys")
            if vals.size and (int(vals.min()) < lo or int(vals.max()) > hi):
                f.fail(vname, f"values outside [{lo}, {hi}]")
            return dict(zip(keys.tolist(), vals.tolist(), strict=True))

        budget = keyed("budget_keys", "budget_vals", 0, K or 0, K is not None)
        asleep = {k: bool(v) for k, v in keyed("asleep_keys", "asleep_vals", 0, 1, o.por and not bfs).items()}

        nthreads = f.nthreads
        if bfs:
            if doc["stack"] is not None:
                f.fail("stack", "a DFS stack in a BFS checkpoint")
            par, tid, err, pre = sec["tree_parent"], sec["tree_tid"], sec["tree_err"], sec["tree_pre"]
            n = par.size
            if n == 0 or tid.size != n or err.size != n:
                f.fail("tree_parent", f"tree arrays differ in length or are empty ({n}, {tid.size}, {err.size})")
            if pre.size != (n if K is not None else 0):
                f.fail("tree_pre", f"{pre.size} entries for {n} tree nodes")
            if par[0] != -1 or tid[0] != -1 or err[0] != 0:
                f.fail("tree_parent", "the root must be node 0 with no parent and transition (-1, 0)")
            idx = np.arange(1, n, dtype=np.int64)
            if n > 1 and (np.any(par[1:] < 0) or np.any(par[1:] >= idx)):
                f.fail("tree_parent", "every parent must be an earlier node")
            if n > 1 and (np.any(tid[1:] < 0) or (nthreads is not None and np.any(tid[1:] >= nthreads))):
                f.fail("tree_tid", "task index out of range")
            if f.errors is not None and n > 1 and not np.all(np.isin(err[1:], np.array(sorted(f.errors), np.uint64))):
                f.fail("tree_err", "an injected error outside this scenario's fault model")
            if pre.size and (int(pre.min()) < 0 or int(pre.max()) > (K or 0)):
                f.fail("tree_pre", f"preemption counts outside [0, {K}]")
            fr = sec["frontier"]
            if fr.size and (int(fr.min()) < 0 or int(fr.max()) >= n or np.unique(fr).size != fr.size):
                f.fail("frontier", "entries must be distinct tree nodes")
            self.bfs_parent = par.tolist()
            intern = self._intern
            self.bfs_tr = [intern.setdefault(t, t) for t in zip(tid.tolist(), err.tolist(), strict=True)]
            self.bfs_pre = pre.tolist()
            self.bfs_fp = self._restore_graph(f, sec, n)
            out: Any = deque(fr.tolist())
        else:
            for name in ("frontier", "tree_parent", "tree_tid", "tree_err", "tree_pre"):
                if sec[name].size:
                    f.fail(name, "BFS data in a DFS checkpoint")
            out = [self._restore_node(f, nd, k) for k, nd in enumerate(f.array(doc["stack"], "stack"))]
            for k, nd in enumerate(out[:-1]):
                if nd["chosen"] is None:
                    f.fail(f"stack[{k}].chosen", "every node below the top needs the transition taken from it")
            for nd, fp in zip(out, self._restore_graph(f, sec, len(out) if self.graph is not None else 0),
                              strict=False):
                nd["fp"] = fp

        self.visited = visited
        self.budget, self.asleep = budget, asleep
        self.stats, self.bounded, self.found, self.cov = stats, bounded, dict(found), cov
        self.stats.resumed_from = self.stats.states
        self._t0 = self._run_t0 - self.stats.elapsed  # elapsed keeps the total (this run from its start, load
        # included); the time limit counts this run only
        return out

    def _restore_node(self, f: _Fields, nd: Any, k: int) -> dict[str, Any]:
        w = f"stack[{k}]"
        nd = f.obj(nd, w, _NODE_KEYS)
        trs = f.transitions(nd["trs"], f"{w}.trs")
        K = self.o.preemptions
        last = f.integer(nd["last"], f"{w}.last", -1, None if f.nthreads is None else f.nthreads - 1)
        return {"trs": trs, "i": f.integer(nd["i"], f"{w}.i", 0, len(trs)),
                "sleep": frozenset(f.transitions(nd["sleep"], f"{w}.sleep")),
                "pre": f.integer(nd["pre"], f"{w}.pre", 0, K),  # unbounded searches count them too
                "last": last, "chosen": f.opt_transition(nd["chosen"], f"{w}.chosen"),
                "done": f.transitions(nd["done"], f"{w}.done"), "gp": f.opt_transition(nd["gp"], f"{w}.gp"),
                "last_enabled": f.boolean(nd["last_enabled"], f"{w}.last_enabled")}


def refuse_overwrite(opts: CheckOptions) -> None:
    """A new check (no --resume) must not silently replace an existing checkpoint."""
    p = opts.checkpoint
    if p is not None and p.is_dir():
        raise CheckpointError(f"{p}: is a directory, not a checkpoint file")
    if p is not None and not opts.resume and not opts.overwrite_checkpoint and os.path.lexists(p):
        raise CheckpointError(f"{p}: checkpoint exists; --resume to continue it or --overwrite-checkpoint to "
                              f"start over")


def check_header(scn: Scenario, variant: Variant, dpamt: bool) -> dict[str, Any]:
    """What identifies a check's state space besides the search options (the checkpoint header)."""
    return {"scenario": scn.source, "digest": scn.digest, "variant": variant.name, "dpamt": dpamt}


def run_check(scn: Scenario, variant: Variant, dpamt: bool, opts: CheckOptions) -> CheckResult:
    refuse_overwrite(opts)  # before building the world
    if opts.dpor:
        from .dpor import Dpor

        bad = dpor_unsupported(opts)
        if bad:
            raise ValueError(f"--por dpor cannot be combined with {bad[0]}")
        return Dpor(Executor(scn, variant, dpamt), opts, check_header(scn, variant, dpamt)).dfs()
    bad = por_unsupported(opts)
    if bad:
        raise ValueError(f"--por on cannot be combined with {bad[0]}")
    ex = Explorer(Executor(scn, variant, dpamt), opts, check_header(scn, variant, dpamt))
    return ex.bfs() if opts.strategy == "bfs" else ex.dfs()
