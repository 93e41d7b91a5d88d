"""SEAMCALL leaf numbers and completion-status codes.

Leaf numbers are those of arch/x86/virt/vmx/tdx/tdx.h (plus DEMOTE/PAMT.ADD/PAMT.REMOVE from the TDX
ABI header and DPAMT v6); status codes are arch/x86/include/asm/shared/tdx_errno.h, with the extra
module codes docs/facts.md c.2 lists (TDX module 1.5 sources / ABI header).
"""

from __future__ import annotations

# --- SEAMCALL leaves (arch/x86/virt/vmx/tdx/tdx.h) -------------------------------------------------
TDH_MNG_ADDCX = 1
TDH_MEM_PAGE_ADD = 2
TDH_MEM_SEPT_ADD = 3
TDH_VP_ADDCX = 4
TDH_MEM_PAGE_AUG = 6
TDH_MEM_RANGE_BLOCK = 7
TDH_MNG_KEY_CONFIG = 8
TDH_MNG_CREATE = 9
TDH_VP_CREATE = 10
TDH_MEM_PAGE_DEMOTE = 15
TDH_MR_EXTEND = 16
TDH_MR_FINALIZE = 17
TDH_VP_FLUSH = 18
TDH_MNG_VPFLUSHDONE = 19
TDH_MNG_KEY_FREEID = 20
TDH_MNG_INIT = 21
TDH_VP_INIT = 22
TDH_PHYMEM_PAGE_RECLAIM = 28
TDH_MEM_PAGE_REMOVE = 29
TDH_MEM_TRACK = 38
TDH_PHYMEM_CACHE_WB = 40
TDH_PHYMEM_PAGE_WBINVD = 41
TDH_PHYMEM_PAMT_ADD = 58
TDH_PHYMEM_PAMT_REMOVE = 59

LEAF_NAMES: dict[int, str] = {
    TDH_MNG_ADDCX: "TDH.MNG.ADDCX",
    TDH_MEM_PAGE_ADD: "TDH.MEM.PAGE.ADD",
    TDH_MEM_SEPT_ADD: "TDH.MEM.SEPT.ADD",
    TDH_VP_ADDCX: "TDH.VP.ADDCX",
    TDH_MEM_PAGE_AUG: "TDH.MEM.PAGE.AUG",
    TDH_MEM_RANGE_BLOCK: "TDH.MEM.RANGE.BLOCK",
    TDH_MNG_KEY_CONFIG: "TDH.MNG.KEY.CONFIG",
    TDH_MNG_CREATE: "TDH.MNG.CREATE",
    TDH_VP_CREATE: "TDH.VP.CREATE",
    TDH_MEM_PAGE_DEMOTE: "TDH.MEM.PAGE.DEMOTE",
    TDH_MR_EXTEND: "TDH.MR.EXTEND",
    TDH_MR_FINALIZE: "TDH.MR.FINALIZE",
    TDH_VP_FLUSH: "TDH.VP.FLUSH",
    TDH_MNG_VPFLUSHDONE: "TDH.MNG.VPFLUSHDONE",
    TDH_MNG_KEY_FREEID: "TDH.MNG.KEY.FREEID",
    TDH_MNG_INIT: "TDH.MNG.INIT",
    TDH_VP_INIT: "TDH.VP.INIT",
    TDH_PHYMEM_PAGE_RECLAIM: "TDH.PHYMEM.PAGE.RECLAIM",
    TDH_MEM_PAGE_REMOVE: "TDH.MEM.PAGE.REMOVE",
    TDH_MEM_TRACK: "TDH.MEM.TRACK",
    TDH_PHYMEM_CACHE_WB: "TDH.PHYMEM.CACHE.WB",
    TDH_PHYMEM_PAGE_WBINVD: "TDH.PHYMEM.PAGE.WBINVD",
    TDH_PHYMEM_PAMT_ADD: "TDH.PHYMEM.PAMT.ADD",
    TDH_PHYMEM_PAMT_REMOVE: "TDH.PHYMEM.PAMT.REMOVE",
}
LEAF_BY_NAME: dict[str, int] = {v: k for k, v in LEAF_NAMES.items()}

