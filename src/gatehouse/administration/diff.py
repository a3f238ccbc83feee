"""Readable differences between configurations: a unified diff of their canonical YAML.

Canonical YAML has sorted keys and block style, so two documents that mean the same differ
in nothing, and a change shows up on the lines of the fields it touches. Passwords inside
URLs (``postgresql+asyncpg://user:secret@db/...``) are masked, so a diff can be shown and
audited without spreading database passwords.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import yaml

from gatehouse.administration.model import DERIVED_AP_FIELDS, InstallationConfig

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@", re.IGNORECASE)
MASK = "***"


def mask_url_passwords(value: Any) -> Any:
    """A copy of a JSON-like value with the password of every URL replaced by ``***``."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", value)
    if isinstance(value, list):
        return [mask_url_passwords(item) for item in value]
    if isinstance(value, dict):
        return {key: mask_url_passwords(item) for key, item in value.items()}
    return value


#: libyaml's emitter when PyYAML has it: the same text, several times faster (a publish
#: renders the old and the new installation to diff them).
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def canonical_yaml(document: Any) -> str:
    """Sorted keys, block style, Unicode as is, URL passwords masked; ``""`` for None."""
    if document is None:
        return ""
    return yaml.dump(
        mask_url_passwords(document),
        Dumper=_DUMPER,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )


def unified_diff(old: str, new: str, old_label: str = "old", new_label: str = "new") -> str:
    """A unified diff of two texts (three lines of context); ``""`` when they are equal."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=old_label,
        tofile=new_label,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def diff_documents(old: Any, new: Any, old_label: str = "old", new_label: str = "new") -> str:
    """Diff two JSON-like documents (None: no document) as canonical YAML."""
    return unified_diff(canonical_yaml(old), canonical_yaml(new), old_label, new_label)


def effective_document(config: InstallationConfig) -> dict[str, Any]:
    """Every setting with its value, defaults included: what a config means. (The AP
    settings derived from installation-wide ones are left out: they cannot be set per AP.)"""
    derived = {"access_points": {"__all__": set(DERIVED_AP_FIELDS)}}
    return config.model_dump(mode="json", exclude=derived)


def diff_configs(
    old: InstallationConfig | None,
    new: InstallationConfig | None,
    old_label: str = "old",
    new_label: str = "new",
) -> str:
    """Diff what two configurations mean (defaults filled in, so ``workers: 1`` written out
    or left to its default is no change)."""
    return diff_documents(
        effective_document(old) if old is not None else None,
        effective_document(new) if new is not None else None,
        old_label,
        new_label,
    )
