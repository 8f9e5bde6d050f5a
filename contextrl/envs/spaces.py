"""`UnicodeText`: a Gymnasium `Text` space that admits any string up to `max_length`.

Gymnasium's `Text` checks membership against a finite charset; tool output and code are
arbitrary Unicode, so `contains` accepts any `str` of bounded length. `sample` still
draws from a printable charset so `check_env` and random agents work.
"""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text

_SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " \n"


class UnicodeText(Text):
    def __init__(self, max_length: int = 1_000_000, min_length: int = 0, seed: int | None = None):
        super().__init__(max_length=max_length, min_length=min_length, charset=_SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, UnicodeText) and other.min_length == self.min_length and other.max_length == self.max_length
