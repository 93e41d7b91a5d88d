"""Hostile and malformed scenario input: every failure is a fast, one-line ScenarioError naming file, line
and field -- never a traceback, a hang, an alias expansion, or a run that wraps past the GFN space."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from septlab.scenarios import (
    BUILTIN_DIR,
    GFN_SPACE,
    MAX_FILE_BYTES,
    MAX_NODES,
    NAME_RE,
    Scenario,
    ScenarioError,
    _load_yaml,
    _Refused,
    _strict_loader,
    builtin_names,
    load_scenario,
)
from tests.test_cli import ROOT, assert_clean_error, septlab

MiB = 1 << 20
# A vCPU thread header: the access list follows at line 6.
VCPU = "name: x\nthreads:\n  - kind: vcpu\n    vcpu: 0\n    access:\n"
# The classic "billion laughs": nine levels of nine aliases, 9^9 strings if anything expanded it.
BOMB = ("name: bomb\n"
        "lol: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
        + "threads: *i\n")


def load_text(tmp_path: Path, text: str, overrides: dict[str, str] | None = None, small: bool = False) -> Scenario:
    f = tmp_path / "s.yaml"
    f.write_text(text)
    return load_scenario(str(f), overrides, small=small)


def error(tmp_path: Path, text: str, overrides: dict[str, str] | None = None, small: bool = False) -> str:
    """The one-line message of loading `text` as s.yaml, with the temp directory stripped."""
    with pytest.raises(ScenarioError) as e:
        load_text(tmp_path, text, overrides, small)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 600, msg
    return msg.replace(f"{tmp_path}/", "")


def timed_error(tmp_path: Path, text: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    msg = error(tmp_path, text)
    return msg, time.perf_counter() - t0


# --- 1. anchors and aliases -------------------------------------------------------------------------------------


def _in_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, bounded: a regression to alias expansion must fail, not hang the suite."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_alias_bomb_is_refused_at_its_first_anchor_without_expanding(tmp_path):
    assert len(BOMB) < 600
    f = tmp_path / "s.yaml"
    f.write_text(BOMB)
    p = _in_child("import time\nfrom septlab.scenarios import load_scenario, ScenarioError\nt = time.perf_counter()\n"
                  f"try:\n    load_scenario({str(f)!r})\nexcept ScenarioError as e:\n"
                  "    print(f'{time.perf_counter() - t:.6f}', e)\n")
    took, msg = p.stdout.split(" ", 1)
    assert msg.strip() == f"{f}:2: YAML anchors/aliases are not allowed", p.stdout + p.stderr
    assert float(took) < 0.5


def test_alias_bomb_through_the_cli_in_a_bounded_time(tmp_path):
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB)
    p = _in_child(f"from septlab.cli import main; import sys; sys.argv[1:] = ['run', '--scenario', {str(f)!r}, "
                  "'--variant', 'tdx-free']; main()")
    assert_clean_error(p, "bomb.yaml:2:", "anchors/aliases are not allowed")


@pytest.mark.parametrize("text,line", [
    ("name: &n x\nthreads: []\n", 1),
    ("name: x\nthreads:\n  - &t {kind: zapper, ops: []}\n", 3),
    ("name: x\nthreads: [*undefined]\n", 2),
])
def test_any_anchor_or_alias_is_refused(tmp_path, text, line):
    assert error(tmp_path, text) == f"s.yaml:{line}: YAML anchors/aliases are not allowed"


def test_set_values_refuse_aliases_too():
    with pytest.raises(ScenarioError, match=r"^--set threads=.*: YAML anchors/aliases are not allowed$"):
        load_scenario("seed", {"threads": "[&a {kind: zapper, ops: []}, *a]"})


def test_pure_python_loader_is_as_strict():
    """Without libyaml the loader falls back to PyYAML's own parser: same refusals."""
    loader = _strict_loader(yaml.SafeLoader)
    for text, needle in [(BOMB, "anchors/aliases"), ("a: 1\na: 2\n", "duplicate key"), ("[" * 40 + "]" * 40, "deeper")]:
        with pytest.raises(_Refused, match=needle):
            _load_yaml(text, loader)
    node, data = _load_yaml((BUILTIN_DIR / "seed.yaml").read_text(), loader)
    assert data == _load_yaml((BUILTIN_DIR / "seed.yaml").read_text())[1] == yaml.safe_load(
        (BUILTIN_DIR / "seed.yaml").read_text())


