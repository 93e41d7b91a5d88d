"""Invariants (named, stable), the checker that evaluates them from probe events, and report formats."""
