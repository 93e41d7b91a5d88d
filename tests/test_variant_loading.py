"""Variant loading: user files never change the registry, every variant is checked at load, and
whatever a user's file does is one VariantError line naming it."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import pytest

import septlab.variants as V
from septlab.variants import (
    Variant,
    VariantError,
    get_variant,
    load_variant_file,
    registry,
    resolve_variants,
    validate_variant,
)
from tests.test_cli import assert_clean_error, septlab

HEAD = "from septlab.variants import Variant\n"
GEN_TRACK = "def tdx_track(kvm):\n    return 0\n    yield\n"


def write(tmp_path: Path, body: str, name: str = "v.py") -> Path:
    f = tmp_path / name
    f.write_text(body)
    return f


def load_error(tmp_path: Path, body: str, name: str = "v.py") -> str:
    """The one-line message loading `body` gives (it must name the file)."""
    f = write(tmp_path, body, name)
    with pytest.raises(VariantError) as ei:
        load_variant_file(f)
    msg = str(ei.value)
    assert "\n" not in msg and "\x1b" not in msg, msg
    assert name in msg, msg
    return msg


# --- names ----------------------------------------------------------------------------------------

def test_user_variant_named_like_a_builtin_is_refused_and_registry_untouched(tmp_path):
    before = dict(registry())
    msg = load_error(tmp_path, HEAD + GEN_TRACK + "VARIANT = Variant('tdx-free', 'mine', {'tdx_track': tdx_track})\n")
    assert "variant name 'tdx-free' is already a built-in variant; give yours another name" in msg
    assert load_error(tmp_path, HEAD + "VARIANT = Variant('TDX-Free', 'mine')\n", "w.py")  # case does not help
    assert dict(registry()) == before
    assert registry()["tdx-free"].overrides == {}


def test_registry_unchanged_after_loading_a_user_variant(tmp_path):
    before = dict(registry())
    v = load_variant_file(write(tmp_path, HEAD + GEN_TRACK + "VARIANT = Variant('mine', 'd', {'tdx_track': tdx_track})\n"))
    assert v.name == "mine" and v.source == str((tmp_path / "v.py").resolve())
    assert dict(registry()) == before and "mine" not in registry()
    with pytest.raises(TypeError):
        registry()["mine"] = v  # type: ignore[index]
    with pytest.raises(VariantError, match="unknown variant 'mine'"):
        get_variant("mine")


def test_two_files_with_the_same_name_are_refused(tmp_path):
    a = write(tmp_path, HEAD + "VARIANT = Variant('same', 'a')\n", "a.py")
    b = write(tmp_path, HEAD + "VARIANT = Variant('same', 'b')\n", "b.py")
    with pytest.raises(VariantError, match=r"two variants are named 'same': .*a\.py and .*b\.py"):
        resolve_variants([str(a), str(b)])
    with pytest.raises(VariantError, match="listed twice"):
        resolve_variants(["tdx-free", "tdx-free"])
    assert [v.name for v in resolve_variants(["tdx-free", str(a), "rcu-free"])] == ["tdx-free", "same", "rcu-free"]


@pytest.mark.parametrize("name", ["", "-x", "../etc", "a/b", "a b", "x" * 65, "tab\there", "esc\x1b[31m", "ok\n",
                                  "ünïcode"])
def test_bad_names(tmp_path, name):
    msg = load_error(tmp_path, HEAD + f"VARIANT = Variant({name!r}, 'd')\n")
    assert "variant name" in msg and "not allowed" in msg


def test_good_names_and_control_characters_in_text(tmp_path):
    for i, name in enumerate(["a", "my-design", "v1.2+dpamt", "Mine_2", "x" * 64]):
        assert load_variant_file(write(tmp_path, HEAD + f"VARIANT = Variant({name!r}, 'd')\n", f"g{i}.py")).name == name
    msg = load_error(tmp_path, HEAD + "VARIANT = Variant('esc', 'red \\x1b[31m text')\n")
    assert "description contains the control character '\\x1b'" in msg
    assert "control character" in load_error(tmp_path, HEAD + "VARIANT = Variant('rtl', 'a \\u202e b')\n", "r.py")
    assert "kind must be" in load_error(tmp_path, HEAD + "VARIANT = Variant('k', 'd', kind='bug')\n", "k.py")


# --- whatever the file does at import --------------------------------------------------------------

@pytest.mark.parametrize("body,needle", [
    ("import sys\nsys.exit(0)\n", "it called sys.exit(0) while being imported"),
    ("raise SystemExit('bye')\n", "sys.exit('bye')"),
    ("raise RuntimeError('boom\\nsecond line')\n", "RuntimeError: boom\\nsecond line"),
    ("raise GeneratorExit\n", "GeneratorExit"),
    ("def f(:\n", "SyntaxError"),
    ("import no_such_module_for_septlab\n", "ModuleNotFoundError"),
    ("VARIANT = 3\n", "VARIANT is a int"),
    ("x = 1\n", "defines no VARIANT"),
])
def test_import_time_failures_are_variant_errors(tmp_path, body, needle):
    assert needle in load_error(tmp_path, body)


def test_keyboard_interrupt_is_not_swallowed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        load_variant_file(write(tmp_path, "raise KeyboardInterrupt\n"))


def test_cli_sys_exit_at_import_is_exit_2_one_line(tmp_path):
    f = write(tmp_path, "import sys\nsys.exit(0)\n")
    assert_clean_error(septlab("run", "--scenario", "seed", "--variant", str(f)), "v.py", "sys.exit(0)")


def test_cli_name_collision_is_exit_2_one_line(tmp_path):
    f = write(tmp_path, HEAD + GEN_TRACK + "VARIANT = Variant('tdx-free', 'mine', {'tdx_track': tdx_track})\n")
    assert_clean_error(septlab("compare", "--scenario", "seed", "--variants", f"tdx-free,{f}", "--schedules", "1"),
                       "v.py", "already a built-in variant")


# --- hooks --------------------------------------------------------------------------------------------

def test_hook_must_be_a_generator(tmp_path):
    msg = load_error(tmp_path, HEAD + "def tdx_track(kvm):\n    return 0\n"
                     "VARIANT = Variant('x', 'd', {'tdx_track': tdx_track})\n")
    assert "hook tdx_track(kvm) must be a generator function like the kernel's tdx_track(kvm): it has no yield" in msg
    msg = load_error(tmp_path, HEAD + "async def t(kvm):\n    return 0\n"
                     "VARIANT = Variant('x', 'd', {'tdx_track': t})\n")
    assert "hook tdx_track = t(kvm)" in msg and "it is async" in msg


def test_plain_hook_must_not_be_a_generator(tmp_path):
    msg = load_error(tmp_path, HEAD + "def is_page_fault_stale(vcpu, fault):\n    yield\n"
                     "VARIANT = Variant('x', 'd', {'is_page_fault_stale': is_page_fault_stale})\n")
    assert "must be a plain function like the kernel's is_page_fault_stale(vcpu, fault)" in msg


@pytest.mark.parametrize("sig,needle", [
    ("kvm, sp, extra", "missing a required argument: 'extra'"),
    ("kvm", "too many positional arguments"),
    ("kvm, sp, *, flag", "missing a required argument: 'flag'"),
])
def test_wrong_parameters(tmp_path, sig, needle):
    msg = load_error(tmp_path, HEAD + f"def f({sig}):\n    return 0\n    yield\n"
                     "VARIANT = Variant('x', 'd', {'tdp_mmu_free_sp': f})\n")
    assert f"hook tdp_mmu_free_sp = f({sig})" in msg and "the kernel's tdp_mmu_free_sp(kvm, sp)" in msg
    assert needle in msg


def test_varargs_hook_must_accept_the_extra_arguments(tmp_path):
    msg = load_error(tmp_path, HEAD + "def tdh_do_no_vcpus(fn, kvm, a):\n    return 0\n    yield\n"
                     "VARIANT = Variant('x', 'd', {'tdh_do_no_vcpus': tdh_do_no_vcpus})\n")
    assert "tdh_do_no_vcpus(fn, kvm, *args)" in msg


def test_non_callable_and_wrong_value_type(tmp_path):
    msg = load_error(tmp_path, HEAD + "VARIANT = Variant('x', 'd', {'tdx_track': 3})\n")
    assert "hook tdx_track must be a function like the kernel's tdx_track(kvm), not int 3" in msg
    for bad in ("'no'", "0", "None"):
        msg = load_error(tmp_path, HEAD + f"VARIANT = Variant('x', 'd', {{'pamt_get_at_link': {bad}}})\n")
        assert "hook pamt_get_at_link must be a bool like the kernel's (True)" in msg
    assert load_variant_file(write(tmp_path, HEAD + "VARIANT = Variant('x', 'd', {'pamt_get_at_link': False})\n",
                                   "ok.py")).overrides == {"pamt_get_at_link": False}


def test_unknown_hook_message_stays(tmp_path):
    msg = load_error(tmp_path, HEAD + "VARIANT = Variant('x', 'y', {'no_such_hook': 1})\n")
    assert "unknown hook 'no_such_hook'" in msg


def test_wrapped_and_partial_generators_are_accepted():
    def track_with(extra, kvm):
        return extra
        yield

    def deco(f):
        @functools.wraps(f)
        def w(*a, **k):
            return f(*a, **k)  # returns the generator: still a generator hook
        return w

    @deco
    def tdx_track(kvm):
        return 0
        yield

    class Track:
        def __call__(self, kvm):
            return 0
            yield

    for fn in (functools.partial(track_with, 0), tdx_track, Track()):
        validate_variant(Variant("ok", "d", {"tdx_track": fn}), "test")
    with pytest.raises(VariantError, match="no yield"):
        validate_variant(Variant("no", "d", {"tdx_track": functools.partial(lambda extra, kvm: 0, 0)}), "test")


def test_readme_example_loads(tmp_path):
    """The README's "Adding a variant" example must pass the loading rules as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Adding a variant", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    v = load_variant_file(write(tmp_path, code, "readme_variant.py"))
    assert v.overrides and v.name not in registry()
    v.build_ops()