# --- 2. duplicate keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("name: x\nthreads: []\nname: y\n", "s.yaml:3: name: duplicate key (first on line 1)"),
    (VCPU.replace("    access:\n", "    vcpu: 1\n    access: []\n"),
     "s.yaml:5: threads[0].vcpu: duplicate key (first on line 4)"),
    (VCPU + "      - {gfn: 1, gfn: 2}\n", "s.yaml:6: threads[0].access[0].gfn: duplicate key (first on line 6)"),
    ("name: x\nthreads: []\ncheck:\n  max_faults: 1\n  'max_faults': 2\n",
     "s.yaml:5: check.max_faults: duplicate key (first on line 4)"),
])
def test_duplicate_keys_name_the_second_occurrence_and_the_key_path(tmp_path, text, expected):
    assert error(tmp_path, text) == expected


# --- 3. size and nesting limits ---------------------------------------------------------------------------------


def test_file_over_one_mib_is_refused_naming_the_limit(tmp_path):
    text = VCPU + "      - {gfn: 0}\n# " + "x" * MAX_FILE_BYTES + "\n"
    msg, took = timed_error(tmp_path, text)
    assert msg == "s.yaml: larger than the 1 MiB limit for scenario files"
    assert took < 0.5


@pytest.mark.parametrize("text,line,path", [
    ("name: x\nthreads: " + "[" * 100 + "]" * 100 + "\n", 2, "threads" + "[0]" * 31),
    ("name: x\nthreads:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(40)), 18, "threads[0].k0"),
])
def test_nesting_deeper_than_32_levels_is_refused_with_its_line(tmp_path, text, line, path):
    msg = error(tmp_path, text)
    assert msg.startswith(f"s.yaml:{line}: {path}") and msg.endswith("nested deeper than 32 levels"), msg


def test_deep_nesting_never_escapes_as_recursion_error(tmp_path):
    """200,000 nested lists: PyYAML's recursive composer used to raise RecursionError (a traceback)."""
    msg, took = timed_error(tmp_path, "name: x\nthreads: " + "[" * 200_000 + "]" * 200_000 + "\n")
    assert "nested deeper than 32 levels" in msg and took < 1


def test_node_budget_bounds_parse_time(tmp_path):
    msg, took = timed_error(tmp_path, ("name: x\nthreads: [" + "1, " * MiB)[:MiB - 3] + "1]\n")
    assert msg == f"s.yaml:2: more than {MAX_NODES} YAML nodes (values, keys, lists)"
    assert took < 1


@pytest.mark.parametrize("value,needle", [
    ("1" * 5000, "value longer than 4096 characters"),
    ("[" * 50 + "]" * 50, "nested deeper than 32 levels"),
    ("{1: 2}", "mapping keys must be strings"),
    ("[1, 2", "value is not valid YAML"),
    ("\x1b[2J", "value is not valid YAML"),
])
def test_set_values_are_bounded_like_files(value, needle):
    with pytest.raises(ScenarioError) as e:
        load_scenario("seed", {"vcpus": value})
    msg = str(e.value)
    assert msg.startswith("--set vcpus=") and needle in msg and "\n" not in msg and "\x1b" not in msg


def test_set_unknown_key_names_it():
    with pytest.raises(ScenarioError, match=r"^--set bogus=1: unknown key \(scenario keys: name, "):
        load_scenario("seed", {"bogus": "1"})


# --- 4. numeric bounds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,expected", [
    ("      - {gfn: 0xffffffff0, count: 512}\n",
     "s.yaml:6: threads[0].access[0]: gfn 0xffffffff0 + count 512 runs past the GFN space (2^36 pages)"),
    ("      - {gfn: 0}\n      - {gfn: 0xffffffff0, count: 2MiB}\n",
     "s.yaml:7: threads[0].access[1]: gfn 0xffffffff0 + count 2MiB (512 pages) runs past the GFN space (2^36 pages)"),
    ("      - {gfn: 0xfffffffff, count: 2}\n",
     "s.yaml:6: threads[0].access[0]: gfn 0xfffffffff + count 2 runs past the GFN space (2^36 pages)"),
    ("      - {gfn: 0, count: 68719476737}\n",
     "s.yaml:6: threads[0].access[0].count: 68719476737 is greater than the maximum of 68719476736"),
    ("      - {gfn: 0, count: 512TiB}\n", "s.yaml:6: threads[0].access[0].count: '512TiB' is not a whole number of "
                                          "4 KiB pages within the GFN space (2^36 pages)"),
    ("      - {gfn: 0, count: 1K}\n", "s.yaml:6: threads[0].access[0].count: '1K' is not a whole number of "
                                      "4 KiB pages within the GFN space (2^36 pages)"),
    ("      - {gfn: 0, count: \"memory\\n\"}\n", "s.yaml:6: threads[0].access[0].count: 'memory\\n' is not a count: "
                                                 "an integer, a size such as 2MiB, or memory"),
    ("      - {gfn: 0, count: memory}\n",
     "s.yaml:6: threads[0].access[0].count: count memory, but the scenario sets no memory"),
    ("      - {gfn: 0x1000000000}\n",
     "s.yaml:6: threads[0].access[0].gfn: 68719476736 is greater than the maximum of 68719476735"),
])
def test_access_ranges_stay_inside_the_gfn_space(tmp_path, body, expected):
    assert error(tmp_path, VCPU + body) == expected


