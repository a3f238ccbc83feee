"""Load YAML configuration files into models; errors name the field path."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from gatehouse.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as ``resources[2].backends[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _message(error: dict[str, object]) -> str:
    msg = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if error.get("type") == "extra_forbidden":
        msg = "unknown field"
    return msg


def validate(model: type[M], data: object, source: str = "") -> M:
    """Validate plain data against ``model``; raise :class:`ConfigError` with field paths."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [(field_path(tuple(err["loc"])), _message(dict(err))) for err in exc.errors()]
        raise ConfigError(problems, source) from None


def load_yaml(path: str | Path) -> object:
    """Read a YAML file; syntax errors become :class:`ConfigError` with line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file: {exc.strerror}")], str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"{where}invalid YAML: {problem}")], str(path)) from None
    return {} if data is None else data


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
