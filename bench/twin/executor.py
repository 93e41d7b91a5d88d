"""The executor adapter that lets septlab's generic Explorer search the twin (bench/twin/twin_model.py).

Same contract as septlab/explore/executor.py: reset(), transitions() -> [(thread, injected error or 0)]
in thread order, execute(tr), state(), finish(), stopped, violations, steps_executed, step, choices.
Task positions come from septlab's own canonicaliser (explore/state.gen_position: code, f_lasti and the
non-"_" locals of each generator frame), so the twin is explored exactly as septlab explores its model.

How each Promela variable (bench/promela/sept_twin.pml) maps to the Python state tuple:

  state()[0]  tasks, in Promela _pid order: vcpu 0..V-1, walker 0..W-1, teardown, rcu.
              Each is (done, gen_position(gen)) with gen_position = (code, f_lasti, locals):
                vcpu[v]:   Promela local pc <-> (code, f_lasti) of vcpu_task's yield (ALLOC, FREEZE,
                           SEPT.ADD, PUBLISH; pc 4 <-> done, position ()); local p <-> local p;
                           local s <-> local s (constant), v <-> _pid (constant)
                walker[w]: pc 0/1/2 <-> READ / ACCESS yield / done; p <-> p; w, s <-> w, s (constants)
                teardown:  pc T_WAIT, T_ZAP, T_FREE_EARLY, T_RECLAIM, T_FREE, T_CALL_RCU, T_RELEASE,
                           T_BARRIER <-> the yield sites of teardown_task; T_DONE <-> done;
                           i <-> i; p <-> p (reset to NONE once dead, in both models: a stale
                           value would split states in one model only)
                rcu:       no pc (one atomic block in a loop) <-> rcu_task's single yield site
              Promela scratch globals k, q (reset to 0 at the end of every block that uses them) <->
              Python's "_"-prefixed locals (_k, _err, _freed_now, _c, _m), which gen_position skips:
              temporaries of one step, never telling two states apart in either model.
  state()[1]  owner[N]          state()[2]  pamt[N]           state()[3]  spfree[N]
  state()[4]  mirror[N]         state()[5]  link[N]           state()[6]  hkid
  state()[7]  vrun              state()[8]  (cbq[0..cbn-1], cbage[0..cbn-1]): Promela's cbn and the
              unused array slots (always NONE / 0) follow from the lengths
  state()[9]  rd[W]             state()[10] nold              state()[11] nfaults

The done flag is redundant with the position (() iff done) and costs no states. SPIN stores the
initial state, every state reached and end states; septlab's Explorer counts the root, every distinct
state reached and terminal states, once each: so without reductions the two distinct-state counts are
equal, and SPIN's "transitions (= stored+matched)" is septlab's transition count + 1 (the root).
"""

from __future__ import annotations

from typing import Any

from septlab.check.invariants import Violation
from septlab.explore.runtime import Thread, op_enabled
from septlab.explore.state import fingerprint, task_position
from septlab.host.task import OP_SEAMCALL, Task

from .twin_model import (
    ELEMENT_LISTS,
    NOT_STATE,
    RECLAIM_FAULT,
    RECLAIM_LEAF,
    TwinConfig,
    TwinModel,
    rcu_task,
    teardown_task,
    vcpu_task,
    walker_task,
)

Transition = tuple[int, int]


