"""A world under step-by-step control, for explorers that choose every transition themselves.

A transition is (thread index, injected error or None). Executing one appends the same (n, i)
choices the random runtime would record, so any path found here replays with `septlab replay`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import kernel as K
from ..check.invariants import Checker
from ..check.watchdog import sleeps
from ..explore.runtime import Stop, op_enabled
from ..host import task as task_mod
from ..host.task import OP_SEAMCALL
from ..scenarios import Scenario
from ..scenarios.world import World, build_world
from ..tdx_module import errno as E
from ..tdx_module.sept import SEPT_FREE, SEPT_NAMES, entry_key
from ..variants import Variant
from .state import fingerprint, task_position, world_state

Transition = tuple[int, int]  # (thread index, injected error code or 0)


@dataclass
class StepInfo:
    """What the last executed step was, for coverage and reports."""

    tid: int
    what: str
    leaf: int


class Executor:
    def __init__(self, scn: Scenario, variant: Variant, dpamt: bool, history: bool = False):
        self.scn = scn
        self.variant = variant
        self.dpamt = dpamt
        self.history = history
        self.faults = scn.faults
        self.steps_executed = 0  # across resets (the explorer's real cost)
        self.record = True  # keep the replayable (n, i) choice list
        self.reset()

    def reset(self) -> None:
        self.checker = Checker(stop_on_fatal=True)
        self.world: World = build_world(self.scn, self.variant, self.dpamt, self.checker, self.history)
        self.checker.attach(self.world)
        self.threads = self.world.threads
        self.host = self.world.host
        self.choices: list[tuple[int, int]] = []
        self.step = 0
        self.stopped = False
        self.crash = ""
        self.log: list[tuple[int, str, str]] = []
        self._positions: list[tuple | None] = [None] * len(self.threads)
        self._frames: dict[int, Any] = {}  # frames suspended in yield from (state.task_position)
        host = self.host
        for t in self.threads:
            host.current = t.task
            t.op = next(t.gen)

    # --- the state ---------------------------------------------------------------------------------
    def enabled(self) -> list[int]:
        return [i for i, t in enumerate(self.threads) if not t.done and op_enabled(t.op)]

    def transitions(self) -> list[Transition]:
        out: list[Transition] = []
        for i in self.enabled():
            op = self.threads[i].op
            out.append((i, 0))
            if op.kind == OP_SEAMCALL and not op.nofail and self._may_inject():
                for f in self.faults.get(op.leaf, ()):
                    out.append((i, f))
        return out

    def _may_inject(self) -> bool:
        mf = self.scn.max_faults
        return mf is None or self.host.injections < mf

    def state(self) -> tuple:
        return world_state(self.world, self.threads, self.checker, self._position)

    def _position(self, i: int, t: Any) -> tuple:
        """Task i's generator position, recomputed only after task i stepped (another task's step cannot
        move a generator) -- unless its locals hold a list or dict the world may share (state.task_position)."""
        c = self._positions[i]
        if c is None:
            c, stable = task_position(t.gen, self._frames)
            if stable:
                self._positions[i] = c
        return c

    def fingerprint(self) -> int:
        return fingerprint(self.state())

    @property
    def violations(self) -> list[Any]:
        return self.checker.violations

    # --- stepping ----------------------------------------------------------------------------------
    def execute(self, tr: Transition) -> StepInfo:
        tid, inj = tr
        t = self.threads[tid]
        op = t.op
        if self.record:  # the runtime's (n, i) choice list; explorers turn this off while searching
            en = self.enabled()
            if len(en) > 1:
                self.choices.append((len(en), en.index(tid)))
            if op.kind == OP_SEAMCALL and not op.nofail and self._may_inject():
                opts = self.faults.get(op.leaf)
                if opts:
                    self.choices.append((len(opts) + 1, opts.index(inj) + 1 if inj else 0))
        host = self.host
        if K._ACTIVE is not host.patches:
            K.activate(host.patches)
        if self.history:
            self.log.append((self.step, t.task.name, op.what or repr(op)))
        self.step += 1
        self.steps_executed += 1
        info = StepInfo(tid, op.what, op.leaf if op.kind == OP_SEAMCALL else -1)
        self._send(tid, inj, self.step - 1)
        return info

    def _send(self, tid: int, inj: int, step: int) -> None:
        """Run task tid's announced step as step number `step`: the one place a step runs, executed or
        replayed."""
        t = self.threads[tid]
        host = self.host
        host.current = t.task
        host.clock = step
        # Progress of this step (host/progress.py), for the state graph's edges: leaving a userspace
        # wait and finishing count too.
        host.progressed = (1 << t.task.cpu) if t.op.user else 0
        self._positions[tid] = None
        try:
            t.op = t.gen.send(inj or None)
        except StopIteration:
            t.done = True
            t.task.done = True
            host.progressed |= 1 << t.task.cpu
        except Stop:
            self.stopped = True
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # a model crash (or sys.exit in a hook): say where, keep the path (exit 3)
            raise RuntimeError(f"model crashed in {t.task.name} at step #{step} ({t.op.what}): "
                               f"{type(e).__name__}: {e}") from e

    def replay(self, path: list[Transition]) -> None:
        """reset(), then re-execute `path`: steps an explorer has run and checked before, so only what
        they do to the state matters -- no choice list, step log or call chains (reports taken from a
        replayed world must come from a full re-execution, as the explorers' results do)."""
        self.reset()
        host = self.host
        if K._ACTIVE is not host.patches:
            K.activate(host.patches)
        send = self._send
        step = self.step
        task_mod.CHAINS[0] = False
        try:
            for tid, inj in path:
                send(tid, inj, step)
                step += 1
        finally:
            task_mod.CHAINS[0] = True
            self.steps_executed += step - self.step
            self.step = step

    # --- explorer hooks (footprints, coverage) -------------------------------------------------------
    def footprint_roots(self) -> list[Any]:
        """The state objects every other one is reachable from (explore/footprint.py names containers)."""
        return [self.host, self.world.kvm, self.checker]

    def footprint_enabling(self, tid: int) -> None:
        """What makes task tid's next step possible: its lock or wait condition, and -- for a SEAMCALL
        that transitions() may offer failing -- the fault budget. The budget (host.injections) decides
        only which injected variants of such a step exist; a step with none (any other op, a nofail
        SEAMCALL, a leaf the scenario injects nothing into) does not read it (docs/por-dependencies.md:
        reading it for every step made every injected step race with every step of every other task)."""
        op = self.threads[tid].op
        op_enabled(op)
        if op.kind == OP_SEAMCALL and not op.nofail and self.faults.get(op.leaf):
            self._may_inject()

    def step_info(self, tr: Transition, cov: Any) -> None:
        """Execute with coverage (SEAMCALL x entry state x outcome)."""
        t = self.threads[tr[0]]
        op = t.op
        state_name = "-"
        if op.kind == OP_SEAMCALL and isinstance(op.obj, tuple) and op.obj and op.obj[0] == "sept":
            _, tdr, level, gfn = op.obj
            td = self.host.seam.tds.get(tdr)
            st = td.sept_state.get(entry_key(level, gfn), SEPT_FREE) if td else SEPT_FREE
            state_name = f"L{level}:{SEPT_NAMES.get(st, st)}"
        self.checker.last_seamcall = None
        info = self.execute(tr)
        cov.note_step(info.what)
        if op.kind == OP_SEAMCALL and op.leaf > 0:
            ls = self.checker.last_seamcall
            if ls is not None:
                outcome = ("injected " if ls[2] else "") + (E.ERROR_NAMES.get(E.status(ls[1]), "?") if ls[1] else "ok")
                cov.note_seamcall(op.leaf, state_name, outcome)

    def liveness_masks(self, trs: list[Transition]) -> tuple[int, int, int]:
        """(enabled, owes progress, blocked-not-spinning) task masks of the current state (liveness.py)."""
        enabled = 0
        for tid, _ in trs:
            enabled |= 1 << tid
        wants = sleeping = 0
        for i, t in enumerate(self.threads):
            if not t.task.owes_progress():
                continue
            wants |= 1 << i
            if sleeps(t.op) or t.op.user:
                sleeping |= 1 << i
        return enabled, wants, sleeping

    def progressed(self) -> int:
        """The tasks (thread-index bits) that made progress in the last executed step."""
        return self.host.progressed

    def daemons(self) -> int:
        return sum(1 << i for i, t in enumerate(self.threads) if t.task.daemon)

    def task_name(self, tid: int) -> str:
        return self.threads[tid].task.name

    def events(self) -> list[str]:
        """Invariant-relevant events this run reached (for coverage)."""
        m = self.checker.metrics
        out = [f"injected {k}" for k in m.injected] + [f"leak: {k}" for k in m.leak_reasons]
        if m.rcu_callbacks:
            out.append("RCU callback ran")
        if m.retained_page_steps:
            out.append("reclaimed S-EPT page held before free")
        if self.checker.expected:
            out.append("kernel handled an injected failure (WARN/TDX_BUG_ON)")
        if m.pamt_remove:
            out.append("PAMT.REMOVE (region emptied)")
        return out

    def finish(self) -> None:
        """End-of-run invariants once nothing can run (leaks, PAMT balance, deadlock)."""
        blocked = [f"{t.task.name}: {t.op.what}" for t in self.threads if not t.done and not t.task.daemon]
        status = "deadlock" if blocked else "done"
        self.checker.finish(status, self.step, blocked)
