"""Scenarios: YAML files (strictly loaded, schema-validated) describing the TD, its tasks and fault model.

Errors name the file, the line and the field, in one line: `seed.yaml:12: threads[0].kind: 'vpcu' is
not one of ['vcpu', 'zapper']`. Built-ins live in builtin/; `--set key=value` overrides top-level keys.

Scenario files and `--set` values are untrusted input (scenarios are shared, a trace names its scenario), so
loading is bounded: no YAML anchors or aliases (no "billion laughs"), a size, node and nesting budget, no
duplicate or non-string keys, and every number bounded so that a run can neither wrap past the GFN space nor
build an enormous set of gfns. Whatever still goes wrong while loading is a ScenarioError, never a traceback.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent, MappingEndEvent, SequenceEndEvent
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ..tdx_module import errno as E

BUILTIN_DIR = Path(__file__).parent / "builtin"
SIZE_RE = re.compile(r"^\s*([0-9]+)\s*(KiB|MiB|GiB|TiB|K|M|G|T)?\s*$")
_UNITS = {None: 1, "K": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20, "G": 1 << 30, "GiB": 1 << 30,
          "T": 1 << 40, "TiB": 1 << 40}

# Input limits. Each is far above what a model run can use, and each keeps loading fast and bounded.
PAGE_SIZE = 4096
GFN_SPACE = 1 << 36          # pages: gfns are 36-bit (GFN maximum below); an access past it would wrap
MAX_MEMORY = 1 << 40         # bytes (1 TiB): `count: memory` then stays far inside the GFN space
MAX_FILE_BYTES = 1 << 20     # a scenario is a few hundred bytes; 1 MiB bounds parse time and memory
MAX_SET_CHARS = 4096         # one `--set` value
MAX_DEPTH = 32               # nesting of YAML collections (the built-ins use 8)
MAX_NODES = 10_000           # YAML nodes per document (built-ins: ~150): parse + validation cost ~50 us a node
MAX_NUMBER_CHARS = 64        # digits of one YAML int/float: int() of a huge literal is slow or refused
MAX_STEPS = 10**10
MAX_STEPS_PER_SECOND = 10**6
MAX_FAULTS = 10**6
MAX_THREADS = 256
MAX_ITEMS = 2048             # entries of one access, ops or image list
MAX_MATERIALISED = 1 << 20   # pages of image, and of conversions: the model builds these as sets of gfns
MAX_DESCRIPTION = 4096       # characters

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
# Characters that must not reach a terminal or a one-line message: C0/C1 controls, DEL, bidi overrides,
# line separators and lone surrogates (from undecodable argv bytes).
_UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_DESCRIPTION_BAD_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
                                 "\ud800-\udfff]")


class ScenarioError(Exception):
    """Bad scenario input (exit status 2); str() is the one-line message."""


COUNT_PATTERN = r"^(memory|[0-9]+\s*(KiB|MiB|GiB|TiB|K|M|G|T)?)\Z"
COUNT = {"oneOf": [{"type": "integer", "minimum": 1, "maximum": GFN_SPACE},
                   {"type": "string", "maxLength": 32, "pattern": COUNT_PATTERN}]}
GFN = {"type": "integer", "minimum": 0, "maximum": GFN_SPACE - 1}
VCPU_ID = {"type": "integer", "minimum": 0, "maximum": 63}
RANGE = {"type": "object", "additionalProperties": False, "required": ["gfn"], "properties": {"gfn": GFN, "count": COUNT}}
# KVM_TDX_INIT_MEM_REGION ranges; measure: KVM_TDX_MEASURE_MEMORY_REGION (TDH.MR.EXTEND), default true
IMAGE = {"type": "object", "additionalProperties": False, "required": ["gfn"],
         "properties": {"gfn": GFN, "count": COUNT, "measure": {"type": "boolean"}}}
ACCESS = {"type": "object", "additionalProperties": False, "required": ["gfn"],
          "properties": {"gfn": GFN, "count": COUNT, "shared": {"type": "boolean"},
                         # the guest's TDG.MEM.PAGE.ACCEPT level for a private page (2M: the default)
                         "accept": {"enum": ["4K", "2M"]}}}
AFTER = {"type": "object", "additionalProperties": False, "required": ["vcpu", "accesses"],
         "properties": {"vcpu": VCPU_ID, "accesses": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS}}}
# Exactly one key. (A oneOf of three schemas said the same, at three times the validation cost per op.)
OP = {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
      "properties": {"convert_to_shared": RANGE, "after": AFTER, "zap_all_fast": {"const": True},
                     # host userspace on its shared memory (mm notifiers) and on its memslot
                     "munmap": RANGE, "madvise_dontneed": RANGE, "migrate": RANGE, "age": RANGE,
                     "memslot_recreate": {"const": True}}}
RANGE_OPS = ("convert_to_shared", "munmap", "madvise_dontneed", "migrate", "age")
THREAD = {
    "type": "object", "required": ["kind"],
    "properties": {"kind": {"enum": ["vcpu", "zapper"]}},
    "allOf": [
        {"if": {"properties": {"kind": {"const": "vcpu"}}},
         "then": {"additionalProperties": False, "required": ["vcpu", "access"],
                  "properties": {"kind": {}, "vcpu": VCPU_ID,
                                 "access": {"type": "array", "maxItems": MAX_ITEMS, "items": ACCESS}}}},
        {"if": {"properties": {"kind": {"const": "zapper"}}},
         "then": {"additionalProperties": False, "required": ["ops"],
                  "properties": {"kind": {}, "ops": {"type": "array", "maxItems": MAX_ITEMS, "items": OP},
                                 # runs once KVM_TDX_INIT_MEM_REGION returned, while the other vCPUs are
                                 # initialised; KVM_TDX_FINALIZE_VM waits for it
                                 "before_finalize": {"type": "boolean"}}}},
    ]}
# Every top-level key but `check:`, whose overrides take the same schemas.
PROPERTIES: dict[str, Any] = {
    "name": {"type": "string", "pattern": NAME_RE.pattern},
    "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
    "vcpus": {"type": "integer", "minimum": 1, "maximum": 64},
    "memory": {"type": "string", "maxLength": 32, "pattern": SIZE_RE.pattern,
               "description": "at most 1 TiB, a whole number of 4 KiB pages"},
    "cache_capacity": {"type": "integer", "minimum": 5, "maximum": 512},
    "history": {"type": "boolean"},
    "fault_rate": {"type": "number", "minimum": 0, "maximum": 1},
    "max_steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS},
    "steps_per_second": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS_PER_SECOND,
                         "description": "model steps per second of kernel time: scales the lockup detectors' "
                                        "thresholds (soft lockup 20 s, RCU stall 21 s, hung task 120 s)"},
    "max_faults": {"type": "integer", "minimum": 0, "maximum": MAX_FAULTS,
                   "description": "at most this many injected failures per run"},
    "image": {"type": "array", "maxItems": MAX_ITEMS, "items": IMAGE},
    "hugepages": {"type": "boolean",
                  "description": "guest_memfd with 2 MiB folios: private memory mapped at 2 MiB where it can be"},
    "shared": {"type": "array", "maxItems": MAX_ITEMS, "items": RANGE,
               "description": "gfns userspace makes shared (KVM_SET_MEMORY_ATTRIBUTES) before the TD runs"},
    "faults": {"type": "object", "propertyNames": {"enum": sorted(E.LEAF_BY_NAME)},
               "additionalProperties": {"type": "array", "minItems": 1, "maxItems": len(E.ERROR_BY_NAME),
                                        "items": {"enum": sorted(E.ERROR_BY_NAME)}}},
    "threads": {"type": "array", "minItems": 1, "maxItems": MAX_THREADS, "items": THREAD},
}
CHECK = {"type": "object", "additionalProperties": False, "properties": PROPERTIES,
         "description": "overrides for the small configuration `septlab check` explores"}
MAX_SWARM = 16
SWARM = {"type": "array", "maxItems": MAX_SWARM, "items": CHECK,
         "description": "swarm testing: random schedule s runs alternative s mod (1 + len(swarm)), 0 being the "
                        "configuration as written, each other one these keys over it"}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "threads"],
    "properties": {**PROPERTIES, "check": CHECK, "swarm": SWARM},
}
_PATTERN_HELP = {
    PROPERTIES["name"]["pattern"]: "a safe name (a letter or digit, then letters, digits or . _ + -; at most 64)",
    SIZE_RE.pattern: "a size such as 8KiB or 1GiB",
    COUNT_PATTERN: "a count: an integer, a size such as 2MiB, or memory",
}


def _is_integer(_checker: Any, x: Any) -> bool:
    """An int proper: draft 2020-12 also calls 2.0 an integer, which range() and list indexing then reject."""
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(_checker: Any, x: Any) -> bool:
    """A finite int or float: nan passes every minimum/maximum comparison, so it must fail the type."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and (isinstance(x, int) or math.isfinite(x))


