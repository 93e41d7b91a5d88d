"""Explorers: the scheduler runtime, choosers (seeded random, replay) and run drivers."""
