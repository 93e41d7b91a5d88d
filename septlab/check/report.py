"""Violation reports in the forms kernel developers already read.

use-after-free / double-free: KASAN ("BUG: KASAN: use-after-free in f", the access, "Allocated by",
"Freed by", the page's history); lock-context: lockdep's "inconsistent lock state" splat with both
usages; SEAMCALL contract and WARN/KVM_BUG_ON: the "cut here" WARNING with leaf and error by name;
sleep-in-atomic: __might_resched()'s "BUG: sleeping function called from invalid context"; lock-order:
lockdep's "possible circular locking dependency detected" (dependency chain with the stack where each
dependency was first seen, the CPU0/CPU1 scenario) or "possible recursive locking detected";
suspicious-rcu-usage: lockdep_rcu_suspicious()'s "WARNING: suspicious RCU usage"; lockdep-assert: the
WARN_ON of lockdep_assert_held*(); soft-lockup, hung-task, rcu-stall and deadlock: the lockup detectors'
reports (check/watchdog.py builds their lines). <file>:<line> in these is the model's line of the annotation (the
kernel prints its own source line; the call chain names the kernel functions). Every report ends with
the command that replays it.
"""

from __future__ import annotations

from typing import Any

from ..host.page_alloc import OWNER_NAMES
from .invariants import INVARIANTS, Violation

RULE = "=" * 66


def _chain(chain: Any, indent: str = " ") -> list[str]:
    if not chain:
        return [f"{indent}(no call chain recorded)"]
    return [f"{indent}{name}" for name in reversed(tuple(chain))]


def _history(host: Any, pfn: int) -> list[str]:
    out = [f"--- page {pfn:#x} history (now: {OWNER_NAMES[host.pages.state(pfn)]}) ---"]
    hist = (host.history or {}).get(pfn, [])
    if not hist:
        out.append(" (no history recorded)")
    for ev in hist:
        where = ev.chain[-1] if ev.chain else "?"
        via = " < ".join(reversed(ev.chain[-4:-1])) if len(ev.chain) > 1 else ""
        out.append(f" #{ev.step:<5} {ev.task:<8} {ev.what}  in {where}()" + (f"  [{via}]" if via else ""))
    return out


def _who(host: Any, table: dict[int, Any], pfn: int, label: str) -> list[str]:
    rec = table.get(pfn)
    if rec is None:
        return []
    task, step, chain = rec
    return [f"{label} by task {task} at step #{step}:", *_chain(chain), ""]


def _kasan(v: Violation, host: Any) -> list[str]:
    d = v.details
    pfn = v.pfns[0] if v.pfns else -1
    what = v.title.split(" in ")[-1] if " in " in v.title else d.get("access", "?")
    out = [v.title if v.title.startswith("BUG: KASAN") else f"BUG: KASAN: {v.invariant} in {what}"]
    acc = d.get("access", "Read")
    ctx = " (inside rcu_read_lock())" if d.get("in_rcu_reader") else ""
    out.append(f"{acc} of size 8 at pfn {pfn:#x} by task {v.task} at step #{v.step}{ctx}")
    out += _chain(d.get("chain")) + [""]
    out += _who(host, host.last_alloc, pfn, "Allocated")
    out += _who(host, host.last_free, pfn, "Freed")
    out.append(f"The buggy address belongs to the page {pfn:#x} ({d.get('owner', '?')}).")
    return out


def _lockdep(v: Violation) -> list[str]:
    d = v.details
    first, second = d["first"], d["second"]
    lock = d["lock"]
    return [
        "================================",
        "WARNING: inconsistent lock state",
        "--------------------------------",
        f"inconsistent {{{d['held_state']}}} -> {{{d['new_state']}}} usage.",
        f"{second.task}/{second.ctx} at step #{second.step} takes:",
        f"  ({lock}){{+.?.}}, at: {second.chain[-1] if second.chain else '?'}",
        f"{{{d['held_state']}}} state was registered at step #{first.step} by {first.task} ({first.ctx}):",
        *_chain(first.chain, "  "),
        "",
        "other info that might help us debug this:",
        " Possible unsafe locking scenario:",
        "",
        "       CPU0",
        "       ----",
        f"  lock({lock});",
        "  <Interrupt>",
        f"    lock({lock});",
        "",
        " *** DEADLOCK ***",
        "",
        f"stack backtrace ({second.task}, {second.ctx}):",
        *_chain(second.chain, "  "),
    ]


