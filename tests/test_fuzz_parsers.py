"""Fuzz the two inputs users attach to bug reports -- scenarios and traces -- through the CLI's own paths.

`pytest -m slow tests/test_fuzz_parsers.py` runs 10^5 inputs per parser (SEPTLAB_FUZZ_EXAMPLES to
change it); the normal suite runs a few hundred. Every input must end as a result or a one-line
ScenarioError/TraceError: never another exception, and through `main()` never a traceback or an exit
status outside the documented ones (0, 1, 2, 4).
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from septlab.explore.driver import TraceError, _digest, load_trace, replay_trace, run_schedule, trace_header, trace_json
from septlab.scenarios import BUILTIN_DIR, ScenarioError, load_scenario
from septlab.variants import get_variant

SLOW = int(os.environ.get("SEPTLAB_FUZZ_EXAMPLES", "100000"))
FAST = 150
TMP = Path(tempfile.mkdtemp(prefix="septlab-fuzz-"))
BUILTINS = [p.read_text() for p in sorted(BUILTIN_DIR.glob("*.yaml"))]
KEYS = ["name", "description", "vcpus", "memory", "cache_capacity", "history", "fault_rate", "max_steps",
        "steps_per_second", "max_faults", "check", "image", "faults", "threads", "kind", "vcpu", "access", "gfn",
        "count", "shared", "ops", "after", "accesses", "convert_to_shared", "zap_all_fast", "TDH.MEM.SEPT.ADD",
        "TDX_OPERAND_BUSY"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.sampled_from(KEYS + ["memory", "2MiB", "1TiB", "0x200", "vcpu", "zapper", "", "[/]",
                                            "\x1b[31m", "*a", "&a x", "!!python/object:os.system"]),
                    st.text(max_size=20))
STRUCT = st.recursive(SCALARS, lambda c: st.one_of(st.lists(c, max_size=5),
                                                  st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), c,
                                                                  max_size=6)), max_leaves=16)


def _mutate(text: str, rnd: random.Random) -> str:
    """Byte-level and line-level damage to a valid file: what a hand edit or a bad copy does."""
    lines = text.splitlines()
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(6)
        i = rnd.randrange(len(lines)) if lines else 0
        if op == 0 and lines:
            del lines[i]
        elif op == 1 and lines:
            lines.insert(i, lines[rnd.randrange(len(lines))])
        elif op == 2 and lines:
            j = rnd.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:j] + rnd.choice(["&x ", "*x", ": ", "- ", "{", "]", "\t", "9" * 30, "\x00", "#"]) \
                + lines[i][j:]
        elif op == 3 and lines:
            lines[i] = lines[i].replace(rnd.choice(["1", "2", "0"]), str(rnd.choice([-1, 2**40, 10**30, 0])))
        elif op == 4:
            lines = lines[: rnd.randrange(len(lines) + 1)]
        else:
            lines.append(rnd.choice(["name: dup", "threads: []", "check: {max_steps: -1}", "<<: *a"]))
    return "\n".join(lines)


def _scenario_text(draw_kind: int, struct: object, seed: int, text: str) -> str:
    if draw_kind == 0:
        return text
    if draw_kind == 1:
        return yaml.safe_dump(struct, allow_unicode=True)
    base = BUILTINS[seed % len(BUILTINS)]
    return _mutate(base, random.Random(seed))


def check_scenario_input(kind: int, struct: object, seed: int, text: str) -> None:
    body = _scenario_text(kind, struct, seed, text)
    path = TMP / "s.yaml"
    path.write_bytes(body.encode("utf-8", "replace"))
    try:
        load_scenario(str(path))
    except ScenarioError as e:
        assert "\n" not in str(e) and str(e), repr(str(e))


def _valid_trace() -> dict:
    scn = load_scenario("seed")
    var = get_variant("rcu-free")
    r = run_schedule(scn, var, True, 0, history=False)
    return trace_json(trace_header(scn, var, True, 0, scn.fault_rate, {}), r)


VALID = _valid_trace()


def check_trace_input(struct: object, seed: int, resign: bool) -> None:
    rnd = random.Random(seed)
    if seed % 3 == 0:
        data = struct
    else:
        data = dict(VALID)
        for _ in range(rnd.randint(1, 3)):
            k = rnd.choice(list(data) + ["extra"])
            data[k] = struct if rnd.random() < 0.5 else rnd.choice([None, 0, -1, "", [], {}, "1:0", "x", True, 2**64])
        if resign and isinstance(data, dict):
            data["digest"] = _digest(data)
    path = TMP / "t.json"
    path.write_text(json.dumps(data, default=str))
    try:
        load_trace(path)
        if resign:
            replay_trace(path)
    except (TraceError, ScenarioError) as e:
        assert "\n" not in str(e) and str(e), repr(str(e))
    except Exception as e:  # the variant error for a bad name is the only other allowed outcome
        from septlab.variants import VariantError

        assert isinstance(e, VariantError), repr(e)


def _fuzz(n: int):
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _draw_scenario(data: st.DataObject) -> tuple[int, object, int, str]:
    """Draw only what the chosen kind of input needs: generation, not parsing, is the fuzzer's cost."""
    kind = data.draw(st.integers(0, 2))
    struct = data.draw(STRUCT) if kind == 1 else None
    text = data.draw(st.text(max_size=300)) if kind == 0 else ""
    return kind, struct, data.draw(st.integers(0, 2**32)), text


def _draw_trace(data: st.DataObject) -> tuple[object, int, bool]:
    seed = data.draw(st.integers(0, 2**32))
    struct = data.draw(STRUCT) if seed % 3 == 0 or seed % 7 == 1 else seed
    # re-signed mutants get past the digest and run a replay (milliseconds each): one in eight
    return struct, seed, data.draw(st.integers(0, 7)) == 0


@pytest.mark.slow
@_fuzz(SLOW)
@given(st.data())
def test_fuzz_scenario_parser_slow(data):
    check_scenario_input(*_draw_scenario(data))


@pytest.mark.slow
@_fuzz(SLOW)
@given(st.data())
def test_fuzz_trace_parser_slow(data):
    check_trace_input(*_draw_trace(data))


@_fuzz(FAST)
@given(st.data())
def test_fuzz_scenario_parser(data):
    check_scenario_input(*_draw_scenario(data))


@_fuzz(FAST)
@given(st.data())
def test_fuzz_trace_parser(data):
    check_trace_input(*_draw_trace(data))


@_fuzz(60)
@given(st.data())
def test_fuzz_through_main_exits_only_as_documented(data):
    """The CLI's error boundary on the same inputs: exit 0/1/2/4, one line on error, no traceback."""
    from septlab.cli import main

    path = TMP / "m.yaml"
    path.write_bytes(_scenario_text(*_draw_scenario(data)).encode("utf-8", "replace"))
    outb, errb = io.StringIO(), io.StringIO()
    with redirect_stdout(outb), redirect_stderr(errb), pytest.raises(SystemExit) as ex:
        main(["run", "--scenario", str(path), "--variant", "tdx-free", "--set", "max_steps=5000",
              "--trace-dir", str(TMP / "traces")])
    assert ex.value.code in (0, 1, 2, 4), (ex.value.code, errb.getvalue())
    assert "Traceback" not in outb.getvalue() + errb.getvalue()