# --- completion status (tdx_errno.h, E3) ------------------------------------------------------------
TDX_SEAMCALL_STATUS_MASK = 0xFFFFFFFF00000000
TDX_SUCCESS = 0
TDX_NON_RECOVERABLE_VCPU = 0x4000000100000000
TDX_NON_RECOVERABLE_TD = 0x4000000200000000
TDX_INTERRUPTED_RESUMABLE = 0x8000000300000000
TDX_OPERAND_INVALID = 0xC000010000000000
TDX_OPERAND_BUSY = 0x8000020000000000
TDX_PREVIOUS_TLB_EPOCH_BUSY = 0x8000020100000000
TDX_SYS_BUSY = 0x8000020200000000
TDX_PAGE_METADATA_INCORRECT = 0xC000030000000000
TDX_VCPU_NOT_ASSOCIATED = 0x8000070200000000
TDX_VCPU_ASSOCIATED = 0x8000070100000000  # module 1.5.01 tdx_error_codes_defs.h (not in the kernel header)
TDX_EPT_ENTRY_NOT_PRESENT = 0xC0000B0300000000  # idem
TDX_KEY_GENERATION_FAILED = 0x8000080000000000
TDX_KEY_STATE_INCORRECT = 0xC000081100000000
TDX_KEY_CONFIGURED = 0x0000081500000000
TDX_NO_HKID_READY_TO_WBCACHE = 0x0000082100000000
TDX_FLUSHVP_NOT_DONE = 0x8000082400000000
TDX_EPT_WALK_FAILED = 0xC0000B0000000000
TDX_EPT_ENTRY_STATE_INCORRECT = 0xC0000B0D00000000
# Module codes not in the kernel header (TDX module 1.5 sources / ABI header).
TDX_TD_KEYS_NOT_CONFIGURED = 0x8000081000000000
TDX_LIFECYCLE_STATE_INCORRECT = 0xC000060700000000
TDX_TD_ASSOCIATED_PAGES_EXIST = 0xC000040000000000
TDX_TD_FATAL = 0xE000060400000000
TDX_OP_STATE_INCORRECT = 0xC000060800000000
TDX_WBCACHE_NOT_COMPLETE = 0x8000081700000000
TDX_GPA_RANGE_NOT_BLOCKED = 0xC0000B0600000000
TDX_GPA_RANGE_ALREADY_BLOCKED = 0x00000B0700000000
TDX_TLB_TRACKING_NOT_DONE = 0xC0000B0800000000
TDX_EPT_ENTRY_FREE = 0xC0000B0100000000
TDX_EPT_ENTRY_NOT_FREE = 0xC0000B0200000000
TDX_EPT_PAGE_NOT_FREE = 0xC0000B0E00000000
TDX_OPERAND_ADDR_RANGE_ERROR = 0xC000010100000000
# module 1.5.01 tdx_error_codes_defs.h; the DPAMT module's pamt_demote() returns it for a PAMT page that
# is not free (TDH.MEM.PAGE.DEMOTE, operand R12 / R13)
TDX_PAGE_NOT_FREE = 0xC000030300000000
# MODEL: DPAMT's module error names are UNVERIFIED; these two reuse the closest documented class.
TDX_HPA_RANGE_NOT_FREE = TDX_EPT_PAGE_NOT_FREE
TDX_PAMT_NOT_BACKED = TDX_PAGE_METADATA_INCORRECT

# Operand ids carried in the low 32 bits of a status (api_error_with_operand_id(); module
# include/auto_gen/tdx_error_codes_defs.h OPERAND_ID_*). The kernel header names RCX, TDR, SEPT (the
# module's OPERAND_ID_SEPT_TREE: the S-EPT tree lock) and TD_EPOCH; RDX (the register holding the TDR
# of the S-EPT leaves, whose explicit TDR lock reports it) is the module's, and so are R8 (the page
# of PAGE.AUG, the new S-EPT page of PAGE.DEMOTE) and R12 / R13 (DEMOTE's two PAMT pages under DPAMT).
TDX_OPERAND_ID_RCX = 0x01
TDX_OPERAND_ID_RDX = 0x02
TDX_OPERAND_ID_R8 = 0x08
TDX_OPERAND_ID_R12 = 0x0C
TDX_OPERAND_ID_R13 = 0x0D
TDX_OPERAND_ID_TDR = 0x80
TDX_OPERAND_ID_SEPT = 0x92
TDX_OPERAND_ID_TD_EPOCH = 0xA9
OPERAND_ID_NAMES: dict[int, str] = {
    TDX_OPERAND_ID_RCX: "TDX_OPERAND_ID_RCX", TDX_OPERAND_ID_RDX: "TDX_OPERAND_ID_RDX",
    TDX_OPERAND_ID_R8: "TDX_OPERAND_ID_R8", TDX_OPERAND_ID_R12: "TDX_OPERAND_ID_R12",
    TDX_OPERAND_ID_R13: "TDX_OPERAND_ID_R13",
    TDX_OPERAND_ID_TDR: "TDX_OPERAND_ID_TDR", TDX_OPERAND_ID_SEPT: "TDX_OPERAND_ID_SEPT",
    TDX_OPERAND_ID_TD_EPOCH: "TDX_OPERAND_ID_TD_EPOCH"}

ERROR_NAMES: dict[int, str] = {
    value: name
    for name, value in sorted(globals().items())
    if name.startswith("TDX_") and isinstance(value, int) and not name.startswith("TDX_OPERAND_ID")
    and name not in ("TDX_SEAMCALL_STATUS_MASK", "TDX_HPA_RANGE_NOT_FREE", "TDX_PAMT_NOT_BACKED")
}
ERROR_BY_NAME: dict[str, int] = {v: k for k, v in ERROR_NAMES.items()}


def status(err: int) -> int:
    """Keep only bits 63:32, as the kernel's comparisons (e.g. tdx_operand_busy()) do."""
    return err & TDX_SEAMCALL_STATUS_MASK


def err_name(err: int) -> str:
    """Name a completion status the way the kernel's TDX_BUG_ON output would (name + raw value)."""
    name = ERROR_NAMES.get(status(err), "TDX_UNKNOWN_ERROR")
    return f"{name} (0x{err:016x})"


def err_desc(err: int) -> str:
    """err_name() plus the operand id the module put in the low bits, e.g.
    TDX_OPERAND_BUSY | TDX_OPERAND_ID_SEPT (0x8000020000000092): which lock a BUSY met."""
    name = ERROR_NAMES.get(status(err), "TDX_UNKNOWN_ERROR")
    op = err & ~TDX_SEAMCALL_STATUS_MASK
    if op:
        name += " | " + OPERAND_ID_NAMES.get(op, f"operand {op:#x}")
    return f"{name} (0x{err:016x})"


def leaf_name(leaf: int) -> str:
    """The SEAMCALL's TDX-spec name, e.g. TDH.MEM.SEPT.ADD (the fallback is formatted only when needed:
    this runs for every SEAMCALL)."""
    name = LEAF_NAMES.get(leaf)
    return name if name is not None else f"SEAMCALL#{leaf}"


def tdx_operand_busy(err: int) -> bool:
    """tdx_operand_busy(): BUSY compares only the status part, any operand id."""
    return status(err) == TDX_OPERAND_BUSY