def test_count_memory_range_uses_the_memory_from_set(tmp_path):
    text = VCPU.replace("name: x\n", "name: x\nmemory: 4KiB\n") + "      - {gfn: 0xfffff0000, count: memory}\n"
    assert load_text(tmp_path, text).memory_pages == 1
    msg = error(tmp_path, text, {"memory": "1GiB"})
    assert msg == ("s.yaml:7: threads[0].access[0]: gfn 0xfffff0000 + count memory (262144 pages) runs past the "
                   "GFN space (2^36 pages)")


def test_conversions_and_image_ranges_are_checked_too(tmp_path):
    zapper = "name: x\nthreads:\n  - kind: zapper\n    ops:\n      - {convert_to_shared: {gfn: 0xfffffffff, count: 4}}\n"
    assert error(tmp_path, zapper) == ("s.yaml:5: threads[0].ops[0].convert_to_shared: gfn 0xfffffffff + count 4 "
                                       "runs past the GFN space (2^36 pages)")
    image = "name: x\nimage:\n  - {gfn: 0, count: 4GiB}\n  - {gfn: 0, count: 1}\nthreads: [{kind: zapper, ops: []}]\n"
    assert error(tmp_path, image) == ("s.yaml:4: image[1]: the image would cover more than 1048576 pages "
                                      "(the model builds them as sets of gfns)")