# --- base chain -------------------------------------------------------------------------------------

def test_base_must_be_registered(tmp_path):
    v = load_variant_file(write(tmp_path, HEAD + "VARIANT = Variant('on-rcu', 'd', base='rcu-free')\n"))
    assert v.build_ops().tdp_mmu_free_sp is registry()["rcu-free"].overrides["tdp_mmu_free_sp"]
    msg = load_error(tmp_path, HEAD + "VARIANT = Variant('x', 'd', base='no-such')\n", "w.py")
    assert "unknown base 'no-such'" in msg


class FakeEntryPoint:
    def __init__(self, name: str, obj: object = None, exc: BaseException | None = None):
        self.name, self.value, self._obj, self._exc = name, f"plugin.{name}:VARIANT", obj, exc

    def load(self) -> object:
        if self._exc is not None:
            raise self._exc
        return self._obj


@pytest.fixture
def plugins(monkeypatch):
    """Rebuild the registry with fake entry points; the real one is restored afterwards."""
    eps: list[FakeEntryPoint] = []
    monkeypatch.setattr(V, "_REGISTRY", None)
    monkeypatch.setattr(V, "_ORIGINS", {})
    monkeypatch.setattr(V, "REGISTRY_WARNINGS", [])
    monkeypatch.setattr(V, "entry_points", lambda group: list(eps))
    return eps


