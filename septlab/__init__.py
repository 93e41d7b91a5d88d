"""septlab: an executable model of Linux KVM's Intel TDX secure-EPT (S-EPT) page-table lifecycle."""

__version__ = "0.1.0"
