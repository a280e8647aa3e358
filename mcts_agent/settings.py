"""The base of every settings model (search, engine, pairs, training …): frozen, unknown keys
refused, and no YAML ``true`` passed off as the number 1."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Settings(BaseModel):
    """Typed settings loadable from YAML and overridable from the CLI."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: Any) -> Any:
        # pydantic's lax mode reads true as 1; a setting like `simulations: true` is a mistake
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if isinstance(value, bool) and field is not None and _numeric(field.annotation):
                    raise ValueError(f"{key} must be a number, got {str(value).lower()}")
        return data


def _numeric(annotation: Any) -> bool:
    """Whether ``annotation`` is int or float (possibly Optional), not bool."""
    if typing.get_origin(annotation) is typing.Union or isinstance(annotation, types.UnionType):
        kinds = set(typing.get_args(annotation)) - {type(None)}
    else:
        kinds = {annotation}
    return bool(kinds) and kinds <= {int, float}
