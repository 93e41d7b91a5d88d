"""Per-run metrics: pages held by owner, retention of reclaimed S-EPT pages, SEAMCALLs, RCU, PAMT."""