@pytest.mark.parametrize("key,value,expected", [
    ("memory", "2TiB", "memory: '2TiB' is not a whole number of 4 KiB pages from 4KiB to the 1 TiB limit"),
    ("memory", "6KiB", "memory: '6KiB' is not a whole number of 4 KiB pages from 4KiB to the 1 TiB limit"),
    ("max_steps", "10000000001", "max_steps: 10000000001 is greater than the maximum of 10000000000"),
    ("steps_per_second", "1000001", "steps_per_second: 1000001 is greater than the maximum of 1000000"),
    ("max_faults", "1000001", "max_faults: 1000001 is greater than the maximum of 1000000"),
    ("vcpus", "2.0", "vcpus: 2.0 is not of type 'integer'"),
    ("fault_rate", ".nan", "fault_rate: nan is not of type 'number'"),
])
def test_top_level_numbers_are_bounded_in_the_file_and_in_set(tmp_path, key, value, expected):
    text = f"name: x\n{key}: {value}\n" + VCPU[8:] + "      - {gfn: 0}\n"
    assert error(tmp_path, text) == f"s.yaml:2: {expected}"
    with pytest.raises(ScenarioError) as e:
        load_scenario("seed", {key: value})
    assert str(e.value) == f"--set: {expected}"


@pytest.mark.parametrize("text,expected", [
    ("name: x\nthreads:\n  - kind: zapper\n    ops:\n      - {after: {vcpu: 0, accesses: 10000000001}}\n",
     "s.yaml:5: threads[0].ops[0].after.accesses: 10000000001 is greater than the maximum of 10000000000"),
    ("name: x\nthreads:\n" + "  - {kind: zapper, ops: []}\n" * 257,
     "s.yaml:3: threads: a list of 257 item(s): at most 256 items allowed"),
    (VCPU + "      - {gfn: 1}\n" * 2049, "s.yaml:6: threads[0].access: a list of 2049 item(s): at most 2048 items allowed"),
    ("name: x\nthreads:\n  - kind: zapper\n    ops:\n      - {zap_all_fast: true, after: {vcpu: 0, accesses: 1}}\n",
     "s.yaml:5: threads[0].ops[0]: a mapping with 2 key(s): at most 1 key allowed"),
])
def test_lists_and_counts_are_bounded(tmp_path, text, expected):
    assert error(tmp_path, text) == expected


@pytest.mark.parametrize("name", builtin_names())
def test_builtins_stay_valid_in_both_configurations(name):
    full, small = load_scenario(name), load_scenario(name, small=True)
    assert full.name == small.name == name
    for scn in (full, small):
        for spec in scn.data["threads"]:
            for a in spec.get("access", []):
                assert a["gfn"] + scn.count(a.get("count")) <= GFN_SPACE


def test_builtin_load_stays_fast():
    load_scenario("seed")
    t0 = time.perf_counter()
    for _ in range(10):
        load_scenario("conversion-storm", small=True)
    assert (time.perf_counter() - t0) / 10 < 0.1


# --- 5. the check: block ----------------------------------------------------------------------------------------


CHECKED = VCPU.replace("name: x\n", "name: x\nvcpus: 2\n") + "      - {gfn: 0}\n"


@pytest.mark.parametrize("small", [False, True])
@pytest.mark.parametrize("block,expected", [
    ("check:\n  bogus: 1\n", "s.yaml:9: check: unknown key(s) 'bogus' (allowed: name, description, vcpus, memory, "),
    ("check:\n  vcpus: 0\n", "s.yaml:9: check.vcpus: 0 is less than the minimum of 1"),
    ("check:\n  memory: 2TiB\n", "s.yaml:9: check.memory: '2TiB' is not a whole number of 4 KiB pages"),
    ("check:\n  threads:\n    - {kind: vcpu, vcpu: 0, access: [{gfn: 0xfffffffff, count: 4}]}\n",
     "s.yaml:10: check.threads[0].access[0]: gfn 0xfffffffff + count 4 runs past the GFN space"),
    ("check:\n  check: {}\n", "s.yaml:9: check: unknown key(s) 'check'"),
    ("check: 3\n", "s.yaml:8: check: 3 is not of type 'object'"),
])
def test_check_block_is_validated_like_the_top_level(tmp_path, block, expected, small):
    msg = error(tmp_path, CHECKED + block, small=small)
    assert msg.startswith(expected), msg