def test_entry_points_never_crash_registry_nor_replace_builtins(plugins):
    def track(kvm):
        return 0
        yield

    plugins += [
        FakeEntryPoint("boom", exc=RuntimeError("broken plugin")),
        FakeEntryPoint("exits", exc=SystemExit(3)),
        FakeEntryPoint("shadow", Variant("tdx-free", "evil", {"tdx_track": track})),
        FakeEntryPoint("bad-hook", Variant("plug-bad", "d", {"tdx_track": 3})),
        FakeEntryPoint("cyc-a", Variant("cyc-a", "d", base="cyc-b")),
        FakeEntryPoint("cyc-b", Variant("cyc-b", "d", base="cyc-a")),
        FakeEntryPoint("good", SimpleNamespace(VARIANT=Variant("plug-good", "d", {"tdx_track": track}, base="rcu-free"))),
    ]
    reg = registry()
    assert reg["tdx-free"].overrides == {} and "plug-good" in reg
    assert not {"plug-bad", "cyc-a", "cyc-b"} & set(reg)
    warnings = "\n".join(V.REGISTRY_WARNINGS)
    for needle in ("broken plugin", "sys.exit(3)", "'tdx-free' is already a built-in variant", "hook tdx_track",
                   "base cycle"):
        assert needle in warnings, warnings
    assert len(V.REGISTRY_WARNINGS) == 6