_VALIDATOR = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}))(SCHEMA)


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
    steps_per_second: int = 100
    max_faults: int | None = None
    faults: dict[int, tuple[int, ...]] = field(default_factory=dict)
    swarm: list["Scenario"] = field(default_factory=list)

    def alternative(self, seed: int) -> "Scenario":
        """The configuration random schedule `seed` runs: swarm testing (Groce et al., ISSTA 2012) spreads
        the schedules over configurations that cannot share one run (a TD built with an initial image
        never races its vCPUs to allocate the mirror root, for one). Seed 0 (and every multiple of the
        count) runs the configuration as written, which is also the one `septlab check --full` explores."""
        if not self.swarm:
            return self
        k = seed % (len(self.swarm) + 1)
        return self if k == 0 else self.swarm[k - 1]

    def count(self, c: Any) -> int:
        """An access count: an int, a size ("2MiB" = 512 pages) or "memory" (the TD's memory size)."""
        return count_pages(c, self.memory_pages)

    @property
    def gfn_end(self) -> int:
        """One past the last gfn the scenario's memslot must cover: its memory, or every range it names."""
        return max([self.memory_pages] + [item["gfn"] + self.count(item.get("count")) for _, item in _ranges(self.data)])


def count_pages(c: Any, memory_pages: int) -> int:
    """Pages in a (validated) count: absent = 1, an int, a size ("2MiB" = 512 pages) or "memory"."""
    if c is None:
        return 1
    if isinstance(c, int):
        return c
    if c == "memory":
        return memory_pages
    return parse_size(c) // PAGE_SIZE