class TwinExecutor:
    # for POR (septlab/explore/footprint.py): the twin's one state class, and its per-element lists
    footprint_classes = {TwinModel: (None, NOT_STATE)}

    def __init__(self, cfg: TwinConfig):
        from septlab.explore.footprint import register

        register(self.footprint_classes, {(TwinModel, a) for a in ELEMENT_LISTS})
        self.cfg = cfg
        self.steps_executed = 0  # across resets (the explorer's real cost)
        self.reset()

    def reset(self) -> None:
        cfg = self.cfg
        m = self.m = TwinModel(cfg)
        self.threads: list[Thread] = (
            [Thread(Task(f"vcpu{v}", "vcpu"), vcpu_task(m, v)) for v in range(cfg.v)]
            + [Thread(Task(f"walker{w}", "walker"), walker_task(m, w)) for w in range(cfg.w)]
            + [Thread(Task("teardown", "destroy"), teardown_task(m)),
               Thread(Task("rcu", "softirq", daemon=True), rcu_task(m))])
        self.trail: list[Transition] = []
        self.step = 0
        self.stopped = False
        self._positions: list[tuple | None] = [None] * len(self.threads)  # cached until the task steps
        for t in self.threads:  # run each task to its first announced step
            t.op = next(t.gen)

    @property
    def violations(self) -> list[Violation]:
        return self.m.violations

    def _may_inject(self, op: Any) -> bool:
        return op.kind == OP_SEAMCALL and not op.nofail and op.leaf == RECLAIM_LEAF and \
            self.m.nfaults < self.cfg.max_faults

    def enabled(self) -> list[int]:
        return [i for i, t in enumerate(self.threads) if not t.done and op_enabled(t.op)]

    def transitions(self) -> list[Transition]:
        out: list[Transition] = []
        for i in self.enabled():
            out.append((i, 0))
            if self._may_inject(self.threads[i].op):
                out.append((i, RECLAIM_FAULT))
        return out

    @property
    def choices(self) -> list[tuple[int, int]]:
        """The (n, i) choice list of the current run, as septlab's runtime records it (n > 1 only).

        Derived on demand by replaying the trail: the Explorer reads it once per result, while computing
        it inside execute() (septlab's Executor does) costs an enabled() scan on every replayed step."""
        twin = TwinExecutor(self.cfg)
        out: list[tuple[int, int]] = []
        for tr in self.trail:
            en = twin.enabled()
            if len(en) > 1:
                out.append((len(en), en.index(tr[0])))
            if twin._may_inject(twin.threads[tr[0]].op):
                out.append((2, 1 if tr[1] else 0))
            twin.execute(tr)
        return out

    def replay(self, path: list[Transition]) -> None:
        """reset() and re-execute `path` (the explorer's light re-execution): the same steps, in one loop."""
        self.reset()
        send = self._send
        for step, (tid, inj) in enumerate(path):
            send(tid, inj, step)
        self.trail = list(path)
        self.step = len(path)
        self.steps_executed += len(path)
        self.stopped = self.m.stopped

    def footprint_roots(self) -> list[Any]:
        return [self.m]

    def footprint_enabling(self, tid: int) -> None:
        op = self.threads[tid].op
        op_enabled(op)
        self._may_inject(op)

    def execute(self, tr: Transition) -> None:
        tid, inj = tr
        self.trail.append(tr)
        self.step += 1
        self.steps_executed += 1
        self._send(tid, inj, self.step - 1)
        if self.m.stopped:
            self.stopped = True

    def _send(self, tid: int, inj: int, step: int) -> None:
        """Run task tid's announced step as step number `step` (executed or replayed)."""
        t = self.threads[tid]
        m = self.m
        m.current = t.task.name
        m.clock = step
        self._positions[tid] = None
        try:
            t.op = t.gen.send(inj or None)
        except StopIteration:
            t.done = True
            t.task.done = True

    def state(self) -> tuple:
        m = self.m
        tasks = tuple((t.done, self._position(i, t) if not t.done else ()) for i, t in enumerate(self.threads))
        return (tasks, tuple(m.owner), tuple(m.pamt), tuple(m.spfree), tuple(m.mirror), tuple(m.link), m.hkid,
                m.vrun, (tuple(m.cbq), tuple(m.cbage)), tuple(m.rd), m.nold, m.nfaults)

    def _position(self, i: int, t: Thread) -> tuple:
        """gen_position of task i, recomputed only after task i stepped (its locals are ints)."""
        c = self._positions[i]
        if c is None:
            c, stable = task_position(t.gen)
            if stable:
                self._positions[i] = c
        return c

    def fingerprint(self) -> int:
        return fingerprint(self.state())

    def finish(self) -> None:
        """Terminal state: every non-daemon task must be done (else a deadlock, as septlab reports)."""
        blocked = [t.task.name for t in self.threads if not t.done and not t.task.daemon]
        if blocked:
            self.m.violations.append(Violation("deadlock", self.step, "-", f"blocked: {', '.join(blocked)}"))

    def describe(self, tr: Transition) -> str:
        """The step a transition would take from the current state (for printing counterexamples)."""
        t = self.threads[tr[0]]
        return f"{t.task.name}: {t.op.what}" + (" [injected failure]" if tr[1] else "")
