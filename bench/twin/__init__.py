"""The Python side of the SPIN twin (see bench/spin_vs_septlab.py)."""
