"""The console's configuration forms (pure): a resource or rule form becomes a change of
the draft document, and the draft's validation problems land at the form's fields."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gatehouse.administration.console import config_forms as forms
from gatehouse.administration.console.config_forms import (
    FormError,
    ResourceForm,
    RuleForm,
    apply_resource,
    apply_rule,
    line_of,
    remove_resource,
    remove_rule,
    resource_problems,
    rule_problems,
)
from gatehouse.administration.document import parse_config, render_yaml
from gatehouse.errors import ConfigError
from tests.administration.samples import HA


def doc() -> dict[str, Any]:
    return copy.deepcopy(HA)


def problems_of(document: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        parse_config(render_yaml(document))
    except ConfigError as error:
        return list(error.problems)
    return []


def test_a_resource_form_round_trips_and_keeps_settings_it_does_not_show() -> None:
    document = doc()
    document["resources"][0]["read_timeout"] = 5
    form = ResourceForm.of(document, "wiki")
    assert form.hosts == "wiki.example"
    assert form.backends == "http://10.0.2.5:8000"
    assert form.rule == "{rule: ops}"
    changed = ResourceForm.from_fields(
        {
            "id": "wiki",
            "hosts": "wiki.example\nwiki2.example",
            "path_prefix": "/w",
            "backends": "http://10.0.2.5:8000\nhttp://10.0.2.9:8000",
            "strip_prefix": "on",
            "rule": "{groups_any: [staff]}",
        },
        "wiki",
    )
    new, index = apply_resource(document, changed)
    assert index == 0
    assert new["resources"][0] == {
        "id": "wiki",
        "hosts": ["wiki.example", "wiki2.example"],
        "path_prefix": "/w",
        "backends": ["http://10.0.2.5:8000", "http://10.0.2.9:8000"],
        "read_timeout": 5,
        "strip_prefix": True,
    }
    assert new["resource_rules"]["wiki"] == {"groups_any": ["staff"]}
    assert "strip_prefix" not in document["resources"][0]  # the original is unchanged
    assert problems_of(new) == []


def test_a_new_resource_is_appended_and_an_empty_rule_means_authenticated() -> None:
    fields = {"id": "crm", "path_prefix": "/crm", "backends": "http://10.0.2.10", "rule": ""}
    new, index = apply_resource(doc(), ResourceForm.from_fields(fields, None))
    assert index == len(HA["resources"])
    assert new["resources"][index] == {
        "id": "crm",
        "path_prefix": "/crm",
        "backends": ["http://10.0.2.10"],
    }
    assert "crm" not in new["resource_rules"]
    assert problems_of(new) == []


def test_renaming_a_resource_moves_its_rule() -> None:
    form = ResourceForm.of(doc(), "wiki")
    renamed = ResourceForm.from_fields(
        {"id": "docs", "backends": form.backends, "rule": form.rule}, "wiki"
    )
    new, _ = apply_resource(doc(), renamed)
    assert "wiki" not in new["resource_rules"]
    assert new["resource_rules"]["docs"] == {"rule": "ops"}


@pytest.mark.parametrize(
    ("fields", "original", "field", "text"),
    [
        ({"id": "", "backends": "http://x"}, None, "id", "required"),
        ({"id": "status", "backends": "http://x"}, None, "id", "already has a resource"),
        ({"id": "gone", "backends": "http://x"}, "nothere", "id", "no resource 'nothere'"),
        ({"id": "x", "backends": "http://x", "rule": "{a: [}"}, None, "rule", "invalid YAML"),
    ],
)
def test_form_errors_name_their_field(
    fields: dict[str, str], original: str | None, field: str, text: str
) -> None:
    with pytest.raises(FormError) as caught:
        apply_resource(doc(), ResourceForm.from_fields(fields, original))
    assert [p for p, _ in caught.value.problems] == [field]
    assert text in caught.value.problems[0][1]


def test_the_drafts_problems_land_at_the_resource_forms_fields() -> None:
    fields = {
        "id": "wiki",
        "path_prefix": "wiki",
        "backends": "ftp://x",
        "rule": "{rule: opps}",
    }
    new, index = apply_resource(doc(), ResourceForm.from_fields(fields, "wiki"))
    found = resource_problems(problems_of(new), index, "wiki")
    assert set(found.fields) == {"path_prefix", "backends"}
    assert "not a URL" in found.fields["backends"][0]
    # The rule is checked once the fields are valid.
    fields.update(path_prefix="/wiki", backends="http://10.0.2.5")
    new, index = apply_resource(doc(), ResourceForm.from_fields(fields, "wiki"))
    found = resource_problems(problems_of(new), index, "wiki")
    assert found.fields == {"rule": ["resource_rules.wiki.rule: unknown rule 'opps'"]}
    assert found.other == []


def test_problems_elsewhere_in_the_draft_are_kept_with_their_path() -> None:
    found = resource_problems(
        [
            ("resources[3].backends[0]", "bad"),
            ("rules.x", "worse"),
            ("resources[0].tls_verify", "t"),
        ],
        0,
        "wiki",
    )
    assert found.fields == {}
    assert found.other == [
        ("resources[3].backends[0]", "bad"),
        ("rules.x", "worse"),
        ("resources[0].tls_verify", "t"),
    ]


def test_a_rule_form_edits_renames_and_reports_at_its_fields() -> None:
    form = RuleForm.of(doc(), "internal")
    assert form.condition == "{ip: [10.0.0.0/8]}"
    new = apply_rule(
        doc(), RuleForm.from_fields({"name": "lan", "condition": form.condition}, "internal")
    )
    assert list(new["rules"]) == ["ops", "finance-team", "lan", "teams"]
    bad = apply_rule(
        doc(),
        RuleForm.from_fields({"name": "internal", "condition": "{ip: [10.0.0.0/33]}"}, "internal"),
    )
    found = rule_problems(problems_of(bad), "internal")
    assert found.fields == {
        "condition": [
            "rules.internal.ip[0]: not an IP network: '10.0.0.0/33' (use CIDR, e.g. 10.0.0.0/8)"
        ]
    }
    bad = apply_rule(
        doc(), RuleForm.from_fields({"name": "public", "condition": "authenticated"}, None)
    )
    found = rule_problems(problems_of(bad), "public")
    assert list(found.fields) == ["name"]
    with pytest.raises(FormError) as caught:
        apply_rule(doc(), RuleForm.from_fields({"name": "ops", "condition": ""}, None))
    assert [p for p, _ in caught.value.problems] == ["name", "condition"]


def test_removing_a_rule_still_referenced_is_reported_where_it_is_used() -> None:
    new = remove_rule(doc(), "ops")
    assert ("resource_rules.wiki.rule", "unknown rule 'ops'") in problems_of(new)
    new = remove_resource(doc(), "wiki")
    assert "wiki" not in new["resource_rules"]
    assert problems_of(new) == []
    with pytest.raises(FormError):
        remove_resource(doc(), "nope")


def test_line_of_finds_the_field_a_path_names() -> None:
    text = render_yaml(doc())
    lines = text.splitlines()
    assert lines[line_of(text, "resources[1].backends[0]") - 1].strip() == "- http://10.0.2.6:80"  # type: ignore[operator]
    assert lines[line_of(text, "rules.finance-team.any[0]") - 1].strip().startswith("- users:")  # type: ignore[operator]
    assert lines[line_of(text, "resource_rules.wiki.rule") - 1].strip() == "rule: ops"  # type: ignore[operator]
    # A path past what is written: the nearest field that is.
    assert line_of(text, "sessions.absolute_timeout") == line_of(text, "sessions")
    assert line_of(text, "") is None
    assert line_of("a: [", "a") is None
    assert forms.syntax_line("line 3, column 5: invalid YAML") == 3
