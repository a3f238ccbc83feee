"""One safe YAML loader for every configuration text: ``yaml.safe_load`` that refuses a
mapping repeating a key (PyYAML silently keeps the last one, losing what was written first)."""

from __future__ import annotations

import yaml

from gatehouse.config.messages import TOP_LEVEL, Loc, field_path, shown
from gatehouse.errors import ConfigError

#: libyaml's parser and composer when PyYAML was built with it (the wheels are): a
#: configuration of a hundred services parses about ten times faster than in pure Python.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """``yaml.safe_load``'s loader; its own class so that nothing registered on it changes
    PyYAML's global SafeLoader."""


_MERGE = "tag:yaml.org,2002:merge"


def _mark(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _duplicate_keys(loader: _Loader, root: yaml.Node) -> tuple[Loc, str] | None:
    """The first mapping (in document order) that repeats a key, and the sentence."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    found: list[tuple[yaml.Mark, Loc, str]] = []
    while stack:
        node, loc = stack.pop()
        if id(node) in seen:  # an alias: checked where its anchor is
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [(item, (*loc, i)) for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            first: dict[object, yaml.Mark] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = loader.construct_object(key_node)
                if key in first:
                    message = (
                        f"{_mark(key_node.start_mark)}: duplicate key {shown(key)} "
                        f"(first at line {first[key].line + 1})"
                    )
                    found.append((key_node.start_mark, loc, message))
                    continue
                first[key] = key_node.start_mark
                part = key if isinstance(key, str | int) and not isinstance(key, bool) else str(key)
                stack.append((value_node, (*loc, part)))
    if not found:
        return None
    _, loc, message = min(found, key=lambda item: (item[0].line, item[0].column))
    return loc, message


def parse_yaml(text: str, source: str = "") -> object:
    """YAML text to data, as ``yaml.safe_load`` reads it (an empty document is ``{}``), but
    a mapping that repeats a key is refused. Raises :class:`ConfigError` with line and
    column for syntax errors and duplicate keys."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return {}
        duplicate = _duplicate_keys(loader, root)
        if duplicate is not None:
            loc, message = duplicate
            raise ConfigError([(field_path(loc) or TOP_LEVEL, message)], source)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{_mark(mark)}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"{where}invalid YAML: {problem}")], source) from None
    finally:
        loader.dispose()
    return {} if data is None else data
