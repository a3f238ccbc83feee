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

import orjson
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


#: Lines of context around each change.
CONTEXT = 3
_HUNK = re.compile(r"@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def unified_diff(old: str, new: str, old_label: str = "old", new_label: str = "new") -> str:
    """A unified diff of two texts (three lines of context); ``""`` when they are equal.

    The lines both texts share at their start and at their end are left out before difflib
    matches the rest (all but the context it shows): they are equal in any diff, and
    difflib's matching costs grow with the lines it is given. An installation's canonical
    YAML at 100 services is about 5,000 lines where a publish changes a few; matching all
    of them took 20 ms of every publish.
    """
    a = old.splitlines(keepends=True)
    b = new.splitlines(keepends=True)
    shortest = min(len(a), len(b))
    head = 0
    while head < shortest and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < shortest - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    if head == len(a) == len(b):
        return ""
    start = max(0, head - CONTEXT)
    drop_end = max(0, tail - CONTEXT)
    lines = difflib.unified_diff(
        a[start : len(a) - drop_end],
        b[start : len(b) - drop_end],
        fromfile=old_label,
        tofile=new_label,
    )
    out = []
    for line in lines:
        if start and line.startswith("@@"):
            line = _HUNK.sub(lambda m: _shifted(m, start), line, count=1)
        out.append(line if line.endswith("\n") else line + "\n")
    return "".join(out)


def _shifted(match: re.Match[str], offset: int) -> str:
    """A hunk header with both first line numbers moved down by ``offset``."""
    old_first, old_count, new_first, new_count = match.groups()
    return (
        f"@@ -{int(old_first) + offset}{old_count or ''} "
        f"+{int(new_first) + offset}{new_count or ''} @@"
    )


def diff_documents(old: Any, new: Any, old_label: str = "old", new_label: str = "new") -> str:
    """Diff two JSON-like documents (None: no document) as canonical YAML."""
    return unified_diff(canonical_yaml(old), canonical_yaml(new), old_label, new_label)


def effective_document(config: InstallationConfig) -> dict[str, Any]:
    """Every setting with its value, defaults included: what a config means. (The AP
    settings derived from installation-wide ones are left out: they cannot be set per AP.)"""
    derived = {"access_points": {"__all__": set(DERIVED_AP_FIELDS)}}
    return config.model_dump(mode="json", exclude=derived)


def effective_yaml(config: InstallationConfig) -> str:
    """What ``config`` means (:func:`effective_document`) as canonical YAML: one side of
    :func:`diff_configs`, kept by the store for the next publish's diff."""
    return canonical_yaml(effective_document(config))


class SectionCache:
    """Canonical YAML of documents rendered one top-level key at a time, each section's
    text kept while its value stays equal: the next version of an installation mostly
    repeats the last (at 100 services its 5,000 lines took 20 ms of every publish to
    render; the one section that changed takes a fraction of it). The text is the same as
    :func:`canonical_yaml` of the whole document: a block mapping's keys, sorted, each
    starting at the first column."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[bytes, str]] = {}

    def render(self, document: dict[str, Any]) -> str:
        if not document:
            return canonical_yaml(document)
        kept: dict[str, tuple[bytes, str]] = {}
        for key in sorted(document):
            value = document[key]
            # Compared as JSON bytes, not with ==, for which True, 1 and 1.0 are equal.
            try:
                raw = orjson.dumps(value)
            except TypeError:
                raw = b""  # not JSON: rendered every time
            old = self._kept.get(key)
            if raw and old is not None and old[0] == raw:
                text = old[1]
            else:
                text = canonical_yaml({key: value})
            kept[key] = (raw, text)
        self._kept = kept
        return "".join(text for _, text in kept.values())

    def effective(self, config: InstallationConfig) -> str:
        """:func:`effective_yaml` of ``config``."""
        return self.render(effective_document(config))


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
