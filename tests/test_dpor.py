"""`check --por dpor`: footprints recorded by tracing, and the differential that keeps DPOR honest.

Soundness is tested, not argued: on mutants and scenarios, the reduced search must find the same
violated invariants and reach exactly the same set of terminal states as the unreduced one; a DPOR
fed a broken dependency relation must fail that differential (so it can fail); and two steps the
footprints call independent must commute when run in both orders.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from septlab.explore import dpor
from septlab.explore.executor import Executor
from septlab.explore.exhaustive import CheckOptions, run_check
from septlab.explore.footprint import Tracer, dependent
from septlab.intmap import IntMap
from septlab.scenarios import load_scenario
from septlab.variants import get_variant, registry

from .test_liveness import cli

MUTANTS = sorted(n for n, v in registry().items() if v.kind == "mutant")
BOOT = [m for m in MUTANTS if registry()[m].check_scenario == "boot-teardown"]


def _both(scenario: str, variant: str, dpamt: bool) -> tuple[object, object]:
    scn = load_scenario(scenario, small=True)
    v = get_variant(variant)
    on = run_check(scn, v, dpamt, CheckOptions(strategy="dfs", por=False, dpor=True, stop_at_first=False))
    off = run_check(scn, v, dpamt, CheckOptions(strategy="dfs", por=False, stop_at_first=False))
    return on, off


@pytest.mark.parametrize("variant", BOOT)
def test_dpor_finds_what_the_full_search_finds_on_every_boot_mutant(variant):
    on, off = _both("boot-teardown", variant, True)
    assert on.complete and off.complete
    assert set(on.found) == set(off.found) and on.found
    assert on.terminals == off.terminals
    assert on.stats.states <= off.stats.states


@pytest.mark.parametrize("scenario", ["boot-teardown", "leaf-failure", "memslot-delete", "shared-churn",
                                      "vcpu-init-race"])
def test_dpor_reaches_the_same_terminal_states(scenario):
    on, off = _both(scenario, "tdx-free", False)
    assert on.complete and off.complete and on.violation is None
    assert on.terminals == off.terminals and on.terminals
    assert on.stats.transitions <= off.stats.transitions


@pytest.mark.parametrize("scenario", ["memslot-delete", "shared-churn"])
def test_sleep_sets_prune_transitions_not_states(scenario):
    """--por on: sleep sets over traced footprints, with state caching (a state reached again with a
    smaller sleep set is expanded again for the difference): every state and terminal state is reached,
    with fewer transitions and fewer re-executed steps."""
    scn = load_scenario(scenario, small=True)
    v = get_variant("tdx-free")
    on = run_check(scn, v, False, CheckOptions(strategy="dfs", por=True, stop_at_first=False))
    off = run_check(scn, v, False, CheckOptions(strategy="dfs", por=False, stop_at_first=False))
    assert on.complete and off.complete
    assert on.stats.states == off.stats.states and on.terminals == off.terminals
    assert on.stats.transitions < off.stats.transitions * 0.9
    assert on.stats.steps_executed < off.stats.steps_executed * 0.9


def test_sleep_sets_that_ignore_conflicts_lose_states(monkeypatch):
    """The test above can fail: with every pair called independent, memslot-delete loses states."""
    import septlab.explore.exhaustive as exh

    monkeypatch.setattr(exh, "dependent", lambda a, b: False)
    scn = load_scenario("memslot-delete", small=True)
    v = get_variant("tdx-free")
    on = run_check(scn, v, False, CheckOptions(strategy="dfs", por=True, stop_at_first=False))
    off = run_check(scn, v, False, CheckOptions(strategy="dfs", por=False, stop_at_first=False))
    assert on.stats.states < off.stats.states


def test_a_dpor_that_ignores_conflicts_loses_terminal_states(monkeypatch):
    """The differential above can fail: with every pair of steps called independent, memslot-delete
    loses one of its two terminal states."""
    monkeypatch.setattr(dpor, "dependent", lambda a, b: False)
    on, off = _both("memslot-delete", "tdx-free", False)
    assert on.complete and off.complete
    assert on.terminals < off.terminals


def _traced(ex: Executor, tracer: Tracer, tr: tuple[int, int]):
    tracer.start(ex.footprint_roots(), ex.threads[tr[0]].gen, lambda: ex.footprint_enabling(tr[0]))
    try:
        ex.execute(tr)
    finally:
        fp = tracer.stop()
    return fp


@pytest.mark.parametrize("scenario", ["conversion-storm", "seed"])
def test_steps_the_footprints_call_independent_commute(scenario):
    """The footprint's cross-check: at states along random paths, every pair of steps of two tasks whose
    footprints do not conflict leads to the same state in either order, and neither disables the other."""
    scn = load_scenario(scenario, small=True)
    ex = Executor(scn, get_variant("tdx-free"), False)
    ex.record = False
    tracer = Tracer(por=True)  # the explorers' tracer: counter adds, list lengths
    rng = random.Random(7)

    def at(path):
        ex.reset()
        for tr in path:
            ex.execute(tr)

    checked = 0
    for _ in range(3):
        path: list[tuple[int, int]] = []
        at(path)
        while not ex.stopped and (trs := ex.transitions()):
            if len(path) % 5 == 0:
                for a in trs:
                    for b in trs:
                        if a[0] >= b[0] or a[1] or b[1]:
                            continue
                        at(path)
                        fa = _traced(ex, tracer, a)
                        at(path)
                        fb = _traced(ex, tracer, b)
                        if dependent(fa, fb):
                            continue
                        ends = []
                        for x, y in ((a, b), (b, a)):
                            at(path)
                            ex.execute(x)
                            assert y in ex.transitions(), f"{x} disables {y} after {path}"
                            ex.execute(y)
                            ends.append(ex.fingerprint())
                        assert ends[0] == ends[1], f"{a} and {b} do not commute after {path}"
                        checked += 1
                at(path)
            tr = rng.choice(trs)
            path.append(tr)
            ex.execute(tr)
    assert checked > 5


def test_tracing_is_removed_after_each_step():
    """Replays run at full speed: the tracing hooks exist only while a step's footprint is recorded."""
    from septlab.kvm.mmu_page import KvmMmuPage

    scn = load_scenario("boot-teardown", small=True)
    ex = Executor(scn, get_variant("tdx-free"), False)
    tr = ex.transitions()[0]
    _traced(ex, Tracer(), tr)
    assert "__getattribute__" not in vars(KvmMmuPage) and "__setattr__" not in vars(KvmMmuPage)


