"""Diffs of canonical YAML: only real changes show, and database passwords never do."""

from __future__ import annotations

import difflib
import re

from hypothesis import given
from hypothesis import strategies as st

from gatehouse.administration.diff import (
    SectionCache,
    canonical_yaml,
    diff_configs,
    diff_documents,
    mask_url_passwords,
    unified_diff,
)
from gatehouse.administration.model import InstallationConfig
from gatehouse.config.loader import validate
from tests.administration.samples import ha, minimal


def test_canonical_yaml_sorts_keys_and_masks_url_passwords() -> None:
    text = canonical_yaml({"b": [2, 1], "a": {"url": "postgresql+asyncpg://gh:pw@db/x"}})
    assert text == "a:\n  url: postgresql+asyncpg://gh:***@db/x\nb:\n- 2\n- 1\n"
    assert canonical_yaml(None) == ""


def test_masking_keeps_urls_without_passwords() -> None:
    value = {
        "u": [
            "postgresql+asyncpg://gatehouse@db1/gatehouse",
            "postgresql+asyncpg://u:p%40ss@/db?host=a:5432&host=b:5432",
            "http://10.0.0.1:8080",
            "sqlite+aiosqlite:///var/gatehouse.db",
        ]
    }
    assert mask_url_passwords(value) == {
        "u": [
            "postgresql+asyncpg://gatehouse@db1/gatehouse",
            "postgresql+asyncpg://u:***@/db?host=a:5432&host=b:5432",
            "http://10.0.0.1:8080",
            "sqlite+aiosqlite:///var/gatehouse.db",
        ]
    }


def test_equal_documents_have_no_diff() -> None:
    assert diff_documents({"a": 1, "b": 2}, {"b": 2, "a": 1}) == ""
    assert unified_diff("x\n", "x\n") == ""


def test_a_default_written_out_is_no_change() -> None:
    old = validate(InstallationConfig, minimal())
    doc = minimal()
    doc["access_points"][0]["workers"] = 1
    assert diff_configs(old, validate(InstallationConfig, doc)) == ""


def test_a_change_shows_on_its_lines() -> None:
    old = validate(InstallationConfig, ha())
    doc = ha()
    doc["access_points"][0]["policy_services"] = ["ps2", "ps1"]
    doc["databases"]["user_db"] = "postgresql+asyncpg://gatehouse:new-pw@db3/gatehouse"
    diff = diff_configs(old, validate(InstallationConfig, doc), "version 3", "draft")
    assert diff.splitlines() == [
        "--- version 3",
        "+++ draft",
        "@@ -31,8 +31,8 @@",  # the failover settings and the identity headers come first
        "   metrics:",
        "     listen: null",
        "   policy_services:",
        "+  - ps2",
        "   - ps1",
        "-  - ps2",
        "   relay_discovery: true",
        "   send_timeout: 60.0",
        "   status_listen: null",
        # one line per AP entry (tls) and per default identity header list (the assertion),
        # one per auth entry (verify_queue), per AP entry (status_listen); two per auth entry
        # (oath_db, oath_keyring), the otp settings and databases.oath_db; one per auth
        # entry (distribution), the codes and invitations settings, databases.oauth2_db,
        # the metrics and database settings (metrics.listen, database.failover_wait), and
        # one per failover block (fall)
        "@@ -171,7 +171,7 @@",
        "   oauth2_db: null",
        "   outbox_db: postgresql+asyncpg://gatehouse_dist:***@db1.internal:5432/gatehouse_outbox",
        "   session_db: null",
        "-  user_db: postgresql+asyncpg://gatehouse:***@db1.internal:5432/gatehouse",
        "+  user_db: postgresql+asyncpg://gatehouse:***@db3/gatehouse",
        " distribution:",
        "   channels:",
        "   - ca_file: null",
    ]
    assert "new-pw" not in diff
    assert "s3cret-pw" not in diff
    assert "outbox-pw" not in diff


def test_derived_access_point_settings_are_not_in_the_diffed_document() -> None:
    diff = diff_configs(None, validate(InstallationConfig, ha()))
    assert "session_cookie" not in diff
    assert "reserved_prefix" not in diff
    assert "decision_headers" not in diff


def test_a_first_version_is_all_additions() -> None:
    diff = diff_configs(None, validate(InstallationConfig, minimal()), "nothing", "version 1")
    body = diff.splitlines()[3:]
    assert body
    assert all(line.startswith("+") for line in body)


_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def patched(old: list[str], diff: str) -> list[str]:
    """``old`` with a unified diff applied, checking every line the diff says it has."""
    lines = diff.splitlines(keepends=True)[2:]  # the ---/+++ labels
    out: list[str] = []
    at = 0  # lines of old consumed
    i = 0
    while i < len(lines):
        match = _HUNK.match(lines[i])
        assert match, lines[i]
        start, count = int(match[1]), int(match[2] if match[2] is not None else 1)
        first = start - 1 if count else start  # an empty range names the line before
        out += old[at:first]
        at = first
        i += 1
        while i < len(lines) and not lines[i].startswith("@@"):
            kind, text = lines[i][0], lines[i][1:]
            if kind in " -":
                assert old[at] == text, (at, old[at], text)
                at += 1
            if kind in " +":
                out.append(text)
            i += 1
    return out + old[at:]


texts = st.lists(st.sampled_from(["a\n", "b\n", "c\n", "d\n"]), max_size=40)


@given(texts, texts)
def test_a_diff_turns_the_old_text_into_the_new(old: list[str], new: list[str]) -> None:
    # The common start and end are left out before difflib matches (issue 20: 20 ms of a
    # publish at 100 services); the hunks must still say exactly what changed, where.
    diff = unified_diff("".join(old), "".join(new))
    assert patched(old, diff) == new
    assert (diff == "") == (old == new)


@given(st.lists(st.integers(0, 60), unique=True, max_size=30), st.data())
def test_a_diff_of_distinct_lines_is_difflibs(numbers: list[int], data: st.DataObject) -> None:
    old = [f"line {n}\n" for n in numbers]
    new = data.draw(st.permutations(old)) if data.draw(st.booleans()) else list(old)
    new = [line for line in new if data.draw(st.integers(0, 4))]
    new.insert(data.draw(st.integers(0, len(new))), "added\n")
    expected = "".join(difflib.unified_diff(old, new, fromfile="old", tofile="new"))
    assert unified_diff("".join(old), "".join(new)) == expected


scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
documents = st.dictionaries(st.text(max_size=6), json_like, max_size=5)


@given(st.lists(documents, min_size=1, max_size=4))
def test_sections_kept_render_what_the_whole_document_renders(
    docs: list[dict[str, object]],
) -> None:
    # Each publish renders only the sections that changed since the last (issue 20).
    cache = SectionCache()
    for doc in docs:
        assert cache.render(doc) == canonical_yaml(doc)


def test_a_section_equal_to_python_but_not_in_json_is_rendered_again() -> None:
    cache = SectionCache()
    assert cache.render({"a": 1, "b": [True]}) == "a: 1\nb:\n- true\n"
    assert cache.render({"a": True, "b": [1]}) == "a: true\nb:\n- 1\n"