def test_small_configuration_errors_point_into_the_check_block(tmp_path):
    block = "check:\n  vcpus: 1\n  threads:\n    - {kind: vcpu, vcpu: 0, access: [{gfn: 0}]}\n    - {kind: vcpu, vcpu: 1, access: []}\n"
    assert load_text(tmp_path, CHECKED + block).vcpus == 2
    assert error(tmp_path, CHECKED + block, small=True) == \
        "s.yaml:12: check.threads[1].vcpu: must be unique and < vcpus (1)"


@pytest.mark.parametrize("block,expected", [
    ("swarm:\n  - {bogus: 1}\n", "s.yaml:9: swarm[0]: unknown key(s) 'bogus'"),
    ("swarm:\n  - {}\n  - {vcpus: 0}\n", "s.yaml:10: swarm[1].vcpus: 0 is less than the minimum of 1"),
    ("swarm:\n  - threads:\n      - {kind: vcpu, vcpu: 0, access: [{gfn: 0xfffffffff, count: 4}]}\n",
     "s.yaml:10: swarm[0].threads[0].access[0]: gfn 0xfffffffff + count 4 runs past the GFN space"),
    ("swarm:\n  - {}\n  - threads:\n      - {kind: vcpu, vcpu: 0, access: []}\n      - {kind: vcpu, vcpu: 0, access: []}\n",
     "s.yaml:11: swarm[1].threads[0].vcpu: must be unique"),  # a cross-field error of one alternative
    ("swarm: {}\n", "s.yaml:8: swarm: a mapping with 0 key(s) is not of type 'array'"),
])
def test_swarm_alternatives_are_validated_where_they_are_written(tmp_path, block, expected):
    msg = error(tmp_path, CHECKED + block)
    assert msg.startswith(expected), msg


def test_swarm_spreads_seeds_over_the_alternatives_and_the_small_configuration_has_none(tmp_path):
    text = CHECKED + "swarm:\n  - {vcpus: 3}\n  - {vcpus: 4, fault_rate: 0.5}\n"
    scn = load_text(tmp_path, text)
    assert [scn.alternative(s).vcpus for s in range(6)] == [2, 3, 4, 2, 3, 4]
    assert scn.alternative(5).fault_rate == 0.5 and scn.alternative(0) is scn
    assert load_scenario(str(tmp_path / "s.yaml"), small=True).swarm == []
    # --set applies to every alternative; the digest (what a trace pins) covers the alternatives
    assert load_scenario(str(tmp_path / "s.yaml"), {"vcpus": "5"}).alternative(1).vcpus == 5
    other = load_text(tmp_path, CHECKED + "swarm:\n  - {vcpus: 3}\n  - {vcpus: 4, fault_rate: 0.25}\n")
    assert other.digest != scn.digest


# --- 6. names and descriptions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ['"../../etc/passwd"', '"a b"', '"\\e[31mred"', "x" * 65, '""', "-x"])
def test_name_must_be_a_safe_identifier(tmp_path, name):
    msg = error(tmp_path, f"name: {name}\n" + VCPU[8:] + "      - {gfn: 0}\n")
    assert msg.startswith("s.yaml:1: name: ") and "is not a safe name" in msg and "\x1b" not in msg


@pytest.mark.parametrize("escape,code", [("\\e", "001B"), ("\\x9b", "009B"), ("\\u202e", "202E"), ("\\0", "0000")])
def test_description_refuses_control_characters(tmp_path, escape, code):
    text = f'name: x\ndescription: "fine {escape}[2J"\n' + VCPU[8:] + "      - {gfn: 0}\n"
    assert error(tmp_path, text) == f"s.yaml:2: description: control character U+{code} at offset 5 is not allowed"


