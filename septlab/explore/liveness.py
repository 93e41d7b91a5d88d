"""Exhaustive liveness: fair non-progress cycles in the explored state graph, reported as lassos.

While `septlab check` searches, every transition it executes is recorded as an edge of the state graph
(source fingerprint, transition, target fingerprint, which tasks made progress in it -- host/progress.py),
and every state with the tasks that are enabled in it and the tasks that owe progress in it (every
unfinished task; the RCU softirq while a callback waits). After the search, for each task t:

    G_t = the edges between states in which t owes progress, in which t makes none.

A strongly connected component C of G_t with at least one edge is a set of states the system can stay
in forever with t starving. It is a real counterexample only under *weak fairness* -- every task that
stays runnable eventually runs (SPIN's -f, TLA+'s WF): an infinite run that never schedules a
continuously runnable task says nothing about the kernel. C admits a fair run iff every task enabled in
all states of C has an edge inside C (a run that visits all of C infinitely often then schedules every
task that is never disabled, and the others are disabled infinitely often). That is the weak-fairness
case of the Emerson-Lei / Streett SCC check; for weak fairness no recursive decomposition is needed.

The report is a lasso: the shortest prefix from the initial state to C, and a loop in C that returns to
its first state, schedules every task runnable throughout it, and leaves t without progress. The loop is
re-executed (twice) to confirm it returns to the same state -- generator positions, not assumptions.
What t does on the loop names the detector the kernel would fire: it takes steps (a livelock: soft
lockup), it never runs (hung task), or it is the RCU softirq with a callback waiting (RCU stall).

With sleep sets (--por on) a pruned transition can be the one that closes or makes fair a cycle (the
"ignoring problem" of partial-order reduction), so liveness needs --por off; the CLI says so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

Transition = tuple[int, int]

SOFT_LOCKUP = "soft-lockup"
RCU_STALL = "rcu-stall"
HUNG_TASK = "hung-task"
# Which starving task a report leads with: the one looping (the cause) before the ones waiting for it.
_PRIORITY = {SOFT_LOCKUP: 0, RCU_STALL: 1, HUNG_TASK: 2}


@dataclass(slots=True)
class StateGraph:
    """The explored graph as liveness needs it: per state (enabled mask, owes-progress mask, sleeping
    mask: tasks blocked in the kernel rather than spinning or in userspace), per state its out-edges."""

    info: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    out: dict[int, list[tuple[Transition, int, int]]] = field(default_factory=dict)  # src -> [(tr, dst, progressed)]
    root: int | None = None
    edges: int = 0

    def state(self, fp: int, enabled: int, wants: int, sleeping: int) -> None:
        if self.root is None:
            self.root = fp
        self.info[fp] = (enabled, wants, sleeping)

    def edge(self, src: int, tr: Transition, dst: int, progressed: int) -> None:
        lst = self.out.setdefault(src, [])
        if (tr, dst, progressed) not in lst:
            lst.append((tr, dst, progressed))
            self.edges += 1


@dataclass
class Lasso:
    """A fair cycle in which `task` starves: prefix from the initial state, then `loop` forever."""

    kind: str  # soft-lockup, hung-task or rcu-stall
    task: int  # thread index
    prefix: list[Transition]
    loop: list[Transition]
    component: int  # states in the strongly connected component
    steppers: list[int] = field(default_factory=list)  # tasks that take steps on the loop


def _sccs(nodes: Iterable[int], succ: dict[int, list[int]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative (the graph can be deep)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    n = 0
    for v0 in nodes:
        if v0 in index:
            continue
        work = [(v0, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = n
                n += 1
                stack.append(v)
                on.add(v)
            ws = succ.get(v, ())
            recursed = False
            while i < len(ws):
                w = ws[i]
                i += 1
                if w not in index:
                    work.append((v, i))
                    work.append((w, 0))
                    recursed = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if recursed:
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
    return out


def _path(graph: StateGraph, src: int, goal: set[int], allowed: set[int] | None = None,
          starving: int = 0) -> list[tuple[Transition, int]] | None:
    """Shortest path of (transition, next state) from src to any state of `goal`, inside `allowed` states
    if given, over edges on which none of the `starving` tasks (a bit mask) makes progress."""
    if src in goal:
        return []
    prev: dict[int, tuple[int, Transition]] = {src: (src, (-1, 0))}
    q = deque([src])
    while q:
        u = q.popleft()
        for tr, v, prog in graph.out.get(u, ()):
            if v in prev or (allowed is not None and v not in allowed) or prog & starving:
                continue
            prev[v] = (u, tr)
            if v in goal:
                path: list[tuple[Transition, int]] = []
                x = v
                while x != src:
                    p, t = prev[x]
                    path.append((t, x))
                    x = p
                path.reverse()
                return path
            q.append(v)
    return None


def find_lassos(graph: StateGraph, ntasks: int, daemons: int) -> list[Lasso]:
    """Every task's fair starving component, best first (a looping task before those waiting on it)."""
    found: list[Lasso] = []
    for t in range(ntasks):
        bit = 1 << t
        nodes = [s for s, (_, w, _) in graph.info.items() if w & bit]
        node_set = set(nodes)
        succ: dict[int, list[int]] = {}
        for s in nodes:
            succ[s] = [d for _, d, p in graph.out.get(s, ()) if not p & bit and d in node_set]
        for comp in _sccs(nodes, succ):
            cset = set(comp)
            internal = [(s, tr, d) for s in comp for tr, d, p in graph.out.get(s, ())
                        if d in cset and not p & bit]
            if not internal:
                continue
            always = ~0
            for s in comp:
                always &= graph.info[s][0]
            stepping = 0
            for _, tr, _ in internal:
                stepping |= 1 << tr[0]
            if always & ~stepping:
                continue  # some task runnable throughout C never runs inside it: not a fair run
            lasso = _lasso(graph, t, comp, cset, internal, daemons)
            if lasso is not None:
                found.append(lasso)
            break  # one component per task is enough
    found.sort(key=lambda x: (_PRIORITY[x.kind], len(x.prefix) + len(x.loop)))
    return found