def _warn(v: Violation) -> list[str]:
    d = v.details
    out = ["------------[ cut here ]------------", v.title,
           f"task: {v.task}  step: #{v.step}  invariant: {v.invariant}", "Call Trace:"]
    out += _chain(d.get("chain"), "  ")
    extra = {k: val for k, val in d.items() if k in ("gfn", "pfn", "level", "sept_state", "ptype", "owner",
                                                    "region", "refcount", "expected", "by_owner", "blocked", "hkid",
                                                    "cause") and val not in (None, "")}
    if d.get("holders"):
        out.append(f"  TDX-module lock holders: {d['holders']}")
    if extra:
        out.append("  " + "  ".join(f"{k}={val:#x}" if isinstance(val, int) and k in ("gfn", "pfn", "region")
                                   else f"{k}={val}" for k, val in extra.items()))
    out.append("---[ end trace ]---")
    return out


def _held(d: dict[str, Any], task: str) -> list[str]:
    """lockdep_print_held_locks()."""
    held = d.get("held") or []
    pid = d.get("pid", "?")
    if not held:
        return [f"no locks held by {task}/{pid}."]
    out = [f"{len(held)} lock{'s' if len(held) != 1 else ''} held by {task}/{pid}:"]
    out += [f" #{i}: {name}, at: {at}" for i, (name, at) in enumerate(held)]
    return out


def _trace(d: dict[str, Any], task: str, step: Any) -> list[str]:
    """dump_stack(): the header line, then the model's call chain, innermost first."""
    return [f"CPU: {d.get('cpu', '?')} PID: {d.get('pid', '?')} Comm: {task} (step #{step})", "Call Trace:",
            " <TASK>", *_chain(d.get("chain"), " "), " </TASK>"]


def _might_sleep(v: Violation) -> list[str]:
    d = v.details
    return [
        v.title,
        f"in_atomic(): {d['in_atomic']}, irqs_disabled(): {d['irqs_disabled']}, non_block: {d['non_block']}, "
        f"pid: {d['pid']}, name: {v.task}",
        f"preempt_count: {d['preempt_count']:x}, expected: {d.get('expected', 0):x}",
        f"RCU nest depth: {d['rcu_depth']}, expected: 0",
        *_held(d, v.task),
        f"sleeping call: {d['what']}" + (" (in softirq)" if d.get("in_softirq") else ""),
        *_trace(d, v.task, v.step),
    ]


def _lock_order(v: Violation) -> list[str]:
    d = v.details
    acq, hold = d["acquiring"], d["holding"]
    if d.get("form") == "recursive":
        rule = "-" * 44
        return [
            "=" * 44, v.title, rule,
            f"{v.task}/{d['pid']} is trying to acquire lock:", f" {acq[0]}, at: {acq[1]}", "",
            "but task is already holding lock:", f" {hold[0]}, at: {hold[1]}", "",
            "other info that might help us debug this:", " Possible unsafe locking scenario:", "",
            "       CPU0", "       ----", f"  lock({d['source']});", f"  lock({d['source']});", "",
            " *** DEADLOCK ***", "", " May be due to missing lock nesting notation", "",
            *_held(d, v.task), "", "stack backtrace:", *_trace(d, v.task, v.step)]
    rule = "-" * 54
    out = ["=" * 54, v.title, rule,
           f"{v.task}/{d['pid']} is trying to acquire lock:", f" {acq[0]}, at: {acq[1]}", "",
           "but task is already holding lock:", f" {hold[0]}, at: {hold[1]}", "",
           "which lock already depends on the new lock.", "", "",
           "the existing dependency chain (in reverse order) is:"]
    for depth, name, task, step, chain in d["entries"]:
        out += ["", f"-> #{depth} {name}:", f"       [first seen: {task} at step #{step}]",
                *_chain(chain, "       ")]
    src, tgt, parent = d["source"], d["target"], d["parent"]
    out += ["", "other info that might help us debug this:", ""]
    if parent != src:
        out += ["Chain exists of:", f"  {src} --> {parent} --> {tgt}", ""]
    out += [" Possible unsafe locking scenario:", "",
            "       CPU0                    CPU1",
            "       ----                    ----",
            f"  {'rlock' if d['tgt_read'] else 'lock'}({tgt});",
            f"                               lock({parent});",
            f"                               lock({tgt});",
            f"  {'rlock' if d['src_read'] else 'lock'}({src});", "",
            " *** DEADLOCK ***", "",
            *_held(d, v.task), "", "stack backtrace:", *_trace(d, v.task, v.step)]
    return out


