"""Model of the Intel TDX module: PAMT, S-EPT trees, TD lifecycle, TLB epochs, SEAMCALL leaves."""