def test_description_is_bounded_and_newlines_are_fine(tmp_path):
    ok = "name: x\ndescription: |\n  two\n  lines\n" + VCPU[8:] + "      - {gfn: 0}\n"
    assert load_text(tmp_path, ok).description == "two lines"
    msg = error(tmp_path, "name: x\ndescription: " + "d" * 4097 + "\n" + VCPU[8:] + "      - {gfn: 0}\n")
    assert msg.startswith("s.yaml:2: description: 'ddd") and msg.endswith("at most 4096 characters allowed")


# --- 7. big instances never reach a message whole ---------------------------------------------------------------


@pytest.mark.parametrize("body", [
    'name: x\nthreads: "{}"\n',
    "name: x\ndescription: ok\nthreads: 17\nlol: \"{}\"\n",
    "name: x\nthreads: [{{kind: vcpu, vcpu: 0, access: [{{gfn: 0, count: \"{}\"}}]}}]\n",
])
def test_one_mib_scenario_with_a_schema_error_fails_fast_and_short(tmp_path, body):
    text = body.format("a" * (MiB - len(body)))
    assert len(text.encode()) <= MAX_FILE_BYTES
    msg, took = timed_error(tmp_path, text)
    assert took < 1 and len(msg) < 300, (took, msg)


def test_one_mib_of_many_small_items_fails_fast(tmp_path):
    ops = "".join("      - {convert_to_shared: {gfn: 1, count: 1}}\n" for _ in range(1420))
    body = "name: x\nthreads:\n  - kind: zapper\n    ops:\n" + ops + "      - {bogus: 1}\n"
    text = "#" + "x" * (MiB - len(body) - 3) + "\n" + body
    msg, took = timed_error(tmp_path, text)
    assert msg == ("s.yaml:1426: threads[0].ops[1420]: unknown key(s) 'bogus' "
                   "(allowed: convert_to_shared, after, zap_all_fast, munmap, madvise_dontneed, migrate, age, memslot_recreate)")
    assert took < 1


# --- 8. anything else is still a one-line ScenarioError ---------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("{[1, 2]: 3}\n", "s.yaml:1: (top level): mapping keys must be strings, got a list"),
    ("name: x\n? !!binary aGVsbG8=\n: 3\n", "s.yaml:2: (top level): mapping keys must be strings, got binary aGVsbG8="),
    ("name: x\n1: 3\n", "s.yaml:2: (top level): mapping keys must be strings, got int 1 (quote it)"),
    ("name: x\nyes: 3\n", "s.yaml:2: (top level): mapping keys must be strings, got bool yes (quote it)"),
    ("name: x\n<<: {threads: []}\n", "s.yaml:2: (top level): mapping keys must be strings, got a merge key (<<)"),
    ("name: x\nmax_steps: " + "9" * 5000 + "\n", "s.yaml:2: a number longer than 64 characters"),
    ("name: x\nmax_steps: 1" + ":1" * 50_000 + "\n", "s.yaml:2: a number longer than 64 characters"),
    ("name: x\nmax_steps: 2001-13-45\n", "s.yaml:2: cannot read this timestamp value (ValueError)"),
    ("name: !!python/object:os.system x\n", "s.yaml:1: YAML error: could not determine a constructor for the tag "
                                            "'tag:yaml.org,2002:python/object:os.system'"),
    ("name: x\n---\nname: y\n", "s.yaml:2: YAML error: expected a single document in the stream, but found "
                                "another document"),
    ("", "s.yaml:1: top level must be a mapping with name and threads, got NoneType"),
    ("name: x\nthreads: !!set {a, b}\n", "s.yaml:2: threads: a set value is not of type 'array'"),
])
def test_weird_yaml_is_a_one_line_error(tmp_path, text, expected):
    assert error(tmp_path, text) == expected


@pytest.mark.parametrize("spec", ["x" * 5000, "a\x00b", "\x1b[2Jnope.yaml", "../builtin/seed"])
def test_unloadable_specs_are_one_line(spec):
    with pytest.raises(ScenarioError) as e:
        load_scenario(spec)
    msg = str(e.value)
    assert "no such scenario file or built-in" in msg and "\x1b" not in msg and "\x00" not in msg and len(msg) < 600


