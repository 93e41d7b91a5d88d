"""Host kernel primitives the KVM model runs on: tasks and steps, locks + lockdep, RCU, pages, caches."""
