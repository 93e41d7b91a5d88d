"""bug-pamt-get-for-2m: a PAMT_4K reference taken (and put) for a 2 MiB guest mapping, against "get/put
iff mapping size is 4KB" (DPAMT v6). The region gets a PAMT_4K level it does not need; when the
mapping is later split, DEMOTE installs the region's PAMT_4K level a second time and the module
refuses -- or, unsplit, two pages stay PAMT backing for nothing while it is mapped."""

from ...virt.dpamt import tdx_pamt_get, tdx_pamt_put
from .. import Variant


def tdx_pamt_get_4k(host, pfn, level, cache):
    return (yield from tdx_pamt_get(host, pfn, cache))  # BUG: for a 2 MiB mapping too


def tdx_pamt_put_4k(host, pfn, level):
    yield from tdx_pamt_put(host, pfn)  # BUG: for a 2 MiB mapping too


VARIANT = Variant("bug-pamt-get-for-2m", "DPAMT: PAMT_4K get/put for 2 MiB guest mappings too",
                  {"tdx_pamt_get_4k": tdx_pamt_get_4k, "tdx_pamt_put_4k": tdx_pamt_put_4k}, kind="mutant",
                  catches=("seamcall-unexpected-error",),
                  reference="DPAMT v6 #09: get/put iff mapping size is 4KB (DPAMT section of docs/facts.md)",
                  check_scenario="hugepage")