@pytest.mark.parametrize("exc,needle", [
    (RecursionError("maximum recursion depth exceeded"), "scenario too large or too deeply nested (RecursionError)"),
    (MemoryError(), "scenario too large or too deeply nested (MemoryError)"),
    (KeyError("\x1b[2J"), "cannot load scenario: KeyError: '\\x1b[2J'"),
])
def test_unexpected_failures_inside_the_loader_become_one_line_errors(monkeypatch, exc, needle):
    """Belt and braces: should a yaml/jsonschema corner still raise, the user sees a ScenarioError."""
    def boom(*_args: object) -> None:
        raise exc
    monkeypatch.setattr("septlab.scenarios._load_yaml", boom)
    with pytest.raises(ScenarioError) as e:
        load_scenario("seed")
    assert str(e.value) == f"seed: {needle}"


def test_cli_reports_range_and_set_errors_on_one_line(tmp_path):
    f = tmp_path / "wrap.yaml"
    f.write_text("name: wrap\nthreads:\n  - kind: zapper\n    ops: []\n  - kind: vcpu\n    vcpu: 0\n    access:\n"
                 "      - {gfn: 0xffffffff0, count: 512}\n")
    assert_clean_error(septlab("run", "--scenario", str(f), "--variant", "tdx-free"),
                       "wrap.yaml:8: threads[1].access[0]: gfn 0xffffffff0 + count 512 runs past the GFN space (2^36 pages)")
    assert_clean_error(septlab("run", "--scenario", "boot-teardown", "--variant", "tdx-free", "--set", "memory=2TiB"),
                       "--set: memory:", "1 TiB limit")


# --- property: whatever the text, a Scenario or a one-line ScenarioError ----------------------------------------


KEYS = ["name", "description", "vcpus", "memory", "threads", "check", "faults", "image", "count", "gfn", "kind",
        "vcpu", "access", "ops", "after", "max_steps", "fault_rate"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["vcpu", "zapper", "memory", "2MiB", "1TiB", "x"]))
TREES = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=5), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), kids, max_size=5)),
    max_leaves=30)
BUILTIN_TEXTS = [(BUILTIN_DIR / f"{n}.yaml").read_text() for n in builtin_names()]


@st.composite
def mutated_builtin(draw: st.DrawFn) -> str:
    """A built-in with a few slices replaced by random text, YAML punctuation or another slice."""
    text = draw(st.sampled_from(BUILTIN_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 20)))
        piece = draw(st.one_of(st.text(max_size=10), st.sampled_from(
            ["&a ", "*a", "- ", ": ", "{", "]", "\n  ", "!!binary ", "0xfffffffff", "memory", "<<: ", "? "]),
            st.just(text[j:j + 30])))
        text = text[:i] + piece + text[j:]
    return text


# Scenario-shaped documents with values on both sides of every bound, so that most reach validation.
GFNS = st.one_of(st.integers(0, 64), st.integers(GFN_SPACE - 600, GFN_SPACE + 1), st.floats(0, 4))
COUNTS = st.one_of(st.integers(-1, 1024), st.integers(GFN_SPACE - 1, GFN_SPACE + 1), st.sampled_from(
    ["memory", "2MiB", "4K", "1K", "6KiB", "512TiB", "memory\n", " 8KiB "]))
RANGES = st.fixed_dictionaries({"gfn": GFNS}, optional={"count": COUNTS})
OPS = st.one_of(RANGES.map(lambda r: {"convert_to_shared": r}), st.just({"zap_all_fast": True}),
                st.builds(lambda v, n: {"after": {"vcpu": v, "accesses": n}}, st.integers(0, 4), st.integers(0, 10**11)))
