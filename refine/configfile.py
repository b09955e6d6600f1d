"""YAML config files validated by pydantic models: errors name each offending key and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A bad config: the message names each offending key and why."""


def describe(error: ValidationError, prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        key = ".".join([prefix] * bool(prefix) + [str(part) for part in item["loc"]])
        lines.append(f"  {key or '(top level)'}: {item['msg']}")
    return "\n".join(lines)


def parse(cls: type[T], data: Any, source: str = "config", prefix: str = "") -> T:
    """Validate `data` as `cls`; the error names each key (as `prefix.key` for a section)."""
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{describe(error, prefix)}") from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
