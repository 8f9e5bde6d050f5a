"""Building config dataclasses from plain mappings (YAML sections, JSON).

One rule for every config: an unknown key is an error that names it, suggests the closest
field and lists the fields; everything else is checked by the dataclass's own
`__post_init__`. `FromDict` gives a dataclass that `from_dict` classmethod.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any, Mapping, TypeVar

from contextrl.errors import ConfigError

T = TypeVar("T")


def check_known_fields(cls: type, data: Mapping[str, Any]) -> None:
    """Raise `ConfigError` on the first key of `data` that is not a field of dataclass `cls`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a mapping of its fields, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            raise ConfigError(f"{cls.__name__}: unknown field {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; fields are {names}")


def from_mapping(cls: type[T], data: Mapping[str, Any]) -> T:
    """`cls(**data)` after `check_known_fields`."""
    check_known_fields(cls, data)
    return cls(**data)


class FromDict:
    """Mixin for config dataclasses: `Config.from_dict(mapping)`, unknown keys rejected."""

    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
        """Build from a mapping (e.g. a YAML section); unknown keys raise ConfigError."""
        return from_mapping(cls, d)


__all__ = ["FromDict", "check_known_fields", "from_mapping"]
