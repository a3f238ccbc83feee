"""The console's configuration forms as pure functions: a resource or a named rule edited in
a form becomes a change of the draft document, and the validation problems of the result
(``resources[2].backends[0]: not a URL``) are put back at the form's fields.

The draft stays one YAML text (what the REST API and ``gatehouse config`` edit): a form reads
the draft's data, changes one entry and the text is written again (comments are not kept).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from gatehouse.administration.document import parse_text, render_yaml
from gatehouse.errors import ConfigError

Problem = tuple[str, str]
Document = dict[str, Any]

#: The resource form's fields, in the order they are shown (and focused on error).
RESOURCE_FIELDS = ("id", "hosts", "path_prefix", "backends", "strip_prefix", "rule")
RULE_FIELDS = ("name", "condition")


class FormError(Exception):
    """A form that cannot become a document: its problems by field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class FieldProblems:
    """Problems sorted to the form's fields; ``other``: those of the rest of the draft
    (shown in the error summary with their path)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    other: list[Problem] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.other)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def _yaml_value(text: str, name: str) -> Any:
    """A YAML value typed in a form field (its syntax errors as the field's problems)."""
    try:
        return parse_text(text, name)
    except ConfigError as error:
        raise FormError([(name, message) for _, message in error.problems]) from None


def draft_document(text: str) -> Document:
    """The draft's data (an empty draft: an empty document)."""
    data = parse_text(text) if text.strip() else {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([("", "the draft is not a mapping")], "draft")
    return data


# --- resources ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceForm:
    """One resource as a form shows it; ``original_id`` is the id it had (None: new)."""

    original_id: str | None
    id: str = ""
    hosts: str = ""
    path_prefix: str = "/"
    backends: str = ""
    strip_prefix: bool = False
    rule: str = ""

    @classmethod
    def from_fields(cls, fields: Mapping[str, str], original_id: str | None) -> ResourceForm:
        return cls(
            original_id=original_id,
            id=fields.get("id", "").strip(),
            hosts=fields.get("hosts", ""),
            path_prefix=fields.get("path_prefix", "").strip(),
            backends=fields.get("backends", ""),
            strip_prefix=fields.get("strip_prefix", "") in ("on", "true", "1", "yes"),
            rule=fields.get("rule", ""),
        )

    @classmethod
    def of(cls, document: Mapping[str, Any], resource_id: str) -> ResourceForm:
        """The form of the draft's resource ``resource_id`` (KeyError: none)."""
        entry = next(r for r in resources_of(document) if r.get("id") == resource_id)
        rules = document.get("resource_rules") or {}
        rule = rules.get(resource_id) if isinstance(rules, dict) else None
        hosts = entry.get("hosts")
        return cls(
            original_id=resource_id,
            id=resource_id,
            hosts="\n".join(str(h) for h in hosts) if isinstance(hosts, list) else "",
            path_prefix=str(entry.get("path_prefix", "/")),
            backends="\n".join(str(b) for b in entry.get("backends") or []),
            strip_prefix=bool(entry.get("strip_prefix", False)),
            rule="" if rule is None else flow_yaml(rule),
        )


def resources_of(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    resources = document.get("resources") or []
    if not isinstance(resources, list):
        return []
    return [r for r in resources if isinstance(r, dict)]


def flow_yaml(value: Any) -> str:
    """A rule condition on one line where it fits: ``{groups_any: [staff]}``."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return text.removesuffix("\n...\n").strip()


def resource_index(document: Mapping[str, Any], resource_id: str) -> int | None:
    resources = document.get("resources") or []
    if not isinstance(resources, list):
        return None
    return next(
        (i for i, r in enumerate(resources) if isinstance(r, dict) and r.get("id") == resource_id),
        None,
    )


def apply_resource(document: Mapping[str, Any], form: ResourceForm) -> tuple[Document, int]:
    """The document with the form's resource written in (its other settings kept), and the
    resource's index. Raises FormError for what is wrong before the draft is validated."""
    new = copy.deepcopy(dict(document))
    problems: list[Problem] = []
    if not form.id:
        problems.append(("id", "required"))
    rule = _yaml_value(form.rule, "rule") if form.rule.strip() else None
    resources = new.get("resources")
    if not isinstance(resources, list):
        resources = new["resources"] = []
    index = resource_index(new, form.original_id) if form.original_id else None
    if form.original_id and index is None:
        problems.append(("id", f"the draft has no resource {form.original_id!r} any more"))
    taken = resource_index(new, form.id)
    if form.id and taken is not None and taken != index:
        problems.append(("id", f"the draft already has a resource {form.id!r}"))
    if problems:
        raise FormError(problems)
    entry: dict[str, Any] = {} if index is None else dict(resources[index])
    entry["id"] = form.id
    hosts = _lines(form.hosts)
    if hosts:
        entry["hosts"] = hosts
    else:
        entry.pop("hosts", None)
    entry["path_prefix"] = form.path_prefix or "/"
    entry["backends"] = _lines(form.backends)
    if form.strip_prefix:
        entry["strip_prefix"] = True
    else:
        entry.pop("strip_prefix", None)
    if index is None:
        resources.append(entry)
        index = len(resources) - 1
    else:
        resources[index] = {"id": form.id, **{k: v for k, v in entry.items() if k != "id"}}
    rules = new.get("resource_rules")
    if not isinstance(rules, dict):
        rules = {}
    if form.original_id and form.original_id != form.id:
        rules.pop(form.original_id, None)
    if rule is None:
        rules.pop(form.id, None)
    else:
        rules[form.id] = rule
    if rules:
        new["resource_rules"] = rules
    else:
        new.pop("resource_rules", None)
    return new, index


def remove_resource(document: Mapping[str, Any], resource_id: str) -> Document:
    new = copy.deepcopy(dict(document))
    index = resource_index(new, resource_id)
    if index is None:
        raise FormError([("id", f"the draft has no resource {resource_id!r}")])
    del new["resources"][index]
    rules = new.get("resource_rules")
    if isinstance(rules, dict):
        rules.pop(resource_id, None)
    return new


def resource_problems(problems: Iterable[Problem], index: int, resource_id: str) -> FieldProblems:
    """The draft's problems at the resource form's fields (``resources[i].backends[0]`` at
    backends, ``resource_rules.ID...`` at rule), each saying its path in the draft; the rest
    in ``other``."""
    out = FieldProblems()
    prefix, rule_path = f"resources[{index}]", f"resource_rules.{resource_id}"
    for path, message in problems:
        name: str | None = None
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            head = re.split(r"[.\[]", path[len(prefix) + 1 :], maxsplit=1)[0]
            name = head if head in RESOURCE_FIELDS else None
            if name is None:  # a setting the form does not show, or the whole entry
                out.other.append((path, message))
                continue
        elif path == rule_path or path.startswith((rule_path + ".", rule_path + "[")):
            name = "rule"
        if name is None:
            out.other.append((path, message))
        else:
            out.fields.setdefault(name, []).append(f"{path}: {message}")
    return out


# --- named rules -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleForm:
    original_name: str | None
    name: str = ""
    condition: str = ""

    @classmethod
    def from_fields(cls, fields: Mapping[str, str], original_name: str | None) -> RuleForm:
        return cls(original_name, fields.get("name", "").strip(), fields.get("condition", ""))

    @classmethod
    def of(cls, document: Mapping[str, Any], name: str) -> RuleForm:
        rules = document.get("rules") or {}
        if not isinstance(rules, dict) or name not in rules:
            raise KeyError(name)
        return cls(name, name, flow_yaml(rules[name]))


def apply_rule(document: Mapping[str, Any], form: RuleForm) -> Document:
    new = copy.deepcopy(dict(document))
    rules = new.get("rules")
    if not isinstance(rules, dict):
        rules = {}
    problems: list[Problem] = []
    if not form.name:
        problems.append(("name", "required"))
    if form.original_name is not None and form.original_name not in rules:
        problems.append(("name", f"the draft has no rule {form.original_name!r} any more"))
    if form.name and form.name != form.original_name and form.name in rules:
        problems.append(("name", f"the draft already has a rule {form.name!r}"))
    if not form.condition.strip():
        problems.append(("condition", "required: e.g. {groups_any: [staff]}"))
    if problems:
        raise FormError(problems)
    condition = _yaml_value(form.condition, "condition")
    if form.original_name is not None and form.original_name != form.name:
        # Keep the rule's place among the others.
        rules = {(form.name if k == form.original_name else k): v for k, v in rules.items()}
    rules[form.name] = condition
    new["rules"] = rules
    return new


def remove_rule(document: Mapping[str, Any], name: str) -> Document:
    new = copy.deepcopy(dict(document))
    rules = new.get("rules")
    if not isinstance(rules, dict) or name not in rules:
        raise FormError([("name", f"the draft has no rule {name!r}")])
    del rules[name]
    return new


def rule_problems(problems: Iterable[Problem], name: str) -> FieldProblems:
    """The draft's problems at the rule form's fields, each saying its path in the draft."""
    out = FieldProblems()
    path_of = f"rules.{name}"
    for path, message in problems:
        if path == path_of and ("rule name" in message or "built-in rule" in message):
            out.fields.setdefault("name", []).append(f"{path}: {message}")
        elif path == path_of or path.startswith((path_of + ".", path_of + "[")):
            out.fields.setdefault("condition", []).append(f"{path}: {message}")
        else:
            out.other.append((path, message))
    return out


# --- the draft as text -------------------------------------------------------------------------


def document_text(document: Mapping[str, Any]) -> str:
    return render_yaml(dict(document))


_STEP = re.compile(r"\[(\d+)\]")


def line_of(text: str, path: str) -> int | None:
    """The line (1-based) of the YAML text where the field at ``path`` (``a.b[0].c``) is
    written, or of the nearest enclosing field that is; None when the text does not parse
    or the path is empty."""
    if not path:
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    rest, line = path, None
    while rest:
        if isinstance(node, yaml.SequenceNode):
            step = _STEP.match(rest)
            if step is None or int(step.group(1)) >= len(node.value):
                break
            node = node.value[int(step.group(1))]
            rest = rest[step.end() :].removeprefix(".")
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            # The longest key the path starts with (rule names may hold dots).
            best = None
            for key, value in node.value:
                name = str(key.value)
                written = rest == name or rest.startswith((name + ".", name + "["))
                if written and (best is None or len(name) > len(best[0])):
                    best = (name, key, value)
            if best is None:
                break
            name, key, node = best
            line = key.start_mark.line + 1
            rest = rest[len(name) :].removeprefix(".")
        else:
            break
    return line


def syntax_line(message: str) -> int | None:
    """The line a YAML syntax error names (``line 3, column 5: ...``)."""
    match = re.match(r"line (\d+)", message)
    return int(match.group(1)) if match else None
