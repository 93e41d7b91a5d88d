"""`septlab check` checkpoints are data, not code, and a resume is exact.

A checkpoint is trusted input only as far as its format allows: a pickle (or anything else) must be
refused without being run, damage must be caught by the digest, a checkpoint of another check by its
header, and every decoded field is range-checked. Resuming - after a time limit, a caller's stop request
or a KeyboardInterrupt at any point of a step - must land on exactly the state space of an uninterrupted
search. Also here: BFS honours the preemption bound (it used to ignore it). Small configurations only
(boot-teardown: 580 states, under a second per search)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import septlab.explore.exhaustive as X
from septlab.explore.executor import Executor
from septlab.explore.exhaustive import (
    MAGIC,
    CheckOptions,
    CheckpointError,
    Explorer,
    _Fields,
    check_header,
    read_checkpoint,
    run_check,
    write_checkpoint,
)
from septlab.explore.fpset import FingerprintSet
from septlab.scenarios import load_scenario
from septlab.variants import get_variant, registry

SCN = "boot-teardown"
STATES = 580  # its distinct states (tdx-free, DPAMT off), pinned in test_check.py


def check(variant: str = "tdx-free", scenario: str = SCN, dpamt: bool = False, **kw: Any) -> X.CheckResult:
    return run_check(load_scenario(scenario, small=True), get_variant(variant), dpamt, CheckOptions(**kw))


@functools.cache
def reference(**kw: Any) -> X.CheckResult:
    """An uninterrupted search without a checkpoint, computed once per configuration (read-only)."""
    return check(**kw)


def same_search(a: X.CheckResult, b: X.CheckResult) -> None:
    """Everything a resume must reproduce (steps executed differ: a resume replays its stack)."""
    for k in ("states", "transitions", "revisits", "terminal", "max_depth", "sleep_pruned", "preemption_pruned",
              "depth_pruned"):
        assert getattr(a.stats, k) == getattr(b.stats, k), k
    assert a.complete == b.complete and a.bounded_by == b.bounded_by and a.coverage == b.coverage


def partial(ck: Path, **kw: Any) -> X.CheckResult:
    """A search stopped early (time limit) that left a checkpoint with a non-trivial stack or frontier."""
    r = check(checkpoint=ck, time_limit=0.05, **kw)
    assert "time limit" in r.bounded_by and ck.exists()
    return r


# --- the file is data: never executed, damage and foreign checks refused ------------------------------------
class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))  # unpickling this creates the marker file


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(marker), protocol=pickle.HIGHEST_PROTOCOL)
    assert not marker.exists()
    for name, data in [("plain.bin", payload), ("magic.bin", MAGIC + payload), ("line.bin", MAGIC + payload + b"\n")]:
        ck = tmp_path / name
        ck.write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            check(checkpoint=ck, resume=True)
        assert str(ck) in str(e.value) and "\n" not in str(e.value)
        assert not marker.exists(), f"{name}: loading ran code from the file"
    with pytest.raises(CheckpointError, match="pickle"):
        check(checkpoint=tmp_path / "plain.bin", resume=True)


def test_layout_is_magic_envelope_sections_digest(tmp_path):
    ck = tmp_path / "ck"
    partial(ck, strategy="dfs")
    data = ck.read_bytes()
    assert data.startswith(MAGIC)
    env_line = data[len(MAGIC):data.index(b"\n", len(MAGIC)) + 1]
    env = json.loads(env_line)
    assert env["header"]["variant"] == "tdx-free" and env["header"]["format"] == 3
    body = sum(s["bytes"] for s in env["sections"])
    assert len(data) == len(MAGIC) + len(env_line) + body + 32
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()
    visited = next(s for s in env["sections"] if s["name"] == "visited")
    assert visited["compression"] == "none" and visited["raw_bytes"] % 8 == 0


def test_truncated_or_bit_flipped_checkpoint_is_refused_naming_the_digest(tmp_path):
    ck = tmp_path / "ck"
    partial(ck, strategy="dfs")
    good = ck.read_bytes()
    head = good.index(b"\n", len(MAGIC)) + 1  # end of the envelope line
    rng = random.Random(7)
    damaged = [good[:-1], good[:-32], good[:head + 5], good + b"\0"]
    for _ in range(6):
        pos = rng.randrange(head, len(good))
        b = bytearray(good)
        b[pos] ^= 1 << rng.randrange(8)
        damaged.append(bytes(b))
    for data in damaged:
        ck.write_bytes(data)
        with pytest.raises(CheckpointError, match="digest") as e:
            check(checkpoint=ck, resume=True)
        assert str(e.value).startswith(f"{ck}: ")
    for cut in (0, 5, len(MAGIC), head - 3):  # cut inside the magic or the envelope: refused too
        ck.write_bytes(good[:cut])
        with pytest.raises(CheckpointError):
            check(checkpoint=ck, resume=True)


@pytest.mark.parametrize("other,field", [
    ({"variant": "tdx-alloc-hook"}, "header.variant"), ({"strategy": "bfs"}, "header.strategy"),
    ({"preemptions": 1}, "header.preemptions"), ({"full_states": True}, "header.full_states"),
    ({"liveness": True}, "header.liveness"), ({"dpamt": True}, "header.dpamt"), ({"scenario": "seed"}, "header.scenario"),
    ({"steps_per_second": "3"}, "header.digest"),  # the same scenario, edited
])
def test_checkpoint_of_another_check_is_refused(tmp_path, other, field):
    ck = tmp_path / "ck"
    partial(ck, strategy="dfs")
    with pytest.raises(CheckpointError, match=f"{field}: checkpoint is for a different check"):
        if "steps_per_second" in other:
            run_check(load_scenario(SCN, other, small=True), get_variant("tdx-free"), False,
                      CheckOptions(strategy="dfs", checkpoint=ck, resume=True))
        else:
            check(**{"strategy": "dfs", **other}, checkpoint=ck, resume=True)


def test_garbage_and_oversized_files_fail_cleanly(tmp_path):
    ck = tmp_path / "ck"
    cases = {
        b"": "magic", os.urandom(1 << 22): "magic", b"SEPTLAB-CHECKPOINT 1\n{}\n": "format 1",
        MAGIC + b"x" * (2 << 20): "envelope", MAGIC + b"[1, 2]\n": "envelope",
        MAGIC + b'{"header": {}, "sections": []}\n': "header",
    }
    for data, what in cases.items():
        ck.write_bytes(data)
        with pytest.raises(CheckpointError, match=what):
            check(checkpoint=ck, resume=True)
    # sizes are checked against the file before anything is read or inflated
    ck.unlink()
    partial(ck, strategy="dfs")
    good = ck.read_bytes()
    head = good.index(b"\n", len(MAGIC)) + 1
    env = json.loads(good[len(MAGIC):head])
    for k, change in [("bytes", 1 << 45), ("raw_bytes", 1 << 45), ("bytes", -1), ("raw_bytes", "1")]:
        e2 = json.loads(json.dumps(env))
        e2["sections"][0][k] = change
        ck.write_bytes(MAGIC + json.dumps(e2).encode() + b"\n" + good[head:])
        with pytest.raises(CheckpointError, match=r"envelope\.sections\[0\]|digest"):
            check(checkpoint=ck, resume=True)
    with pytest.raises(CheckpointError, match="directory"):
        check(checkpoint=tmp_path, resume=True)


def _rewrite(ck: Path, edit) -> None:
    """Re-encode a checkpoint after `edit(sections)`: the digest is valid, so only field checks can catch it."""
    xp = Explorer(Executor(load_scenario(SCN, small=True), get_variant("tdx-free"), False),
                  CheckOptions(strategy="dfs", checkpoint=ck), check_header(load_scenario(SCN, small=True),
                                                                            get_variant("tdx-free"), False))
    header = xp._header()
    sec = read_checkpoint(ck, header, _Fields(ck, None, None))
    edit(sec)
    write_checkpoint(ck, header, sec)


@pytest.mark.parametrize("edit,field", [
    (lambda s: s["doc"]["stats"].__setitem__("states", "x"), "stats.states"),
    (lambda s: s["doc"]["stats"].__setitem__("elapsed", -1.0), "stats.elapsed"),
    (lambda s: s["doc"]["stats"].pop("revisits"), "stats: fields differ"),
    (lambda s: s["doc"]["stack"][0]["trs"].__setitem__(0, [99, 0]), r"stack\[0\]\.trs\[0\]\.task"),
    (lambda s: s["doc"]["stack"][0]["trs"].__setitem__(0, [0, 12345]), r"stack\[0\]\.trs\[0\]\.error"),
    (lambda s: s["doc"]["stack"][0].__setitem__("i", 10**6), r"stack\[0\]\.i"),
    (lambda s: s["doc"]["stack"][0].__setitem__("sleep", {"a": 1}), r"stack\[0\]\.sleep"),
    (lambda s: s["doc"]["stack"][0].__setitem__("chosen", None), r"stack\[0\]\.chosen"),
    (lambda s: s["doc"]["bounded"].append("time limit"), "bounded"),
    (lambda s: s["doc"]["coverage"]["steps"].__setitem__("x", 0), "coverage.steps"),
    (lambda s: s.__setitem__("visited", s["visited"][:-1]), "visited: .* states stored"),
    (lambda s: s.__setitem__("visited", np.concatenate([s["visited"][:-1], s["visited"][:1]])), "visited: .*distinct"),
    (lambda s: s.__setitem__("visited_states", {"nodes": [[1]], "states": [0]}), "visited_states"),
    (lambda s: s.__setitem__("tree_parent", np.array([-1], np.int64)), "tree_parent"),
])
def test_a_well_formed_checkpoint_with_a_bad_field_is_refused_naming_it(tmp_path, edit, field):
    ck = tmp_path / "ck"
    partial(ck, strategy="dfs")
    _rewrite(ck, edit)
    with pytest.raises(CheckpointError, match=f"{ck}: {field}"):
        check(strategy="dfs", checkpoint=ck, resume=True)


def test_full_state_section_is_checked(tmp_path):
    ck = tmp_path / "ck"
    partial(ck, strategy="dfs", full_states=True)
    good = ck.read_bytes()
    xp_header = {"format": 3, **check_header(load_scenario(SCN, small=True), get_variant("tdx-free"), False),
                 "strategy": "dfs", "por": False, "max_depth": None, "preemptions": None, "full_states": True,
                 "liveness": False}
    cases = [
        ({"nodes": [[1, [0]]], "states": [0]}, r"nodes\[0\]: bad reference"),  # a cycle
        ({"nodes": [[1.5]], "states": [0]}, "only integers"),
        ({"nodes": [[1]] + [[[k]] for k in range(100)], "states": [100]}, "nested too deeply"),
        ({"nodes": [[1]], "states": [3]}, r"states\[0\]"),
    ]
    for vs, what in cases:
        ck.write_bytes(good)
        sec = read_checkpoint(ck, xp_header, _Fields(ck, None, None))
        sec["visited_states"] = vs
        write_checkpoint(ck, xp_header, sec)
        with pytest.raises(CheckpointError, match=what):
            check(strategy="dfs", full_states=True, checkpoint=ck, resume=True)


# --- resuming is exact -----------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy,full,pre", [("dfs", False, None), ("bfs", False, None), ("dfs", True, None),
                                               ("bfs", True, 0), ("dfs", False, 1), ("bfs", False, 1)])
def test_time_limited_resumes_advance_and_finish_like_one_run(tmp_path, strategy, full, pre):
    """`--time-limit T --resume` in a loop: the limit counts this invocation's time (it used to count the
    total, so after the first chunk nothing advanced), elapsed keeps the total, and the end is the same
    state space as one uninterrupted search."""
    # DFS of the small space takes too few chunks to show repeated resumes (light re-execution made it
    # faster): a larger space
    scn = "shared-churn" if strategy == "dfs" else SCN
    kw = {"scenario": scn, "strategy": strategy, "full_states": full, "preemptions": pre}
    ref = reference(**kw)
    ck = tmp_path / "ck"
    # about six chunks of the uninterrupted search's time, measured now: on a loaded machine a fixed
    # limit can be shorter than resuming itself, and then no chunk advances
    limit = max(0.15 if full or (strategy, pre) == ("bfs", None) else 0.05, ref.stats.elapsed / 6)
    runs = [check(**kw, checkpoint=ck, time_limit=limit)]
    while "time limit" in runs[-1].bounded_by:
        runs.append(check(**kw, checkpoint=ck, time_limit=limit, resume=True))
        assert len(runs) < 200
        assert runs[-1].stats.resumed_from == runs[-2].stats.states
    assert len(runs) >= 3, "the search should have needed several chunks"
    states = [r.stats.states for r in runs]
    # chunks advance (a chunk on a loaded machine may spend its whole limit resuming, so not every one;
    # with the limit counting the total time, none after the first would)
    steps = list(zip(states[:-2], states[1:-1], strict=True))
    # (three chunks -- a fast box -- leave one pair to judge: it must advance)
    assert all(a <= b for a, b in steps) and sum(a < b for a, b in steps) >= max(min(2, len(steps)),
                                                                                len(steps) // 3), states
    same_search(runs[-1], ref)
    assert runs[-1].stats.elapsed >= limit * (len(runs) - 1)  # the total across chunks is kept


def test_keyboard_interrupt_and_should_stop_results(tmp_path):
    polls = iter(range(10**9))
    r = check(strategy="dfs", checkpoint=tmp_path / "a", should_stop=lambda: next(polls) >= 300)
    assert r.interrupted and "interrupted" in r.bounded_by and not r.complete and (tmp_path / "a").exists()
    same_search(check(strategy="dfs", checkpoint=tmp_path / "a", resume=True), reference(strategy="dfs"))
    r = check(strategy="bfs", should_stop=lambda: True)  # no checkpoint configured: just the partial result
    assert r.interrupted and r.bounded_by == ["interrupted"] and r.stats.states == 1


class _InterruptingExecutor(Executor):
    """Raises KeyboardInterrupt after its at-th model step, as Ctrl-C would in the middle of a search step."""

    def __init__(self, *a: Any, at: int, **kw: Any):
        self.at = at
        self.calls = 0
        super().__init__(*a, **kw)

    def execute(self, tr):
        info = super().execute(tr)
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return info


def _raise_on_call(obj: Any, name: str, at: int) -> None:
    """Make obj.name raise KeyboardInterrupt just after its at-th call took effect."""
    orig = getattr(obj, name)
    n = [0]

    def wrapped(*a: Any, **kw: Any) -> Any:
        out = orig(*a, **kw)
        n[0] += 1
        if n[0] == at:
            raise KeyboardInterrupt
        return out

    setattr(obj, name, wrapped)


@pytest.mark.parametrize("strategy,pre,where,at", [
    ("dfs", None, "execute", 7), ("dfs", None, "execute", 2003), ("dfs", None, "visited.add", 300),
    ("dfs", None, "coverage", 450), ("dfs", 1, "visited.add", 200), ("bfs", 0, "execute", 9001),
    ("bfs", 0, "visited.add", 150), ("bfs", 1, "coverage", 333), ("dfs", 2, "re-admission", 0),
    ("bfs", 1, "re-admission", 0),
])
def test_keyboard_interrupt_leaves_a_resumable_checkpoint(tmp_path, strategy, pre, where, at):
    """Ctrl-C at any point of a step: the step is rolled back (new states leave the visited set again, budgets
    and sleep marks get their old values), the checkpoint is written, the partial result says interrupted,
    and the resume is exact."""
    # BFS re-queues a state with a larger budget only where paths of different preemption counts meet
    name = "conversion-storm" if where == "re-admission" else SCN
    ref = reference(scenario=name, strategy=strategy, preemptions=pre)
    ck = tmp_path / "ck"
    scn, var = load_scenario(name, small=True), get_variant("tdx-free")
    # full re-execution, so that `at` counts every executed step as it did before replays became light
    opts = CheckOptions(strategy=strategy, preemptions=pre, checkpoint=ck, light_replay=where != "execute")
    ex = _InterruptingExecutor(scn, var, False, at=at if where == "execute" else -1)
    xp = Explorer(ex, opts, check_header(scn, var, False))
    if where == "visited.add":
        _raise_on_call(xp.visited, "add", at)
    elif where == "coverage":
        _raise_on_call(xp.cov, "note_step", at)
    elif where == "re-admission":  # just after a state seen before got a larger budget (or lost a sleep mark)
        meth = "_bfs_admit" if strategy == "bfs" else "_admit"
        orig = getattr(xp, meth)

        def admit(*a: Any) -> bool:
            out = orig(*a)
            if any(old is not None for _, _, old in xp._undo):
                raise KeyboardInterrupt
            return out

        setattr(xp, meth, admit)
    r = xp.bfs() if strategy == "bfs" else xp.dfs()
    assert r.interrupted and "interrupted" in r.bounded_by and not r.complete and r.violation is None
    assert 0 < r.stats.states < ref.stats.states and len(xp.visited) == r.stats.states
    resumed = check(scenario=name, strategy=strategy, preemptions=pre, checkpoint=ck, resume=True)
    assert resumed.stats.resumed_from == r.stats.states and not resumed.interrupted
    same_search(resumed, ref)


# --- files: permissions, no silent overwrite -----------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_checkpoint_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        check(strategy="dfs", preemptions=0, checkpoint=tmp_path / "ck")
    finally:
        os.umask(old)
    assert (tmp_path / "ck").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no temporary file left behind


def test_new_check_refuses_to_overwrite_a_checkpoint(tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    ck.write_text("mine")

    def no_work(*a: Any, **kw: Any) -> None:
        raise AssertionError("the world was built before the refusal")

    with monkeypatch.context() as m:
        m.setattr(X, "Executor", no_work)
        with pytest.raises(CheckpointError) as e:
            check(strategy="dfs", checkpoint=ck)
    assert str(e.value) == f"{ck}: checkpoint exists; --resume to continue it or --overwrite-checkpoint to start over"
    assert ck.read_text() == "mine"
    r = check(strategy="dfs", preemptions=0, checkpoint=ck, overwrite_checkpoint=True)
    again = check(strategy="dfs", preemptions=0, checkpoint=ck, resume=True)  # a real checkpoint now
    assert again.stats.states == r.stats.states and again.stats.resumed_from == r.stats.states


# --- BFS honours the preemption bound ------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 1])
def test_bfs_honours_the_preemption_bound(k):
    """It used to ignore it: the default `septlab check` (BFS, bound 2) said "preemptions 2" and explored
    everything, so neither its verdict nor its counterexamples meant what the header said."""
    scn = "shared-churn"  # two tasks racing throughout (boot-teardown's vCPU finishes before teardown starts)
    full = check(scenario=scn, strategy="bfs").stats.states  # preemptions=None: unbounded
    r = check(scenario=scn, strategy="bfs", preemptions=k)
    assert not r.complete and r.bounded_by == [f"preemptions {k}"] and r.stats.preemption_pruned > 0
    assert r.stats.states < full
    # without POR (which only DFS applies) both strategies explore the same bounded space
    assert check(scenario=scn, strategy="dfs", preemptions=k, por=False).stats.states == r.stats.states


@pytest.mark.parametrize("mutant,k", [("bug-no-invalidate-retry", 0), ("bug-no-invalidate-retry", 1),
                                      ("bug-frozen-on-hook-failure", 0), ("bug-sept-zap-gate-stuck", 0)])
def test_bfs_and_dfs_agree_on_mutants_under_the_same_bound(mutant, k):
    v = registry()[mutant]
    b = check(mutant, v.check_scenario, True, strategy="bfs", preemptions=k)
    d = check(mutant, v.check_scenario, True, strategy="dfs", preemptions=k)
    assert (b.violation is None) == (d.violation is None)
    if b.violation is not None:
        assert len(b.path) <= len(d.path)
    else:
        assert b.bounded_by == d.bounded_by == [f"preemptions {k}"]


# --- the fingerprint set operations the rollback and the loader rely on ------------------------------------
def test_fingerprint_set_discard_and_bulk_load_keep_lookups_exact():
    rng = random.Random(3)
    for _ in range(40):
        s, ref = FingerprintSet(16), set()
        for _ in range(300):  # a tiny table: long clusters, wrap-around, growth
            fp = rng.choice([rng.randrange(1, 64), rng.randrange(1 << 64), 16 * rng.randrange(8) + 15])
            if rng.random() < 0.6:
                assert s.add(fp) == (fp not in ref)
                ref.add(fp)
            else:
                assert s.discard(fp) == (fp in ref)
                ref.discard(fp)
        probes = list(ref) + list(range(1, 80))
        assert len(s) == len(ref) and all((p in s) == (p in ref) for p in probes)
        b = FingerprintSet.from_array(np.array(sorted(ref), dtype=np.uint64))
        assert len(b) == len(ref) and all((p in b) == (p in ref) for p in probes)
        assert sorted(b.to_list()) == sorted(ref)