def test_cli_por_dpor(tmp_path: Path):
    r = cli("check", "-s", "boot-teardown", "-v", "tdx-free", "--por", "dpor", "--liveness", "off", "--exhaustive",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "DPOR" in r.stdout and "complete" in r.stdout
    for extra, word in ((["--exhaustive", "--strategy", "bfs"], "--strategy bfs"),
                        ([], "preemption bound"),
                        (["--exhaustive", "-j", "2"], "--por dpor")):
        r = cli("check", "-s", "boot-teardown", "-v", "tdx-free", "--por", "dpor", "--liveness", "off", *extra,
                cwd=tmp_path)
        assert r.returncode == 2 and word in r.stderr, (extra, r.stderr)
        assert "Traceback" not in r.stderr
    r = cli("check", "-s", "boot-teardown", "-v", "tdx-free", "--por", "dpor", "--exhaustive", cwd=tmp_path)
    assert r.returncode == 2 and "--liveness off" in r.stderr
    r = cli("check", "-s", "boot-teardown", "-v", "tdx-free", "--por", "on", "--liveness", "off", "--checkpoint",
            str(tmp_path / "ck"), cwd=tmp_path)
    assert r.returncode == 2 and "--checkpoint" in r.stderr and "Traceback" not in r.stderr
    r = cli("check", "-s", "boot-teardown", "-v", "tdx-free", "--por", "on", "--liveness", "off", "--exhaustive",
            cwd=tmp_path)
    assert r.returncode == 0 and "pruned by reduction" in r.stdout, r.stderr


def test_element_keys_and_whole_attributes_overlap():
    """d[k] = v is a write of element k only; reading the whole dict (iteration) overlaps every element;
    a wrapper assigned to an attribute stores the container itself."""
    from septlab.explore import footprint
    from septlab.explore.traced import REC
    from septlab.tdx_module.td import Td

    td = Td(tdr=5, hkid=1)

    def record(body):
        rec = footprint.Recorder()
        footprint._install()
        REC[0] = rec
        try:
            body()
        finally:
            REC[0] = None
            footprint._uninstall()
        return rec.result()

    def write_one():
        td.sept_state[3] = 7
        assert td.sept_page.get(4) is None and td.hkid == 1

    a = record(write_one)
    k = ("td", 5)
    assert (k, "sept_state", 3) in a[1] and (k, "sept_state") not in a[1]
    assert (k, "sept_page", 4) in a[0] and (k, "hkid") in a[0]
    b = record(lambda: td.sept_state.get(9))
    assert not dependent(a, b)  # another element
    c = record(lambda: sorted(td.sept_state.items()))
    assert dependent(a, c)  # the whole dict
    d = record(lambda: setattr(td, "sept_page", td.sept_state))
    assert isinstance(td.sept_page, IntMap) and td.sept_page is td.sept_state  # the map, not its wrapper
    assert dependent(a, d)


def test_counter_updates_commute_and_reads_of_the_counter_do_not():
    """With por=True (the explorers' tracer), `lock.readers += 1` by one step and `-= 1` by another
    are independent; a step that reads the count (write_lock's enabling `readers == 0`) or assigns it
    depends on both; without por=True (explain) every update is a read and a write."""
    from septlab.explore import footprint
    from septlab.explore.traced import REC
    from septlab.host.locks import RwLock

    lock = RwLock("mmu_lock")

    def record(body, por=True):
        rec = footprint.Recorder(por)
        footprint._install()
        REC[0] = rec
        try:
            body()
        finally:
            REC[0] = None
            footprint._uninstall()
        return rec.result()

    def inc():
        lock.readers += 1

    def dec():
        lock.readers -= 1

    k = (("lock", "mmu_lock"), "readers")
    a, b = record(inc), record(dec)
    assert k in a[3] and k not in a[0] and k not in a[1]
    assert not dependent(a, b)
    reader = record(lambda: lock.can_write())
    assert k in reader[0] and dependent(a, reader) and dependent(reader, b)
    assert dependent(a, record(lambda: setattr(lock, "readers", 0)))
    # read, then (another access between) written: a plain read and write
    both = record(lambda: (lock.readers, lock.writer, setattr(lock, "readers", 0)))
    assert k in both[0] and k in both[1] and dependent(both, a)
    assert dependent(record(inc, por=False), record(dec, por=False))
    assert lock.readers == 0


def test_a_page_state_check_reads_one_page_and_the_list_length():
    """With por=True, PageAllocator.state(pfn) (every KASAN check) reads page pfn's owner and the pcp
    list's length, not the whole list: setting another page's owner is independent of it, setting the
    same page's or handing out a new page (append: the length moves) is not."""
    from septlab.explore import footprint
    from septlab.explore.traced import REC
    from septlab.host.page_alloc import PCP_SHIFT, PageAllocator, PcpList

    pa = PageAllocator()
    lst = pa.lists[0] = PcpList(1 << PCP_SHIFT)
    lst.owner.extend([1, 1, 1])

    def record(body, por=True):
        rec = footprint.Recorder(por)
        footprint._install()
        REC[0] = rec
        try:
            body()
        finally:
            REC[0] = None
            footprint._uninstall()
        return rec.result()

    base = lst.base
    check = record(lambda: pa.state(base + 1))
    assert not dependent(check, record(lambda: pa._set(base + 2, 3)))
    assert dependent(check, record(lambda: pa._set(base + 1, 3)))
    assert dependent(check, record(lambda: pa.lists[0].owner.append(2)))
    assert dependent(record(lambda: pa.state(base + 1), por=False), record(lambda: pa._set(base + 2, 1)))


def test_every_write_of_a_counter_is_an_add():
    """The soundness condition of COUNTERS (explore/footprint.py), checked on the source: every
    assignment to a counter attribute is `x.attr += k` or `-= k` with k a constant or a plain name (so
    the read it makes feeds only the write, with no traced access between), except the initial values
    build_world() sets before any step runs; no setattr() names one (nor, in model code, computes its
    name)."""
    import ast

    from septlab.explore.footprint import COUNTERS

    names = {n for _, n in COUNTERS}
    allowed_plain = {("scenarios/world.py", "build_world")}
    # setattr() with a computed name on objects that are not world state (statistics, the ops table)
    tool_code = {"explore/exhaustive.py", "explore/parallel.py", "variants/__init__.py"}
    root = Path(__file__).resolve().parents[1] / "septlab"
    bad: list[str] = []
    adds = 0

    class Audit(ast.NodeVisitor):
        def __init__(self, rel: str):
            self.rel, self.fn = rel, ""

        def visit_FunctionDef(self, node: ast.AST) -> None:
            outer, self.fn = self.fn, node.name  # type: ignore[attr-defined]
            self.generic_visit(node)
            self.fn = outer

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_AugAssign(self, node: ast.AugAssign) -> None:
            nonlocal adds
            if isinstance(node.target, ast.Attribute) and node.target.attr in names:
                if isinstance(node.op, (ast.Add, ast.Sub)) and isinstance(node.value, (ast.Constant, ast.Name)):
                    adds += 1
                else:
                    bad.append(f"{self.rel}:{node.lineno}")
            self.generic_visit(node)

        def visit_Attribute(self, node: ast.Attribute) -> None:  # a plain store (=, :=, for, with, del)
            if node.attr in names and isinstance(node.ctx, (ast.Store, ast.Del)) and \
                    (self.rel, self.fn) not in allowed_plain:
                bad.append(f"{self.rel}:{node.lineno}")
            self.generic_visit(node)

        def visit_Call(self, node: ast.Call) -> None:
            if isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr") and len(node.args) > 1:
                name = node.args[1]
                if isinstance(name, ast.Constant) and name.value in names or \
                        not isinstance(name, ast.Constant) and self.rel not in tool_code:
                    bad.append(f"{self.rel}:{node.lineno}")
            self.generic_visit(node)

    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        a = Audit(rel)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):  # an AugAssign's target is visited by visit_Attribute: skip those
            if isinstance(node, ast.AugAssign):
                node.target.ctx = ast.Load()
        a.visit(tree)
    assert not sorted(set(bad)), f"writes of a COUNTERS attribute that are not adds: {sorted(set(bad))}"
    assert adds >= 10
