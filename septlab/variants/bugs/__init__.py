"""Mutants: each re-introduces one real mistake and must be caught by some invariant."""
