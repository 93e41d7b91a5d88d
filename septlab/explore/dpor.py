"""Dynamic partial-order reduction for `septlab check --por on`: stateful DPOR over recorded footprints.

Flanagan and Godefroid's DPOR (POPL 2005) explores, at each state, one task first; whenever a step it
then runs races with an earlier step of another task on the path (their footprints conflict and nothing
in between orders them), the task is added to the earlier state's backtrack set, so the reversed order
is explored too. Which steps conflict comes from footprints recorded while each step runs
(explore/footprint.py): every attribute of a state object it read or wrote.

Combined with state caching (a state reached again is not re-expanded) DPOR alone is unsound: races
between the current path and steps below the cached state would never be seen. As in Yang et al.'s
stateful DPOR (SPIN 2008), each fully explored state keeps a summary -- the set of distinct steps
(task, footprint) explored below it -- and reaching the state again races each of them against the path
as if it ran next. A state reached again while it is still on the path (a cycle) fully expands every
state of the cycle, the classic cycle proviso; a state whose subtree reached a state that was still on
the path inherits that state's summary once it is known.

Happens-before is tracked with vector clocks over the path's steps (one entry per task). Each step's
footprint includes the condition that enabled it (lock state, wait predicate, the fault budget for a
SEAMCALL that may fail), so enabling and disabling are dependencies like any other.
"""

from __future__ import annotations

from typing import Any

from .executor import Transition
from .exhaustive import CheckResult, Explorer
from .footprint import Footprint, dependent


class _Node:
    __slots__ = ("by_task", "enabled", "backtrack", "done", "queue", "ev", "summary", "fp", "low", "index",
                 "ev_tr")

    def __init__(self, trs: list[Transition], fp: int, index: int, last: int):
        by: dict[int, list[Transition]] = {}
        for tr in trs:
            by.setdefault(tr[0], []).append(tr)
        self.by_task = by
        self.enabled = frozenset(by)
        self.backtrack: set[int] = {last if last in by else min(by)}
        self.done: set[int] = set()
        self.queue: list[Transition] = []
        self.ev: tuple[int, int, tuple[int, ...]] = (-1, -1, ())  # (task, event id, clock) of the step out
        self.ev_tr: Transition = (-1, 0)
        self.summary: set[int] = set()  # ids of the events explored below this state
        self.fp = fp
        self.low = index  # lowest stack index of a state still on the path reached from below (cycles)
        self.index = index


