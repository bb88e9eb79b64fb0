"""What one request may carry: the limits a transport checks before the engine sees a request.

Each limit is a setting of the same name (forecaster/config.py). A request beyond one is
INVALID_ARGUMENT with a message naming the field and the setting, and showing the value cut
short (errors.shown), so neither the work nor the error grows with what a client sends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from forecaster.errors import InvalidArgumentError, shown

if TYPE_CHECKING:
    from forecaster.config import Settings

# Strings with a closed set of values (a decay shape, a policy or forecaster name) are short.
_MAX_KEYWORD_CHARS = 64


@dataclass(frozen=True)
class Limits:
    """The request limits; the defaults are the settings' defaults."""

    max_at_steps: int = 1_000
    max_quantile_levels: int = 99
    max_name_chars: int = 128
    max_metric_chars: int = 128
    max_config_keys: int = 1_000
    max_config_bytes: int = 64 * 1024
    max_schedule_pairs: int = 10_000
    max_step_value: int = 10**12
    page_size: int = 100
    max_page_size: int = 1_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})

    def name(self, field: str, value: str) -> str:
        """A study or run name as sent (emptiness is the store's to refuse, with its words)."""
        if len(value) > self.max_name_chars:
            raise InvalidArgumentError(
                f"{field} is {len(value)} characters; the limit max_name_chars is "
                f"{self.max_name_chars}: {shown(value)}."
            )
        return value

    def metric(self, field: str, value: str) -> str:
        if len(value) > self.max_metric_chars:
            raise InvalidArgumentError(
                f"{field} is {len(value)} characters; the limit max_metric_chars is "
                f"{self.max_metric_chars}: {shown(value)}."
            )
        return value

    def keyword(self, field: str, value: str) -> str:
        """A name from a closed set (policy, forecaster, decay shape): short, or not one."""
        if len(value) > _MAX_KEYWORD_CHARS:
            raise InvalidArgumentError(
                f"{field} is {len(value)} characters, longer than any known one "
                f"({_MAX_KEYWORD_CHARS}): {shown(value)}."
            )
        return value

    def step(self, field: str, value: int) -> int:
        """A step, budget or schedule length: beyond max_step_value it would overflow the
        forecast grid (and no training runs 10^12 steps)."""
        if abs(value) > self.max_step_value:
            raise InvalidArgumentError(
                f"{field}={value} is beyond the largest step the service accepts, "
                f"max_step_value={self.max_step_value}."
            )
        return value

    def count(self, field: str, n: int, setting: str) -> None:
        """n items of a repeated field against the limit named by setting."""
        limit: int = getattr(self, setting)
        if n > limit:
            raise InvalidArgumentError(
                f"{field} has {n} entries; the limit {setting} is {limit}. Send fewer."
            )

    def page(self, field: str, requested: int) -> int:
        """The page size to use: the default for 0, refused when negative, capped at the max."""
        if requested < 0:
            raise InvalidArgumentError(f"{field} must be >= 0 (0 = default); got {requested}.")
        return min(requested or self.page_size, self.max_page_size)