THREADS = st.lists(st.one_of(
    st.builds(lambda v, acc: {"kind": "vcpu", "vcpu": v, "access": acc}, st.integers(0, 4),
              st.lists(st.fixed_dictionaries({"gfn": GFNS}, optional={"count": COUNTS, "shared": st.booleans()}),
                       max_size=3)),
    st.builds(lambda ops: {"kind": "zapper", "ops": ops}, st.lists(OPS, max_size=3))), min_size=1, max_size=3)
CONFIG = {"vcpus": st.integers(0, 65), "memory": st.sampled_from(["4KiB", "1GiB", "1TiB", "2TiB", "6K", "0", "1 T"]),
          "image": st.lists(RANGES, max_size=2), "max_steps": st.integers(0, 2 * 10**10),
          "fault_rate": st.one_of(st.floats(-1, 2), st.just(math.nan)), "max_faults": st.integers(-1, 2 * 10**6)}
SCENARIOS = st.fixed_dictionaries(
    {"name": st.one_of(st.just("x"), st.just("my-scenario.v2"), st.text(max_size=70)), "threads": THREADS},
    optional={**CONFIG, "description": st.text(max_size=30), "check": st.fixed_dictionaries({}, optional={**CONFIG, "threads": THREADS})})


class _NoAliasDumper(yaml.SafeDumper):
    """Writes a shared object out again instead of as an alias, so generated documents do not all hit the
    alias refusal."""

    def ignore_aliases(self, data: object) -> bool:
        return True


DOCUMENTS = st.one_of(st.text(max_size=200), TREES.map(lambda t: yaml.safe_dump(t, allow_unicode=True)),
                      mutated_builtin(), SCENARIOS.map(lambda t: yaml.dump(t, Dumper=_NoAliasDumper, allow_unicode=True)))


def assert_within_bounds(scn: Scenario, raw: dict) -> None:
    """What a loaded scenario promises the model: a safe name and description, whole-int vCPU ids below
    vcpus, memory within 1 TiB, and every gfn range inside the GFN space."""
    assert NAME_RE.match(scn.name) and not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", raw.get("description", ""))
    assert 1 <= scn.vcpus <= 64 and scn.memory_pages <= (1 << 40) // 4096
    for spec in scn.data["threads"]:
        assert spec["kind"] != "vcpu" or type(spec["vcpu"]) is int and spec["vcpu"] < scn.vcpus
        items = spec.get("access", []) + [op["convert_to_shared"] for op in spec.get("ops", []) if "convert_to_shared" in op]
        for a in items + scn.data.get("image", []):
            count = scn.count(a.get("count"))
            assert type(a["gfn"]) is int and type(count) is int and count >= 1 and a["gfn"] + count <= GFN_SPACE


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=DOCUMENTS, small=st.booleans())
def test_any_text_loads_or_fails_with_one_line(text, small):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "fuzz.yaml"
        f.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            scn = load_scenario(str(f), small=small)
        except ScenarioError as e:
            msg = str(e)
            assert msg and "\n" not in msg and len(msg) < 700, msg
            return
    assert isinstance(scn, Scenario)
    assert_within_bounds(scn, yaml.safe_load(text))


def test_after_more_accesses_than_the_vcpu_makes_is_refused(tmp_path):
    """A zapper waiting for an access that never comes would show up as a (false) deadlock."""
    text = ("name: x\nvcpus: 2\nthreads:\n  - {kind: vcpu, vcpu: 0, access: [{gfn: 1, count: 3}]}\n"
            "  - kind: zapper\n    ops:\n      - after: {vcpu: 0, accesses: 4}\n")
    msg = error(tmp_path, text)
    assert ":7:" in msg and "threads[1].ops[0].after.accesses" in msg and "wait forever" in msg
    assert "wait forever" in error(tmp_path, text.replace("vcpu: 0, accesses: 4", "vcpu: 1, accesses: 1"))
    load_text(tmp_path, text.replace("accesses: 4", "accesses: 3"))
