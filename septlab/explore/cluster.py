"""Ray, for `--ray ADDRESS`: the same work as the local pool, on a cluster (an optional extra).

`pip install 'septlab[ray]'`. ADDRESS is what `ray.init` takes: `auto` (the cluster this machine is part
of), `ray://HOST:PORT` (Ray Client) or `local` (start a private Ray on this machine: for trying it out
and for the tests). Work is shipped as plain data -- the scenario, a variant by name, or a variant file
by its text, which each Ray worker loads once -- and septlab must be installed on every node.
Ray re-runs a task whose worker died (`max_retries`), so a lost node loses no schedules.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..variants import Variant, get_variant, load_variant_file

RETRIES = 3


class RayUnavailable(Exception):
    """--ray without Ray installed, or a cluster that cannot be reached (exit status 2)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray: Ray is not installed; pip install 'septlab[ray]'") from None
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    """HOST:PORT and ray://HOST:PORT are tried with a plain TCP connect first: ray.init() would retry an
    unreachable head for minutes."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise RayUnavailable(f"--ray {address}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise RayUnavailable(f"--ray {address}: cannot reach {host}:{port} ({e.strerror or e})") from None


def connect(address: str) -> None:
    """Join (or, for `local`, start) a Ray cluster for this process's lifetime."""
    ray = _ray()
    if address not in ("auto", "local"):
        _reachable(address)
    if ray.is_initialized():
        return
    try:
        # "local" is Ray's own spelling for "start a new private instance": never join another driver's
        ray.init(address=address, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"--ray {address}: cannot connect: {str(e).splitlines()[0] if str(e) else e}") from None


def portable_variant(v: Variant) -> tuple[str, ...]:
    """A variant as data: its name (built-ins and installed plugins) or its file's name and text."""
    if v.source:
        return ("file", Path(v.source).name, Path(v.source).read_text())
    return ("name", v.name)


_LOADED: dict[str, Variant] = {}


def variant_from(spec: tuple[str, ...] | Variant) -> Variant:
    """The variant a portable spec names, loaded once per worker process."""
    if isinstance(spec, Variant):
        return spec
    if spec[0] == "name":
        return get_variant(spec[1], allow_files=False)
    key = hashlib.sha256(spec[2].encode()).hexdigest()
    v = _LOADED.get(key)
    if v is None:
        d = Path(tempfile.mkdtemp(prefix="septlab-variant-"))
        f = d / spec[1]
        f.write_text(spec[2])
        v = _LOADED[key] = load_variant_file(f)
    return v


def _call(job: Callable[[Any], Any], item: Any) -> Any:
    return job(item)


def ray_ordered_map(job: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
    """job(item) for every item as Ray tasks, yielded in item order."""
    ray = _ray()
    fn = ray.remote(max_retries=RETRIES)(_call)
    jref = ray.put(job)
    refs = [fn.remote(jref, it) for it in items]
    got = 0
    try:
        for r in refs:
            yield ray.get(r)
            got += 1
    finally:
        if got < len(refs):  # closed early (Ctrl-C, an error): cancel what has not finished. Never cancel a
            # finished task: Ray 2.60 aborts the driver when a cancel races the task's completion
            ready, _ = ray.wait(refs[got:], num_returns=len(refs) - got, timeout=0)
            finished = set(ready)
            for r in refs[got:]:
                if r not in finished:
                    with contextlib.suppress(Exception):
                        ray.cancel(r)