def _rcu_suspicious(v: Violation) -> list[str]:
    d = v.details
    return ["=" * 29, "WARNING: suspicious RCU usage", "-" * 29, v.title, "",
            "other info that might help us debug this:", "", "",
            f"rcu_scheduler_active = {d['rcu_scheduler_active']}, debug_locks = {d['debug_locks']}",
            *_held(d, v.task), f"dereferenced: {d['what']}", "",
            "stack backtrace:", *_trace(d, v.task, v.step)]


def _lockdep_assert(v: Violation) -> list[str]:
    d = v.details
    return ["------------[ cut here ]------------", v.title,
            f"{d['assertion']}: {d['why']}", *_held(d, v.task),
            *_trace(d, v.task, v.step), "---[ end trace ]---"]


def _hung_task(v: Violation) -> list[str]:
    """check_hung_task()'s report: the blocked task, where it sleeps, and (as lockdep's
    debug_show_all_locks() would) who holds what it waits for."""
    d = v.details
    return [
        v.title,
        '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
        f"task:{d.get('task', '?')} state:D",
        "Call Trace:", " <TASK>", *[f" {f}" for f in str(d.get("blocked_in", "")).split(" <- ")], " </TASK>",
        "",
        f"Showing the holder: {d.get('holder', '?')} is inside srcu_read_lock(&kvm->srcu) and runs:",
        f" {d.get('holder_in', '?')}",
        *_chain(d.get("chain"), " "),
        f"why: {d.get('why', '')}",
    ]


def _stale_spte(v: Violation) -> list[str]:
    """A KASAN-style report for a page freed under a live SPTE: the SPTE, then the page's history."""
    d = v.details
    return [v.title, f"freed by task {d.get('task', v.task)} at step #{v.step}:", *_chain(d.get("chain"), " "),
            f"the {d.get('spte_owner', '?')} SPTE (sp {d.get('sp')}, level {d.get('level')}, entry {d.get('entry')}) "
            "still translates to it: the guest can read and write the page's next owner"]


def render(v: Violation, host: Any, log: list[tuple[int, str, str]] | None, replay_cmd: str, header: str) -> str:
    inv = INVARIANTS.get(v.invariant)
    out = [RULE, f"septlab: invariant '{v.invariant}' violated at step #{v.step} ({v.task})", header]
    if inv:
        out.append(f"rule: {inv.rule}  [{inv.kernel}]")
    out.append(f"Reproduce: {replay_cmd}")
    out.append(RULE)
    if v.invariant in ("use-after-free", "rcu-use-after-free", "double-free"):
        out += _kasan(v, host)
    elif v.invariant == "lock-context":
        out += _lockdep(v)
    elif v.invariant == "sleep-in-atomic":
        out += _might_sleep(v)
    elif v.invariant == "lock-order":
        out += _lock_order(v)
    elif v.invariant == "suspicious-rcu-usage":
        out += _rcu_suspicious(v)
    elif v.invariant == "lockdep-assert":
        out += _lockdep_assert(v)
    elif "lines" in v.details:  # the lockup detectors (check/watchdog.py) and the deadlock report
        out += [str(x) for x in v.details["lines"]]
    elif v.invariant == "hung-task":
        out += _hung_task(v)
    elif v.invariant == "stale-spte":
        out += _stale_spte(v)
    else:
        out += _warn(v)
    if log:
        tail = [e for e in log if e[0] <= v.step][-16:]
        out += ["", "--- last steps before the violation ---"]
        out += [f"#{s:<5} <{t}> {w}" for s, t, w in tail]
    for pfn in v.pfns[:3]:
        out += [""] + _history(host, pfn)
    out.append(RULE)
    return "\n".join(out)
