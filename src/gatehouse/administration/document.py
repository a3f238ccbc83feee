"""The configuration as text (YAML, or JSON which is YAML too) and as stored JSON data."""

from __future__ import annotations

import functools
from typing import Any

import yaml

from gatehouse.administration.model import InstallationConfig
from gatehouse.config.loader import parse_yaml, validate


def parse_text(text: str, source: str = "draft") -> object:
    """YAML text to data (:func:`~gatehouse.config.loader.parse_yaml`: safe, duplicate keys
    refused); syntax errors become :class:`ConfigError` with line and column."""
    return parse_yaml(text, source)


@functools.lru_cache(maxsize=4)
def parse_config(text: str, source: str = "draft") -> InstallationConfig:
    """Parse and validate a configuration text; every problem is reported with its path.

    The last few texts' configurations are kept (a frozen model: shared, never changed):
    saving a draft and publishing it parsed the same text three times, 13 ms each at 100
    services. The result depends on nothing but the text.
    """
    return validate(InstallationConfig, parse_text(text, source), source)


def config_document(config: InstallationConfig) -> dict[str, Any]:
    """The configuration as JSON data holding what was written (defaults left out);
    validating it gives the same configuration back."""
    return config.model_dump(mode="json", exclude_unset=True)


def render_yaml(document: Any) -> str:
    """Data as YAML text in field order, e.g. to start a draft from a stored version."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
