"""bug-demote-no-pamt-pages: under Dynamic PAMT the split passes no PAMT pages for the new 4 KiB level
to TDH.MEM.PAGE.DEMOTE (only the new S-EPT page gets its PAMT reference). The module cannot create 512
4 KiB PAMT entries in a region without a PAMT_4K level and refuses: the VM is bugged (docs/facts.md e:
"DEMOTE consumes PAMT pages for the newly created 4K level")."""

from .. import Variant


def tdx_pamt_demote_pages(host, cache):
    return None  # BUG: no PAMT_4K pages for the demoted region


VARIANT = Variant("bug-demote-no-pamt-pages", "DPAMT: DEMOTE gets no PAMT pages for the new 4 KiB level",
                  {"tdx_pamt_demote_pages": tdx_pamt_demote_pages}, kind="mutant",
                  catches=("seamcall-unexpected-error",),
                  reference="DPAMT v6 + hugepage: demote needs PAMT pages for the 4K level (facts e, appendix)",
                  check_scenario="hugepage")
