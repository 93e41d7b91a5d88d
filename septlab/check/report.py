"""Violation reports in the forms kernel developers already read.

use-after-free / double-free: KASAN ("BUG: KASAN: use-after-free in f", the access, "Allocated by",
"Freed by", the page's history); lock-context: lockdep's "inconsistent lock state" splat with both
usages; SEAMCALL contract and WARN/KVM_BUG_ON: the "cut here" WARNING with leaf and error by name.
Every report ends with the command that replays it.
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
                                                    "region", "refcount", "expected", "by_owner", "blocked")}
    if extra:
        out.append("  " + "  ".join(f"{k}={val:#x}" if isinstance(val, int) and k in ("gfn", "pfn", "region")
                                   else f"{k}={val}" for k, val in extra.items()))
    out.append("---[ end trace ]---")
    return out


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
