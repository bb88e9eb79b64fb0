"""The one hash behind every seeded choice and content key: SHA-256 of the whole text.

Python's `hash(str)` is salted per process, so nothing that must agree across processes,
machines and runs may use it: which tasks are test or train (corpus/splits.py), which runs an
evaluation samples from a task and in what order (evaluation/pool.py), a training example's
cutoffs, and the key that names a study's set of completed runs all go through here.
"""

from __future__ import annotations

import hashlib


def digest(text: str) -> str:
    """The hex SHA-256 of text: a name for it that is the same everywhere."""
    return hashlib.sha256(text.encode()).hexdigest()


def seed_of(text: str) -> int:
    """A 64-bit seed for np.random.default_rng([seed, seed_of(text)]), from all of text."""
    return int(digest(text)[:16], 16)
