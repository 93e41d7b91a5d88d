"""arch/x86/virt/vmx/tdx: the kernel's SEAMCALL wrappers and Dynamic PAMT management."""