def _lasso(graph: StateGraph, t: int, comp: list[int], cset: set[int], internal: list[tuple[int, Transition, int]],
           daemons: int) -> Lasso | None:
    bit = 1 << t
    root = graph.root
    assert root is not None
    head = _path(graph, root, cset)  # the prefix: shortest path from the initial state to the component
    if head is None:
        return None
    prefix = [tr for tr, _ in head]
    entry = head[-1][1] if head else root

    # the loop: one internal edge of every task that has one, detours to a state where each task that
    # would otherwise be runnable all along is disabled, and back to the entry; t never progresses on it
    loop: list[Transition] = []
    visited = [entry]

    def walk_to(goal: set[int]) -> bool:
        seg = _path(graph, visited[-1], goal, cset, bit)
        if seg is None:
            return False
        for tr, v in seg:
            loop.append(tr)
            visited.append(v)
        return True

    by_task: dict[int, tuple[int, Transition, int]] = {}
    for e in internal:
        by_task.setdefault(e[1][0], e)
    for _, (src, tr, dst) in sorted(by_task.items()):
        if not walk_to({src}):
            return None
        loop.append(tr)
        visited.append(dst)
    steppers = {tr[0] for tr in loop}
    always = ~0
    for st in visited:
        always &= graph.info[st][0]
    for u in range(always.bit_length()):
        if always & (1 << u) and u not in steppers:
            target = next((st for st in comp if not graph.info[st][0] & (1 << u)), None)
            if target is None or not walk_to({target}):
                return None
    if not walk_to({entry}):
        return None
    if not loop:
        return None
    steps = sorted({tr[0] for tr in loop})
    if daemons & bit:
        kind = RCU_STALL
    elif t in steps:
        kind = SOFT_LOCKUP
    else:
        sleeping_all = all(graph.info[s][2] & bit for s in visited)
        kind = HUNG_TASK if sleeping_all else SOFT_LOCKUP
    return Lasso(kind, t, prefix, loop, len(comp), steps)
