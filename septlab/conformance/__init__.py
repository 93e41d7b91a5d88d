"""Conformance of septlab's TDX-module model against sources nobody here wrote.

septlab/tdx_module/ was written from prose. This package checks it table by table against the TDX
module's own machine-generated tables (intel/tdx-module, include/auto_gen/sept_state_lookup.c and
op_state_lookup.c), its per-leaf handlers (src/vmm_dispatcher/api_calls/) and the kernel's headers
(arch/x86/virt/vmx/tdx/tdx.h, arch/x86/include/asm/shared/tdx_errno.h), all transcribed by hand into
data/*.yaml with the repository, path and commit each came from.

* data.py loads and validates the transcriptions;
* oracle.py computes what the module says from them alone;
* drive.py drives a fresh TdxModule into each state and issues the leaf: what septlab says;
* runner.py enumerates the cases, compares, and attaches each mismatch to the deliberate
  simplification that explains it (data/simplifications.yaml), if any.

`septlab conformance` prints the result; tests/conformance/ runs it in `make test`.
"""

from .runner import Report, Row, run_conformance

__all__ = ["Report", "Row", "run_conformance"]