def test_user_file_named_like_an_entry_point(plugins, tmp_path):
    plugins.append(FakeEntryPoint("good", Variant("plug-good", "d")))
    msg = load_error(tmp_path, HEAD + "VARIANT = Variant('plug-good', 'd')\n")
    assert "variant name 'plug-good' is already a registered variant (entry point good" in msg


def test_base_cycle_via_chain():
    """Following bases must end: a cycle (which registry() drops for plug-ins) is an error, not a hang."""
    a, b = Variant("cyc-a", "d", base="cyc-b"), Variant("cyc-b", "d", base="cyc-a")
    with pytest.raises(VariantError, match="base cycle cyc-a -> cyc-b -> cyc-a"):
        V._check_base_chain(a, "test", {"cyc-a": a, "cyc-b": b})
    with pytest.raises(VariantError, match="base cycle self -> self"):
        V._check_base_chain(Variant("self", "d", base="self"), "test", {"self": Variant("self", "d", base="self")})


# --- built-ins and get_variant ---------------------------------------------------------------------

def test_all_builtins_validate():
    reg = registry()
    assert {"tdx-free", "rcu-free", "tdx-alloc-hook"} <= set(reg)
    for v in reg.values():
        validate_variant(v)
        v.build_ops()
    assert V.REGISTRY_WARNINGS == []


def test_get_variant_allow_files(tmp_path):
    f = write(tmp_path, HEAD + "VARIANT = Variant('mine', 'd')\n")
    assert get_variant(str(f)).name == "mine"
    with pytest.raises(VariantError, match="names a variant file; a trace never loads code: pass --variant FILE"):
        get_variant(str(f), allow_files=False)
    assert get_variant("tdx-free", allow_files=False) is registry()["tdx-free"]
    with pytest.raises(VariantError, match="a variant is a name or a .py file, not int"):
        get_variant(3)  # type: ignore[arg-type]


# --- call chains through a user's code ---------------------------------------------------------------

USER_REORDER = '''
from septlab.variants import Variant
from septlab.variants.bugs import reclaim_hkid_assigned as bug


def my_reclaim_and_free(kvm, sp):  # an outsider's own function on the RECLAIM path
    return (yield from bug.tdx_sept_free_private_spt(kvm, sp))


VARIANT = Variant("user-reorder", "teardown before HKID release, RECLAIM unguarded",
                  {"free_external_spt": my_reclaim_and_free, "kvm_destroy_vm": bug.kvm_destroy_vm}, kind="mutant")
'''


def test_user_variant_functions_appear_in_the_reports_call_chain(tmp_path):
    """An outsider's replaced functions are model code in reports: the chain of the WARN runs through
    them (it used to stop at the first frame outside the septlab package, dropping exactly the code
    under review)."""
    from septlab.explore.driver import run_schedule
    from septlab.scenarios import load_scenario

    var = load_variant_file(write(tmp_path, USER_REORDER, "reorder.py"))
    r = run_schedule(load_scenario("boot-teardown", {"memory": "16KiB"}), var, False, 0)
    v = next(v for v in r.violations if v.invariant == "seamcall-unexpected-error")
    chain = list(v.details["chain"])
    # (12 frames deep, the chain's limit: the destroy path's outer frames are above it)
    assert "my_reclaim_and_free" in chain, " > ".join(chain)
    assert chain.index("handle_removed_pt") < chain.index("my_reclaim_and_free") < chain.index(
        "tdx_sept_free_private_spt") < chain.index("tdx_reclaim_page")


def test_unknown_hook_suggests_the_near_kernel_name(tmp_path):
    """A typo in a kernel function's name gets the modelled names it is close to."""
    msg = load_error(tmp_path, HEAD + "def tdx_sept_free_private_sp(kvm, sp):\n    return 0\n    yield\n"
                     "VARIANT = Variant('typo-x', 'x', {'tdx_sept_free_private_sp': tdx_sept_free_private_sp})\n")
    assert "did you mean tdx_sept_free_private_spt" in msg, msg
