"""Model code never imports the explorers, checkers, metrics or CLI (it must not know how it is run)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "septlab"
MODEL = ["host", "tdx_module", "virt", "kvm"]
FORBIDDEN = ("septlab.explore", "septlab.check", "septlab.metrics", "septlab.cli", "septlab.scenarios")


def _imports(path: Path) -> list[str]:
    mod = "septlab." + ".".join(path.relative_to(PKG).with_suffix("").parts)
    pkg = mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                out.append(".".join(base + ([node.module] if node.module else [])))
            else:
                out.append(node.module or "")
    return out


def test_model_layers_do_not_import_explorers_or_checkers():
    offenders = []
    for layer in MODEL:
        for f in (PKG / layer).rglob("*.py"):
            for imp in _imports(f):
                if imp.startswith(FORBIDDEN):
                    offenders.append(f"{f.relative_to(PKG)} imports {imp}")
    assert offenders == []


def test_arrows_point_down_the_stack():
    """kvm -> virt -> tdx_module; kvm -> host; the TDX module knows nothing of the kernel."""
    for f in (PKG / "tdx_module").rglob("*.py"):
        assert not [i for i in _imports(f) if i.startswith(("septlab.kvm", "septlab.virt", "septlab.host"))], f
    for f in (PKG / "host").rglob("*.py"):
        assert not [i for i in _imports(f) if i.startswith(("septlab.kvm", "septlab.virt"))], f
    for f in (PKG / "virt").rglob("*.py"):
        assert not [i for i in _imports(f) if i.startswith("septlab.kvm")], f


def test_every_model_function_has_a_docstring_naming_what_it_models():
    missing = []
    for layer in MODEL:
        for f in (PKG / layer).rglob("*.py"):
            tree = ast.parse(f.read_text())
            assert ast.get_docstring(tree), f"{f} has no module docstring"
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and not ast.get_docstring(node):
                    missing.append(f"{f.relative_to(PKG)}:{node.lineno} {node.name}")
    assert missing == []