class Dpor(Explorer):
    """DFS with DPOR and state caching (see the module docstring). Needs an executor with `threads`,
    `world` and `checker` (footprints are traced on its world)."""

    def __init__(self, ex: Any, opts: Any, header: dict[str, Any]):
        super().__init__(ex, opts, header)
        # events: a step's (task, footprint), numbered once; summaries are sets of these numbers
        self._event_ids: dict[tuple[int, Footprint], int] = {}
        self._events: list[tuple[int, Footprint]] = []
        self._dep: dict[tuple[int, int], bool] = {}
        self.summaries: dict[int, frozenset[int]] = {}
        self.pending: dict[int, int] = {}  # state -> state still on the path when it was popped (cycles)
        self._frozen: dict[frozenset, frozenset] = {}
        self._on_path: dict[int, int] = {}
        self.por_stats = {"races": 0, "summary_races": 0, "cycles": 0}

    # --- footprints ----------------------------------------------------------------------------------
    def _traced(self, tr: Transition) -> int:
        """Run the step, recording its footprint; its event id."""
        fpr = self._footprint_step(tr)
        key = (tr[0], tuple(self._uniq(x) for x in fpr))
        eid = self._event_ids.get(key)
        if eid is None:
            eid = self._event_ids[key] = len(self._events)
            self._events.append(key)
        return eid

    def _uniq(self, s: frozenset) -> frozenset:
        return self._frozen.setdefault(s, s)

    def _dependent(self, a: int, b: int) -> bool:
        k = (a, b) if a < b else (b, a)
        d = self._dep.get(k)
        if d is None:
            d = self._dep[k] = dependent(self._events[a][1], self._events[b][1])
        return d

    # --- races ---------------------------------------------------------------------------------------
    @staticmethod
    def _join(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(x if x >= y else y for x, y in zip(a, b, strict=True))

    def _clock_and_race(self, stack: list[_Node], k: int, tid: int, eid: int) -> tuple[tuple[int, ...], int]:
        """The vector clock of event `eid` of task `tid` run after the path's first k steps, and the index
        of its latest race with them (-1: none): a conflicting step of another task that does not
        happen-before it through any later step."""
        clock = (-1,) * len(self.ex.threads)
        for j in range(k - 1, -1, -1):  # the task's previous step
            ev = stack[j].ev
            if ev[0] == tid:
                clock = ev[2]
                break
        race = -1
        dep = self._dependent
        for i in range(k - 1, -1, -1):
            task_i, eid_i, clock_i = stack[i].ev
            if task_i == tid or not dep(eid_i, eid):
                continue
            if race < 0 and clock[task_i] < i:
                race = i
            clock = self._join(clock, clock_i)
        clock = clock[:tid] + (k,) + clock[tid + 1:]
        return clock, race

    def _backtrack(self, stack: list[_Node], i: int, k: int, tid: int, clock: tuple[int, ...]) -> None:
        """Race at stack[i] with a step after the path's first k: schedule tid there, or a task whose
        step between leads to it (the E-set), or, if there is none, every task runnable there."""
        node = stack[i]
        if tid in node.enabled:
            node.backtrack.add(tid)
            return
        cand = {stack[j].ev[0] for j in range(i + 1, k) if clock[stack[j].ev[0]] >= j} & node.enabled
        if cand & node.backtrack:
            return
        if cand:
            node.backtrack.add(min(cand))
        else:
            node.backtrack |= node.enabled

    def _summary_races(self, stack: list[_Node], summ: frozenset[int]) -> None:
        """A cached state was reached: every event explored below it is raced against the path as if it
        ran next (Yang et al.): its latest race gets a backtrack point."""
        k = len(stack)
        for eid in summ:
            q = self._events[eid][0]
            clock, race = self._clock_and_race(stack, k, q, eid)
            if race >= 0:
                self.por_stats["summary_races"] += 1
                self._backtrack(stack, race, k, q, clock)

    def _summary_of(self, fp: int) -> frozenset[int] | None:
        """The summary of an explored state, completed with the summaries of states its subtree reached
        while they were on the path; None if one of those is on the path still."""
        summ = self.summaries.get(fp, frozenset())
        pend = self.pending.get(fp)
        while pend is not None:
            if pend in self._on_path:
                return None
            del self.pending[fp]
            summ = self._uniq(summ | self.summaries.get(pend, frozenset()))
            self.summaries[fp] = summ
            pend = self.pending.get(pend)
            if pend is not None:
                self.pending[fp] = pend
        return summ

    def _cycle(self, stack: list[_Node], m: int) -> None:
        """The path came back to stack[m]: every state of the cycle is fully expanded (cycle proviso)."""
        self.por_stats["cycles"] += 1
        for j in range(m, len(stack)):
            stack[j].backtrack |= stack[j].enabled
            stack[j].low = min(stack[j].low, m)

    # --- search --------------------------------------------------------------------------------------
    def dfs(self) -> CheckResult:
        self._start()
        ex = self.ex
        ex.reset()
        key0 = self._key()
        self._admit(key0, 0, frozenset())
        fp0 = self._fp(key0)
        stack = [_Node(ex.transitions(), fp0, 0, -1)]
        self._on_path = {fp0: 0}
        at = 0
        viol: Any = None
        vpath: list[Transition] = []
        progressed = False
        try:
            while stack:
                if self._should_end(progressed):
                    break
                progressed = True
                self._undo_keys.clear()
                self._undo.clear()
                self.cov.journal.clear()
                node = stack[-1]
                if not node.queue:
                    todo = node.backtrack - node.done
                    if not todo:
                        self._pop(stack)
                        continue
                    tid = min(todo)
                    node.done.add(tid)
                    node.queue = list(reversed(node.by_task[tid]))
                tr = node.queue.pop()
                if at != len(stack) - 1:
                    self._replay([n.ev_tr for n in stack[:-1]])
                at = -1
                eid = self._traced(tr)
                tid = tr[0]
                k = len(stack) - 1
                clock, race = self._clock_and_race(stack, k, tid, eid)
                if race >= 0:
                    self.por_stats["races"] += 1
                    self._backtrack(stack, race, k, tid, clock)
                node.ev = (tid, eid, clock)
                node.ev_tr = tr
                node.summary.add(eid)
                what, trs = self._after_step(len(stack))
                if what == "stop":
                    viol, vpath = trs, [n.ev_tr for n in stack]
                    break
                if what == "end":
                    continue
                key = self._key()
                fp = self._fp(key)
                if not self._admit(key, 0, frozenset()):
                    self.stats.revisits += 1
                    m = self._on_path.get(fp)
                    if m is not None:
                        self._cycle(stack, m)
                        continue
                    summ = self._summary_of(fp)
                    if summ is None:  # its subtree reaches a state on the path: that state's cycle
                        self._cycle(stack, self._on_path[self.pending[fp]])
                        continue
                    self._summary_races(stack, summ)
                    node.summary |= summ
                    continue
                stack.append(_Node(trs, fp, len(stack), tid))
                self._on_path[fp] = len(stack) - 1
                at = len(stack) - 1
                self._tick(None, len(stack))
        except KeyboardInterrupt:
            self._interrupt()
        if viol is not None:
            res = self._result(False, viol, vpath)
        else:
            self._progress(0)
            res = self._result(not self.bounded and not self.interrupted)
        res.por = dict(self.por_stats)
        return res

    def _pop(self, stack: list[_Node]) -> None:
        node = stack.pop()
        self.stats.sleep_pruned += sum(len(node.by_task[t]) for t in node.enabled - node.done)
        del self._on_path[node.fp]
        summ = self._uniq(frozenset(node.summary))
        self.summaries[node.fp] = summ
        if stack:
            parent = stack[-1]
            parent.summary |= summ
            if node.low < node.index:
                parent.low = min(parent.low, node.low)
                self.pending[node.fp] = stack[node.low].fp

    def _save_checkpoint(self, frontier: Any) -> None:  # checkpoints of a DPOR search are not supported
        return
