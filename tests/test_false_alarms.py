"""No false alarms: the correct design (tdx-free) under every SEAMCALL failure the module can return.

Every built-in scenario x every SEAMCALL leaf x every TDX error x DPAMT off/on, one injected failure per
schedule (max_faults 1, so the cause of anything reported is that failure): the kernel's own handling
(WARN/TDX_BUG_ON, bug the VM, leak or keep what it deliberately keeps) must be classified as expected
or explained, never as a violation. The full matrix runs under `-m slow`; the normal suite runs every
scenario x leaf x DPAMT with the errors rotated over the leaves.
"""

from __future__ import annotations

import itertools

import pytest

from septlab.explore.driver import run_schedule
from septlab.scenarios import builtin_names, load_scenario
from septlab.tdx_module import errno as E
from septlab.variants import get_variant

LEAVES = sorted(E.LEAF_BY_NAME)
ERRORS = sorted(n for n, v in E.ERROR_BY_NAME.items() if v & (1 << 63))  # error class only, not warnings
FAST_ERRORS = ["TDX_OPERAND_BUSY", "TDX_OPERAND_INVALID", "TDX_EPT_ENTRY_STATE_INCORRECT"]


def _unexplained(scenario: str, leaf: str, error: str, dpamt: bool, schedules: int) -> list[str]:
    sets = {"faults": f"{{{leaf}: [{error}]}}", "fault_rate": "0.5", "max_faults": "1"}
    if "memory" in load_scenario(scenario).data:
        sets["memory"] = "8MiB"  # boot-teardown: the same paths over 2,048 pages instead of 262,144
    scn = load_scenario(scenario, sets)
    var = get_variant("tdx-free")
    bad = []
    for seed in range(schedules):
        r = run_schedule(scn, var, dpamt, seed, history=False)
        assert r.status != "crash", r.crash
        bad += [f"seed {seed}: {v.invariant}: {v.title}" for v in r.violations]
    return bad


def _matrix(errors: list[str]) -> list[tuple[str, str, str, bool]]:
    return [(s, lf, e, d) for s, lf, e, d in itertools.product(builtin_names(), LEAVES, errors, (False, True))]


def _sampled() -> list[tuple[str, str, str, bool]]:
    """Every scenario x leaf x DPAMT, the errors rotated over the leaves (the full product is -m slow)."""
    return [(s, lf, FAST_ERRORS[(i + j) % len(FAST_ERRORS)], d) for i, s in enumerate(builtin_names())
            for j, lf in enumerate(LEAVES) for d in (False, True)]


@pytest.mark.parametrize("scenario,leaf,error,dpamt", _sampled())
def test_tdx_free_reports_only_explained_failures(scenario, leaf, error, dpamt):
    assert not _unexplained(scenario, leaf, error, dpamt, 2)


@pytest.mark.slow
@pytest.mark.parametrize("scenario,leaf,error,dpamt", _matrix(ERRORS))
def test_tdx_free_reports_only_explained_failures_full_matrix(scenario, leaf, error, dpamt):
    assert not _unexplained(scenario, leaf, error, dpamt, 4)
