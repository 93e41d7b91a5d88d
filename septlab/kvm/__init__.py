"""arch/x86/kvm: the TDP MMU with a mirror root, KVM's TDX glue, VM and vCPU lifecycle."""
