"""Offline evaluation: forecast accuracy over a corpus (and, later, the stopping replay)."""
