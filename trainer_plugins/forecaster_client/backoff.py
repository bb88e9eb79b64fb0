"""How long a plugin leaves the service alone after a failed call: 0.5 s doubling to 30 s."""

from __future__ import annotations

import random
from collections.abc import Callable

START_S = 0.5
MAX_S = 30.0


class Backoff:
    """Exponential backoff: each ``next()`` is the wait before the next try, and doubles the one
    after it (up to ``max_s``); ``reset()`` after a success.

    Args:
        jitter: each wait is spread over ±jitter of itself, so that jobs that failed together
            do not come back together (0: exact waits).
    """

    def __init__(
        self,
        start_s: float = START_S,
        max_s: float = MAX_S,
        *,
        jitter: float = 0.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.start_s = start_s
        self.max_s = max_s
        self.jitter = jitter
        self._rng = rng
        self.delay_s = start_s

    def next(self) -> float:
        """The wait before the next try; the one after it is twice as long."""
        delay = self.delay_s
        if self.jitter:
            delay *= 1.0 - self.jitter + 2.0 * self.jitter * self._rng()
        self.delay_s = min(self.delay_s * 2, self.max_s)
        return delay

    def longest(self) -> None:
        """From now on, wait the longest (a failure that retrying soon will not fix)."""
        self.delay_s = self.max_s

    def reset(self) -> None:
        self.delay_s = self.start_s
