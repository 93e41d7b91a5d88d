"""bug-remove-without-track: PAGE.REMOVE after BLOCK with no TDH.MEM.TRACK (stale TLBs may map it)."""

from .. import Variant


def tdx_track(kvm):
    return 0  # BUG: no TRACK, no kick
    yield  # pragma: no cover


VARIANT = Variant("bug-remove-without-track", "leaf removal skips TDH.MEM.TRACK + kick before REMOVE",
                  {"tdx_track": tdx_track}, kind="mutant", catches=("seamcall-unexpected-error",))
