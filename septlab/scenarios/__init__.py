"""Scenarios: YAML files (safe-loaded, schema-validated) describing the TD, its tasks and fault model.

Errors name the file, the line and the field, in one line: `seed.yaml:12: threads[0].kind: 'vpcu' is
not one of ['vcpu', 'zapper']`. Built-ins live in builtin/; `--set key=value` overrides top-level keys.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..tdx_module import errno as E

BUILTIN_DIR = Path(__file__).parent / "builtin"
SIZE_RE = re.compile(r"^\s*(\d+)\s*(KiB|MiB|GiB|TiB|K|M|G|T)?\s*$")
_UNITS = {None: 1, "K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20, "G": 1 << 30, "GiB": 1 << 30,
          "T": 1 << 40, "TiB": 1 << 40}


class ScenarioError(Exception):
    """Bad scenario input (exit status 2); str() is the one-line message."""


COUNT = {"oneOf": [{"type": "integer", "minimum": 1},
                   {"type": "string", "pattern": r"^(memory|\d+\s*(KiB|MiB|GiB|TiB|K|M|G|T)?)$"}]}
GFN = {"type": "integer", "minimum": 0, "maximum": (1 << 36) - 1}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "threads"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "vcpus": {"type": "integer", "minimum": 1, "maximum": 64},
        "memory": {"type": "string", "pattern": SIZE_RE.pattern},
        "cache_capacity": {"type": "integer", "minimum": 5, "maximum": 512},
        "history": {"type": "boolean"},
        "fault_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "max_steps": {"type": "integer", "minimum": 1},
        "max_retries": {"type": "integer", "minimum": 1},
        "max_faults": {"type": "integer", "minimum": 0, "description": "at most this many injected failures per run"},
        "check": {"type": "object", "description": "overrides for the small configuration `septlab check` explores"},
        "image": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["gfn"],
            "properties": {"gfn": GFN, "count": COUNT}}},
        "faults": {"type": "object", "propertyNames": {"enum": sorted(E.LEAF_BY_NAME)},
                   "additionalProperties": {"type": "array", "minItems": 1,
                                            "items": {"enum": sorted(E.ERROR_BY_NAME)}}},
        "threads": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["kind"],
            "properties": {"kind": {"enum": ["vcpu", "zapper"]}},
            "allOf": [
                {"if": {"properties": {"kind": {"const": "vcpu"}}},
                 "then": {"additionalProperties": False, "required": ["vcpu", "access"],
                          "properties": {"kind": {}, "vcpu": {"type": "integer", "minimum": 0},
                                         "access": {"type": "array", "items": {
                                             "type": "object", "additionalProperties": False,
                                             "required": ["gfn"],
                                             "properties": {"gfn": GFN, "count": COUNT,
                                                            "shared": {"type": "boolean"}}}}}}},
                {"if": {"properties": {"kind": {"const": "zapper"}}},
                 "then": {"additionalProperties": False, "required": ["ops"],
                          "properties": {"kind": {}, "ops": {"type": "array", "items": {
                              "oneOf": [
                                  {"type": "object", "additionalProperties": False,
                                   "required": ["convert_to_shared"],
                                   "properties": {"convert_to_shared": {
                                       "type": "object", "additionalProperties": False, "required": ["gfn"],
                                       "properties": {"gfn": GFN, "count": COUNT}}}},
                                  {"type": "object", "additionalProperties": False, "required": ["after"],
                                   "properties": {"after": {
                                       "type": "object", "additionalProperties": False,
                                       "required": ["vcpu", "accesses"],
                                       "properties": {"vcpu": {"type": "integer", "minimum": 0},
                                                      "accesses": {"type": "integer", "minimum": 1}}}}},
                                  {"type": "object", "additionalProperties": False,
                                   "required": ["zap_all_fast"],
                                   "properties": {"zap_all_fast": {"const": True}}}]}}}}},
            ]}},
    },
}


@dataclass
class Scenario:
    name: str
    description: str
    source: str
    data: dict[str, Any]
    digest: str
    vcpus: int = 1
    memory_pages: int = 0
    cache_capacity: int = 40
    history: bool = True
    fault_rate: float = 0.05
    max_steps: int = 2_000_000
    max_retries: int = 8
    max_faults: int | None = None
    faults: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def count(self, c: Any) -> int:
        """An access count: an int, a size ("2MiB" = 512 pages) or "memory" (the TD's memory size)."""
        if c is None:
            return 1
        if isinstance(c, int):
            return c
        if c == "memory":
            return self.memory_pages
        return parse_size(c) // 4096


def parse_size(s: str) -> int:
    m = SIZE_RE.match(str(s))
    if not m:
        raise ValueError(f"not a size: {s!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _line_of(node: yaml.Node | None, path: list[Any]) -> int:
    """Line (1-based) of the YAML node at a jsonschema error path, falling back to the nearest parent."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if nxt is None:
                break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _fmt_path(path: list[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def builtin_descriptions() -> list[tuple[str, str]]:
    out = []
    for n in builtin_names():
        d = yaml.safe_load((BUILTIN_DIR / f"{n}.yaml").read_text())
        out.append((n, " ".join(str(d.get("description", "")).split())))
    return out


def load_scenario(spec: str, overrides: dict[str, str] | None = None, small: bool = False) -> Scenario:
    """Load a built-in by name or a YAML file by path; apply `--set` overrides; validate.

    small: apply the scenario's `check:` overrides (the configuration `septlab check` explores)."""
    path = BUILTIN_DIR / f"{spec}.yaml"
    if not path.is_file():
        path = Path(spec)
        if not path.is_file():
            raise ScenarioError(
                f"{spec}: no such scenario file or built-in (built-ins: {', '.join(builtin_names())})")
    label = str(path) if path.parent != BUILTIN_DIR else f"{spec} (built-in)"
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{label}: not a UTF-8 text file (byte {e.start})") from None
    except OSError as e:
        raise ScenarioError(f"{label}: cannot read: {e.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise ScenarioError(f"{label}:{line}: YAML syntax error: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ScenarioError(f"{label}: YAML error: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{label}:1: top level must be a mapping with name and threads, got {type(data).__name__}")
    small_cfg = data.pop("check", None)
    if small and isinstance(small_cfg, dict):
        data.update(small_cfg)
    elif small_cfg is not None and not isinstance(small_cfg, dict):
        raise ScenarioError(f"{label}:{_line_of(node, ['check'])}: check: must be a mapping of overrides")
    for k, v in (overrides or {}).items():
        try:
            data[k] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise ScenarioError(f"--set {k}={v}: value is not valid YAML") from None
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        p = list(err.absolute_path)
        where = "--set" if p and p[0] in (overrides or {}) else f"{label}:{_line_of(node, p)}"
        msg = err.message if len(err.message) < 160 else err.message[:157] + "..."
        raise ScenarioError(f"{where}: {_fmt_path(p)}: {msg}")
    ids = [t["vcpu"] for t in data["threads"] if t["kind"] == "vcpu"]
    vcpus = data.get("vcpus", max(ids, default=0) + 1)
    bad = [i for i in ids if i >= vcpus]
    if bad or len(set(ids)) != len(ids):
        i = next(n for n, t in enumerate(data["threads"]) if t["kind"] == "vcpu" and (t["vcpu"] >= vcpus or ids.count(t["vcpu"]) > 1))
        raise ScenarioError(f"{label}:{_line_of(node, ['threads', i, 'vcpu'])}: threads[{i}].vcpu: "
                            f"must be unique and < vcpus ({vcpus})")
    for i, t in enumerate(data["threads"]):
        for j, op in enumerate(t.get("ops", [])):
            if "after" in op and op["after"]["vcpu"] >= vcpus:
                raise ScenarioError(f"{label}:{_line_of(node, ['threads', i, 'ops', j, 'after', 'vcpu'])}: "
                                    f"threads[{i}].ops[{j}].after.vcpu: no vCPU {op['after']['vcpu']} (vcpus: {vcpus})")
    faults = {E.LEAF_BY_NAME[k]: tuple(E.ERROR_BY_NAME[c] for c in v) for k, v in (data.get("faults") or {}).items()}
    digest = hashlib.sha256(repr(sorted(data.items(), key=lambda kv: kv[0])).encode()).hexdigest()[:16]
    scn = Scenario(
        name=data["name"], description=" ".join(str(data.get("description", "")).split()),
        source=str(path) if path.parent != BUILTIN_DIR else spec, data=data, digest=digest,
        vcpus=vcpus, cache_capacity=data.get("cache_capacity", 40), history=data.get("history", True),
        fault_rate=float(data.get("fault_rate", 0.05)), max_steps=data.get("max_steps", 2_000_000),
        max_retries=data.get("max_retries", 8), max_faults=data.get("max_faults"), faults=faults)
    if "memory" in data:
        scn.memory_pages = parse_size(data["memory"]) // 4096
    return scn