def parse_size(s: str) -> int:
    m = SIZE_RE.match(str(s))
    if not m:
        raise ValueError(f"not a size: {s!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


# --- messages -------------------------------------------------------------------------------------------------


def _safe(s: str, limit: int = 80) -> str:
    """`s` clipped to `limit` characters in the middle (a long path keeps its file name), control characters
    escaped: it is going into a one-line message."""
    if len(s) > limit:
        head = max(limit - 3, 0) // 3
        s = s[:head] + "..." + s[len(s) - (max(limit - 3, 0) - head):]
    return _UNSAFE_RE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", s)


def _preview(x: Any) -> str:
    """A short rendering of a value for a message; a big string, list or mapping is never formatted whole."""
    if isinstance(x, str):
        return repr(x) if len(x) <= 40 else repr(x[:37]) + "..."
    if x is None or isinstance(x, (bool, int, float)):
        return _safe(repr(x), 40)
    if isinstance(x, dict):
        return f"a mapping with {len(x)} key(s)"
    if isinstance(x, (list, tuple)):
        return f"a list of {len(x)} item(s)"
    return f"a {type(x).__name__} value"


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
        out += f"[{p}]" if isinstance(p, int) else (f".{_safe(str(p), 40)}" if out else _safe(str(p), 40))
    return out or "(top level)"


def _describe(err: jsonschema.ValidationError) -> str:
    """The message for a schema error, built from the failed keyword and a short preview of the value.

    jsonschema's own message embeds repr(instance) -- a whole 1 MiB string or list -- and clipping it loses
    the part that says what is wrong; rebuilding it keeps the message short and to the point."""
    v, want, shown = err.validator, err.validator_value, _preview(err.instance)
    if v == "type":
        return f"{shown} is not of type {', '.join(map(repr, want)) if isinstance(want, list) else repr(want)}"
    if v == "enum":
        return f"{shown} is not one of {_safe(repr(want), 120)}"
    if v == "const":
        return f"{shown} is not {want!r}"
    if v == "pattern":
        return f"{shown} is not {_PATTERN_HELP.get(want, 'well-formed')}"
    if v in ("minimum", "maximum"):
        return f"{shown} is {'less' if v == 'minimum' else 'greater'} than the {v} of {want}"
    if v in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        what = {"L": "character", "I": "item", "P": "key"}[v[3]] + ("" if want == 1 else "s")
        return f"{shown}: {'at least' if v.startswith('min') else 'at most'} {want} {what} allowed"
    if v == "additionalProperties" and isinstance(err.instance, dict):
        known = list(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in known]
        return (f"unknown key(s) {', '.join(_preview(k) for k in extra[:3])}{', ...' if len(extra) > 3 else ''}"
                f" (allowed: {', '.join(known)})")
    if v in ("oneOf", "anyOf"):
        if all("required" in s for s in want):
            return f"{shown} is none of: {', '.join(s['required'][0] for s in want)}"
        return f"{shown} is not valid under any of the given schemas"
    return _safe(err.message, 160)


# --- strict YAML ----------------------------------------------------------------------------------------------


class _Refused(Exception):
    """Input the strict loader refuses before building anything from it; line is 1-based."""

    def __init__(self, line: int, msg: str) -> None:
        super().__init__(msg)
        self.line, self.msg = line, msg


def _line(mark: Any) -> int:
    return mark.line + 1 if mark is not None else 1


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class _StrictComposer(Composer):
    """Compose-level refusals, before any data exists: anchors and aliases (an alias bomb is refused at its
    first anchor, nothing is expanded), nesting deeper than MAX_DEPTH, more than MAX_NODES nodes, and
    mapping keys that are not strings or repeat an earlier key (YAML loaders silently keep the last one)."""

    def _init_budget(self) -> None:
        self._nodes = 0
        self._depth = 0
        self._path: list[Any] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(_line(event.start_mark), "YAML anchors/aliases are not allowed")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(_line(event.start_mark), f"more than {MAX_NODES} YAML nodes (values, keys, lists)")
        if self._depth >= MAX_DEPTH:
            raise _Refused(_line(event.start_mark), f"{_fmt_path(self._path)}: nested deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_sequence_node(self, anchor: str | None) -> yaml.Node:
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(SequenceNode, None, start.implicit)
        node = SequenceNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        while not self.check_event(SequenceEndEvent):
            self._path.append(len(node.value))
            node.value.append(self.compose_node(node, len(node.value)))
            self._path.pop()
        node.end_mark = self.get_event().end_mark
        return node

    def compose_mapping_node(self, anchor: str | None) -> yaml.Node:
        start = self.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = self.resolve(MappingNode, None, start.implicit)
        node = MappingNode(tag, [], start.start_mark, None, flow_style=start.flow_style)
        seen: dict[str, int] = {}
        while not self.check_event(MappingEndEvent):
            key = self.compose_node(node, None)
            name = self._key_name(key)
            if name in seen:
                raise _Refused(_line(key.start_mark), f"{_fmt_path([*self._path, name])}: duplicate key "
                                                      f"(first on line {seen[name]})")
            seen[name] = _line(key.start_mark)
            self._path.append(name)
            value = self.compose_node(node, key)
            self._path.pop()
            node.value.append((key, value))
        node.end_mark = self.get_event().end_mark
        return node

    def _key_name(self, key: yaml.Node) -> str:
        """The key's string; anything else (1:, yes:, null:, << merges, ? [a, b], !!binary) is refused:
        the schema only has string keys, and the digest sorts keys, which mixed types cannot be."""
        if isinstance(key, ScalarNode) and key.tag == "tag:yaml.org,2002:str":
            return key.value
        if isinstance(key, ScalarNode):
            kind = key.tag.rsplit(":", 1)[-1]
            hint = " (quote it)" if kind in ("int", "float", "bool", "null", "timestamp") else ""
            what = "a merge key (<<)" if kind == "merge" else f"{_safe(kind, 20)} {_safe(key.value, 40)}{hint}"
        else:
            what = "a list" if isinstance(key, SequenceNode) else "a mapping"
        raise _Refused(_line(key.start_mark), f"{_fmt_path(self._path)}: mapping keys must be strings, got {what}")


class _StrictConstructor:
    """Construction-level refusals, reported at the offending node."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """SafeConstructor's, with long numbers refused before int() sees them (a huge or sexagesimal literal
        is slow, past 4300 digits a ValueError) and any other failure turned into a refusal at the node."""
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            raise _Refused(_line(node.start_mark), f"a number longer than {MAX_NUMBER_CHARS} characters")
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (yaml.YAMLError, _Refused):
            raise
        except Exception as e:  # e.g. !!timestamp 2001-13-45, !!binary that is not base64 text
            tag = _safe(str(node.tag).rsplit(":", 1)[-1], 40)
            raise _Refused(_line(node.start_mark), f"cannot read this {tag} value ({type(e).__name__})") from None


def _strict_loader(base: type) -> type:
    """`base` (a SafeLoader) with the strict composer and constructor in front of its own."""

    class StrictLoader(_StrictComposer, _StrictConstructor, base):  # type: ignore[misc, valid-type]
        def __init__(self, text: str) -> None:
            base.__init__(self, text)
            Composer.__init__(self)
            self._init_budget()

    return StrictLoader


# libyaml's scanner and parser are ~50x faster than PyYAML's; the composer and constructor stay in Python.
_StrictLoader = _strict_loader(yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader)


def _load_yaml(text: str, loader_class: type | None = None) -> tuple[yaml.Node | None, Any]:
    """Compose `text` once, strictly, and construct the data from that node (the node gives line numbers)."""
    loader = (loader_class or _StrictLoader)(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


# --- loading --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """Where the loaded values came from, to prefix messages with `file:line: field` (or `--set: field`)."""

    label: str
    root: yaml.Node | None
    overridden: frozenset[str] = frozenset()
    block: tuple[Any, ...] = ()  # the `check:` or `swarm[i]` block whose keys were applied over the file's
    from_block: frozenset[str] = frozenset()

    def at(self, path: list[Any]) -> str:
        if path and path[0] in self.overridden:
            return f"--set: {_fmt_path(path)}"
        if path and path[0] in self.from_block:
            path = [*self.block, *path]
        return f"{self.label}:{_line_of(self.root, path)}: {_fmt_path(path)}"


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

    small: apply the scenario's `check:` overrides (the configuration `septlab check` explores).
    Every failure is a ScenarioError with a one-line message: the input may be hostile (or a fuzzer's)."""
    try:
        return _load(str(spec), dict(overrides or {}), small)
    except ScenarioError as e:
        raise ScenarioError(_safe(str(e), 600)) from None
    except (RecursionError, MemoryError) as e:
        raise ScenarioError(f"{_safe(str(spec))}: scenario too large or too deeply nested ({type(e).__name__})") from None
    except Exception as e:  # a loader bug must still not turn hostile input into a traceback
        raise ScenarioError(f"{_safe(str(spec))}: cannot load scenario: {type(e).__name__}: {_safe(str(e))}") from None


def _load(spec: str, overrides: dict[str, str], small: bool) -> Scenario:
    path, label, builtin = _find(spec)
    root, doc = _parse(_read(path, label), label)
    sets = {k: _parse_override(k, v) for k, v in overrides.items()}
    doc.update(sets)
    src = _Source(label, root, frozenset(sets))
    _validate(doc, src)
    _check_values(doc, [], src)
    if isinstance(doc.get("check"), dict):
        _check_values(doc["check"], ["check"], src)
    for i, alt in enumerate(doc.get("swarm") or []):
        _check_values(alt, ["swarm", i], src)
    small_cfg = doc.pop("check", None)
    swarm = doc.pop("swarm", None) or []
    source = spec if builtin else str(path)
    if small:  # the small configuration is one explicit configuration: no swarm
        if small_cfg:
            doc.update(small_cfg)
            doc.update({k: v for k, v in sets.items() if k != "check"})
            src = replace(src, block=("check",), from_block=frozenset(small_cfg) - src.overridden)
        return _build(doc, source, src)
    alts = [_build({**doc, **alt, **sets}, source,
                   replace(src, block=("swarm", i), from_block=frozenset(alt) - src.overridden))
            for i, alt in enumerate(swarm)]
    scn = _build({**doc, "swarm": swarm} if swarm else doc, source, src)  # the digest covers the alternatives
    scn.swarm = alts
    return scn


def _find(spec: str) -> tuple[Path, str, bool]:
    """The file for a built-in name or a path, its label for messages, and whether it is a built-in."""
    if NAME_RE.match(spec) and (BUILTIN_DIR / f"{spec}.yaml").is_file():
        return BUILTIN_DIR / f"{spec}.yaml", f"{spec} (built-in)", True
    path = Path(spec)
    try:
        found = path.is_file()
    except (OSError, ValueError):  # name too long, NUL byte
        found = False
    if not found:
        raise ScenarioError(f"{_safe(spec)}: no such scenario file or built-in (built-ins: {', '.join(builtin_names())})")
    return path, _safe(str(path), 200), False


def _read(path: Path, label: str) -> str:
    """The file's text; at most MAX_FILE_BYTES are read, whatever the file's size."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ScenarioError(f"{label}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(f"{label}: larger than the {MAX_FILE_BYTES >> 20} MiB limit for scenario files")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{label}: not a UTF-8 text file (byte {e.start})") from None


def _yaml_error(where: str, e: Exception) -> ScenarioError:
    """One line for a YAML failure at `where` (`file` or `file:line` is added from the error's mark)."""
    if isinstance(e, _Refused):
        return ScenarioError(f"{where}:{e.line}: {e.msg}")
    if isinstance(e, yaml.MarkedYAMLError):
        kind = "YAML syntax error" if isinstance(e, (yaml.scanner.ScannerError, yaml.parser.ParserError)) else "YAML error"
        what = f"{e.context}, {e.problem}" if e.context and str(e.problem).startswith("but ") else e.problem
        return ScenarioError(f"{where}:{_line(e.problem_mark or e.context_mark)}: {kind}: "
                             f"{_safe(str(what or e.context), 120)}")
    return ScenarioError(f"{where}: YAML error: {_safe((str(e).splitlines() or [''])[0], 120)}")


def _parse(text: str, label: str) -> tuple[yaml.Node | None, dict[str, Any]]:
    try:
        node, data = _load_yaml(text)
    except (yaml.YAMLError, _Refused, UnicodeError) as e:
        raise _yaml_error(label, e) from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{label}:1: top level must be a mapping with name and threads, got {type(data).__name__}")
    return node, data


def _parse_override(key: str, value: str) -> Any:
    """A `--set key=value` value, parsed like the file (strictly) and length-bounded; the key must be known."""
    shown = f"--set {_safe(key, 40)}={_safe(value, 40)}"
    if key not in SCHEMA["properties"]:
        raise ScenarioError(f"{shown}: unknown key (scenario keys: {', '.join(SCHEMA['properties'])})")
    if len(value) > MAX_SET_CHARS:
        raise ScenarioError(f"{shown}: value longer than {MAX_SET_CHARS} characters")
    try:
        return _load_yaml(value)[1]
    except _Refused as e:
        raise ScenarioError(f"{shown}: {e.msg}") from None
    except (yaml.YAMLError, UnicodeError):
        raise ScenarioError(f"{shown}: value is not valid YAML") from None


def _validate(doc: dict[str, Any], src: _Source) -> None:
    errors = sorted(_VALIDATOR.iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        raise ScenarioError(f"{src.at(list(err.absolute_path))}: {_describe(err)}")


def _ranges(cfg: dict[str, Any]) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    """(path, {gfn, count}) for every gfn range of a (schema-valid) configuration: image, accesses, conversions."""
    for i, item in enumerate(cfg.get("image") or []):
        yield ["image", i], item
    for i, item in enumerate(cfg.get("shared") or []):
        yield ["shared", i], item
    for i, t in enumerate(cfg.get("threads") or []):
        for j, a in enumerate(t.get("access") or []):
            yield ["threads", i, "access", j], a
        for j, op in enumerate(t.get("ops") or []):
            for name in RANGE_OPS:
                if name in op:
                    yield ["threads", i, "ops", j, name], op[name]


def _check_values(cfg: dict[str, Any], prefix: list[Any], src: _Source) -> None:
    """Checks of single values the schema cannot state: sizes, and ranges whose count does not depend on memory.
    Run on the file's keys and on its `check:` block, whichever configuration is loaded."""
    desc = cfg.get("description", "")
    if m := _DESCRIPTION_BAD_RE.search(desc):
        raise ScenarioError(f"{src.at([*prefix, 'description'])}: control character U+{ord(m[0]):04X} "
                            f"at offset {m.start()} is not allowed")
    if "memory" in cfg:
        size = parse_size(cfg["memory"])
        if size > MAX_MEMORY or size < PAGE_SIZE or size % PAGE_SIZE:
            raise ScenarioError(f"{src.at([*prefix, 'memory'])}: {_preview(cfg['memory'])} is not a whole number "
                                f"of 4 KiB pages from 4KiB to the 1 TiB limit")
    for path, item in _ranges(cfg):
        c = item.get("count")
        if isinstance(c, str) and c != "memory":
            size = parse_size(c)
            if size < PAGE_SIZE or size % PAGE_SIZE or size // PAGE_SIZE > GFN_SPACE:
                raise ScenarioError(f"{src.at([*prefix, *path, 'count'])}: {_preview(c)} is not a whole number "
                                    f"of 4 KiB pages within the GFN space (2^36 pages)")
        if c != "memory":
            _check_range(item, count_pages(c, 0), [*prefix, *path], src)


def _check_range(item: dict[str, Any], pages: int, path: list[Any], src: _Source) -> None:
    """A range must end inside the GFN space: past it, the model would wrap to gfn 0."""
    if item["gfn"] + pages > GFN_SPACE:
        c = item.get("count", 1)
        count = f"{c} ({pages} pages)" if isinstance(c, str) else str(c)
        raise ScenarioError(f"{src.at(path)}: gfn {item['gfn']:#x} + count {count} runs past the GFN space "
                            f"(2^36 pages)")


def _check_config(data: dict[str, Any], src: _Source) -> tuple[int, int]:
    """Cross-field checks of the configuration being loaded; returns (vcpus, memory pages)."""
    ids = [t["vcpu"] for t in data["threads"] if t["kind"] == "vcpu"]
    vcpus = data.get("vcpus", max(ids, default=0) + 1)
    for i, t in enumerate(data["threads"]):
        if t["kind"] == "vcpu" and (t["vcpu"] >= vcpus or ids.count(t["vcpu"]) > 1):
            raise ScenarioError(f"{src.at(['threads', i, 'vcpu'])}: must be unique and < vcpus ({vcpus})")
    for i, t in enumerate(data["threads"]):
        for j, op in enumerate(t.get("ops", [])):
            if "after" in op and t.get("before_finalize"):
                raise ScenarioError(f"{src.at(['threads', i, 'ops', j, 'after'])}: a before_finalize zapper "
                                    "cannot wait for vCPU accesses (vCPUs run only after KVM_TDX_FINALIZE_VM)")
            if "after" in op and op["after"]["vcpu"] >= vcpus:
                raise ScenarioError(f"{src.at(['threads', i, 'ops', j, 'after', 'vcpu'])}: "
                                    f"no vCPU {op['after']['vcpu']} (vcpus: {vcpus})")
    memory_pages = parse_size(data["memory"]) // PAGE_SIZE if "memory" in data else 0
    _check_after(data, memory_pages, src)
    materialised = {"image": 0, "ops": 0}
    for path, item in _ranges(data):
        if item.get("count") == "memory":
            if not memory_pages:
                raise ScenarioError(f"{src.at([*path, 'count'])}: count memory, but the scenario sets no memory")
            _check_range(item, memory_pages, path, src)
        if path[0] in ("image", "shared") or "ops" in path:
            kind = "image" if path[0] in ("image", "shared") else "ops"
            materialised[kind] += count_pages(item.get("count"), memory_pages)
            if materialised[kind] > MAX_MATERIALISED:
                what = "the image" if kind == "image" else "the host operations' ranges"
                raise ScenarioError(f"{src.at(path)}: {what} would cover more than {MAX_MATERIALISED} pages "
                                    "(the model builds them as sets of gfns)")
    return vcpus, memory_pages


def _check_after(data: dict[str, Any], memory_pages: int, src: _Source) -> None:
    """`after: {vcpu, accesses}` must be reachable: otherwise the zapper waits forever (a false deadlock)."""
    total = {t["vcpu"]: sum(count_pages(a.get("count"), memory_pages) for a in t["access"])
             for t in data["threads"] if t["kind"] == "vcpu"}
    for i, t in enumerate(data["threads"]):
        for j, op in enumerate(t.get("ops", [])):
            if "after" in op:
                v, n = op["after"]["vcpu"], op["after"]["accesses"]
                if n > total.get(v, 0):
                    raise ScenarioError(f"{src.at(['threads', i, 'ops', j, 'after', 'accesses'])}: vCPU {v} makes "
                                        f"{total.get(v, 0)} access(es) in this configuration, so 'after {n}' "
                                        "would wait forever")


def _build(data: dict[str, Any], source: str, src: _Source) -> Scenario:
    vcpus, memory_pages = _check_config(data, src)
    faults = {E.LEAF_BY_NAME[k]: tuple(E.ERROR_BY_NAME[c] for c in v) for k, v in (data.get("faults") or {}).items()}
    digest = hashlib.sha256(repr(sorted(data.items(), key=lambda kv: kv[0])).encode()).hexdigest()[:16]
    return Scenario(
        name=data["name"], description=" ".join(str(data.get("description", "")).split()),
        source=source, data=data, digest=digest, vcpus=vcpus, memory_pages=memory_pages,
        cache_capacity=data.get("cache_capacity", 40), history=data.get("history", True),
        fault_rate=float(data.get("fault_rate", 0.05)), max_steps=data.get("max_steps", 2_000_000),
        steps_per_second=data.get("steps_per_second", 100), max_faults=data.get("max_faults"), faults=faults)
