"""Load YAML configuration files into models; errors name the field path.

Every problem is reported as ``(field path, sentence)`` (:mod:`.messages` writes the
sentences); YAML is read by one safe loader that refuses duplicate keys (:mod:`.yaml_text`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from gatehouse.config.messages import TOP_LEVEL, field_path, problems
from gatehouse.config.yaml_text import parse_yaml
from gatehouse.errors import ConfigError

__all__ = [
    "TOP_LEVEL",
    "field_path",
    "load_file",
    "load_yaml",
    "parse_yaml",
    "problems_error",
    "validate",
]

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: object, source: str = "") -> M:
    """Validate plain data against ``model``; raise :class:`ConfigError` with field paths."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems(model, data, exc.errors()), source) from None


def load_yaml(path: str | Path) -> object:
    """Read a YAML file; syntax errors and duplicate keys become :class:`ConfigError` with
    line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file: {exc.strerror}")], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError([("", "cannot read config file: not UTF-8 text")], str(path)) from None
    return parse_yaml(text, str(path))


def load_file(model: type[M], path: str | Path) -> M:
    """Load and validate a YAML config file."""
    return validate(model, load_yaml(path), str(path))


def problems_error(
    title: str, problems: Iterable[tuple[tuple[int | str, ...], str]], kind: str = "config"
) -> ValidationError:
    """A pydantic error carrying ``(location, message)`` problems found by a model validator,
    so :func:`validate` reports them with their field paths like any other error."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError(kind, "{message}", {"message": message}),
                loc=loc,
                input=None,
            )
            for loc, message in problems
        ],
    )
