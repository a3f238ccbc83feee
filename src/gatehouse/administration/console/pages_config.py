"""The console's configuration pages: resources and access rules edited in the draft (a
form per resource and rule, or the whole draft as YAML), the draft's problems at their
fields, the diff against the published version, Publish with every service's
acknowledgement as it arrives, and rollback to an earlier version.

Every change goes through the same :class:`AdministrationService` calls as the REST API
(``save_draft``, ``diff``, ``publish``, ``rollback``), so the same checks apply and the same
audit entries are written, under the administrator's name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from starlette.responses import JSONResponse, Response

from gatehouse.administration.console import config_forms as forms
from gatehouse.administration.console.app import ConsoleRoute
from gatehouse.administration.console.config_forms import (
    FieldProblems,
    FormError,
    ResourceForm,
    RuleForm,
)
from gatehouse.administration.console.context import ConsolePage
from gatehouse.administration.console.page_support import (
    ShownProblem,
    draft_problems,
    field_id,
    removal_ids,
    summary_of,
)
from gatehouse.administration.console.publish_status import ack_rows, finished, summary
from gatehouse.administration.errors import AdminError, NoDraft, RemovalRefused
from gatehouse.errors import ConfigError

RESOURCE_LABELS = {
    "id": "Id",
    "hosts": "Hosts",
    "path_prefix": "Path prefix",
    "backends": "Backends",
    "strip_prefix": "Strip the prefix",
    "rule": "Access rule",
}
RULE_LABELS = {"name": "Name", "condition": "Condition"}
DRAFT_FIELD = "draft-text"
MAX_COMMENT = 1000


async def _draft_text(page: ConsolePage) -> tuple[str, Any]:
    """The draft's text and its metadata (None: no draft yet)."""
    try:
        draft = await page.service.draft()
    except NoDraft:
        return "", None
    return draft.text, draft


async def _save(page: ConsolePage, document: dict[str, Any], allow: Sequence[str] = ()) -> None:
    await page.service.save_draft(forms.document_text(document), list(allow))


def _said(problems: Iterable[tuple[str, str]]) -> str:
    """Problems as one line of a flash message: ``path: message; ...``."""
    return "; ".join(f"{p}: {m}" if p else m for p, m in problems)


def _by_field(error: FormError) -> FieldProblems:
    """A refused form's problems sorted to its fields."""
    fields: dict[str, list[str]] = {}
    for name, message in error.problems:
        fields.setdefault(name, []).append(message)
    return FieldProblems(fields)


def _render_form(
    page: ConsolePage,
    template: str,
    labels: dict[str, str],
    form: ResourceForm | RuleForm,
    found: FieldProblems | None,
    status: int,
) -> Response:
    """A resource's or a named rule's form, with its problems at their fields."""
    found = found or FieldProblems()
    return page.render(
        template,
        status_code=status,
        form=form,
        errors=found.fields,
        problems=summary_of(found.fields, labels, found.other),
        labels=labels,
        field_id=field_id,
    )


# --- overview -----------------------------------------------------------------------------------


async def config_home(page: ConsolePage) -> Response:
    text, draft = await _draft_text(page)
    problems: list[tuple[str, str]] = []
    document: dict[str, Any] = {}
    try:
        document = forms.draft_document(text)
    except ConfigError as error:
        problems = list(error.problems)
    rules = document.get("resource_rules") or {}
    resources = [
        {
            "id": r.get("id", ""),
            "hosts": ", ".join(str(h) for h in r.get("hosts") or ["*"]),
            "path_prefix": r.get("path_prefix", "/"),
            "backends": [str(b) for b in r.get("backends") or []],
            "rule": forms.flow_yaml(rules[r["id"]])
            if isinstance(rules, dict) and rules.get(r.get("id")) is not None
            else "authenticated",
        }
        for r in forms.resources_of(document)
    ]
    named = document.get("rules") or {}
    latest = page.service.latest
    diff = ""
    if draft is not None:
        try:
            diff = await page.service.diff(None)
        except ConfigError as error:
            problems = list(error.problems)
    return page.render(
        "config.html",
        draft=draft,
        resources=resources,
        rules=[{"name": k, "condition": forms.flow_yaml(v)} for k, v in named.items()]
        if isinstance(named, dict)
        else [],
        global_rule=forms.flow_yaml(document.get("global_rule", "public")),
        published=latest.number if latest else None,
        changed=bool(diff),
        problems=draft_problems(text, problems, DRAFT_FIELD),
        can_draft=page.admin.can("config.draft"),
        can_publish=page.admin.can("config.publish"),
    )


# --- a resource ---------------------------------------------------------------------------------


def _render_resource(
    page: ConsolePage,
    form: ResourceForm,
    found: FieldProblems | None = None,
    status: int = 200,
) -> Response:
    return _render_form(page, "config_resource.html", RESOURCE_LABELS, form, found, status)


async def resource_form(page: ConsolePage) -> Response:
    resource_id = page.request.path_params.get("resource_id")
    if resource_id is None:
        return _render_resource(page, ResourceForm(None))
    text, _ = await _draft_text(page)
    try:
        form = ResourceForm.of(forms.draft_document(text), resource_id)
    except (StopIteration, ConfigError):
        return page.redirect("/console/config", flash=f"The draft has no resource {resource_id!r}.")
    return _render_resource(page, form)


async def save_resource(page: ConsolePage) -> Response:
    original = page.request.path_params.get("resource_id")
    form = ResourceForm.from_fields(await page.form(), original)
    text, _ = await _draft_text(page)
    try:
        document, index = forms.apply_resource(forms.draft_document(text), form)
    except FormError as error:
        return _render_resource(page, form, _by_field(error), 422)
    except ConfigError as error:  # the draft itself does not parse: the YAML editor fixes it
        return _render_resource(page, form, FieldProblems(other=list(error.problems)), 422)
    try:
        await _save(page, document)
    except (ConfigError, RemovalRefused) as error:
        found = forms.resource_problems(error.problems, index, form.id)
        return _render_resource(page, form, found, 422)
    verb = "added to" if original is None else "saved in"
    return page.redirect("/console/config", flash=f"Resource {form.id!r} {verb} the draft.")


async def delete_resource(page: ConsolePage) -> Response:
    resource_id = page.request.path_params["resource_id"]
    await page.form()
    text, _ = await _draft_text(page)
    try:
        document = forms.remove_resource(forms.draft_document(text), resource_id)
        # Deleting it here is on purpose: the removal guard may let it go.
        await _save(page, document, [resource_id])
    except (FormError, ConfigError, RemovalRefused) as error:
        said = _said(error.problems)
        return page.redirect(
            "/console/config", flash=f"Resource {resource_id!r} not deleted: {said}"
        )
    return page.redirect(
        "/console/config", flash=f"Resource {resource_id!r} deleted from the draft."
    )


# --- a named rule -------------------------------------------------------------------------------


def _render_rule(
    page: ConsolePage, form: RuleForm, found: FieldProblems | None = None, status: int = 200
) -> Response:
    return _render_form(page, "config_rule.html", RULE_LABELS, form, found, status)


async def rule_form(page: ConsolePage) -> Response:
    name = page.request.path_params.get("name")
    if name is None:
        return _render_rule(page, RuleForm(None))
    text, _ = await _draft_text(page)
    try:
        form = RuleForm.of(forms.draft_document(text), name)
    except (KeyError, ConfigError):
        return page.redirect("/console/config", flash=f"The draft has no rule {name!r}.")
    return _render_rule(page, form)


async def save_rule(page: ConsolePage) -> Response:
    original = page.request.path_params.get("name")
    form = RuleForm.from_fields(await page.form(), original)
    text, _ = await _draft_text(page)
    try:
        document = forms.apply_rule(forms.draft_document(text), form)
    except FormError as error:
        return _render_rule(page, form, _by_field(error), 422)
    except ConfigError as error:
        return _render_rule(page, form, FieldProblems(other=list(error.problems)), 422)
    try:
        await _save(page, document)
    except (ConfigError, RemovalRefused) as error:
        return _render_rule(page, form, forms.rule_problems(error.problems, form.name), 422)
    return page.redirect("/console/config", flash=f"Rule {form.name!r} saved in the draft.")


async def delete_rule(page: ConsolePage) -> Response:
    name = page.request.path_params["name"]
    await page.form()
    text, _ = await _draft_text(page)
    try:
        await _save(page, forms.remove_rule(forms.draft_document(text), name))
    except (FormError, ConfigError, RemovalRefused) as error:
        said = _said(error.problems)
        return page.redirect("/console/config", flash=f"Rule {name!r} not deleted: {said}")
    return page.redirect("/console/config", flash=f"Rule {name!r} deleted from the draft.")


# --- the draft as YAML --------------------------------------------------------------------------


def _render_draft(
    page: ConsolePage,
    text: str,
    draft: Any,
    problems: Sequence[tuple[str, str]] = (),
    allow: Sequence[str] = (),
    status: int = 200,
) -> Response:
    return page.render(
        "config_draft.html",
        status_code=status,
        text=text,
        draft=draft,
        problems=draft_problems(text, problems, DRAFT_FIELD),
        allow=list(allow),
        field=DRAFT_FIELD,
    )


async def draft_form(page: ConsolePage) -> Response:
    text, draft = await _draft_text(page)
    return _render_draft(page, text, draft)


async def save_draft(page: ConsolePage) -> Response:
    fields = await page.form()
    text = fields.get("text", "").replace("\r\n", "\n")
    allow = [i for i in fields.get("allow_removal", "").split() if i]
    try:
        await page.service.save_draft(text, allow)
    except RemovalRefused as error:
        _, draft = await _draft_text(page)
        return _render_draft(page, text, draft, error.problems, removal_ids(error.problems), 409)
    except ConfigError as error:
        _, draft = await _draft_text(page)
        return _render_draft(page, text, draft, error.problems, (), 422)
    return page.redirect("/console/config/diff", flash="Draft saved.")


# --- diff, publish, acknowledgements ------------------------------------------------------------


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """The diff's lines with their kind: add, remove, hunk, file or same."""
    kinds = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "remove"
        else:
            kind = "same"
        kinds.append((kind, line))
    return kinds


async def _diff(page: ConsolePage) -> tuple[str, list[tuple[str, str]]]:
    """The diff against the published version, or the draft's problems as one text."""
    try:
        return "", diff_lines(await page.service.diff(None))
    except NoDraft as error:
        return error.message, []
    except ConfigError as error:
        return _said(error.problems), []


async def diff_page(page: ConsolePage) -> Response:
    trouble, lines = await _diff(page)
    latest = page.service.latest
    return page.render(
        "config_diff.html",
        trouble=trouble,
        lines=lines,
        published=latest.number if latest else None,
        can_publish=page.admin.can("config.publish"),
    )


async def _render_publish(
    page: ConsolePage,
    comment: str = "",
    problems: Sequence[ShownProblem] = (),
    status: int = 200,
) -> Response:
    """The Publish form over the diff it would publish."""
    trouble, lines = await _diff(page)
    latest = page.service.latest
    return page.render(
        "config_publish.html",
        status_code=status,
        trouble=trouble,
        lines=lines,
        published=latest.number if latest else None,
        comment=comment,
        problems=list(problems),
    )


async def publish_form(page: ConsolePage) -> Response:
    return await _render_publish(page)


async def publish(page: ConsolePage) -> Response:
    fields = await page.form()
    comment = fields.get("comment", "").strip()[:MAX_COMMENT]
    try:
        number = await page.service.publish(comment)
    except ConfigError as error:
        text, _ = await _draft_text(page)
        return await _render_publish(page, comment, draft_problems(text, error.problems, ""), 422)
    except AdminError as error:
        return page.redirect("/console/config/publish", flash=f"Not published: {error.message}")
    return page.redirect(f"/console/config/publish/{number}", flash=f"Version {number} published.")


async def _acks(page: ConsolePage, number: int) -> tuple[Any, list[Any]]:
    version = await page.service.version(number)
    rows = ack_rows(number, version.services, await page.service.services())
    return version, rows


async def publish_status(page: ConsolePage) -> Response:
    number = int(page.request.path_params["number"])
    try:
        version, rows = await _acks(page, number)
    except AdminError as error:
        return page.redirect("/console/config/versions", flash=error.message)
    return page.render(
        "config_status.html",
        version=version,
        rows=rows,
        finished=finished(rows),
        summary=summary(rows),
        status_url=f"/console/config/publish/{number}/status.json",
    )


async def publish_status_json(page: ConsolePage) -> Response:
    number = int(page.request.path_params["number"])
    try:
        _, rows = await _acks(page, number)
    except AdminError as error:
        return JSONResponse({"error": error.message}, status_code=error.status)
    return JSONResponse(
        {
            "version": number,
            "finished": finished(rows),
            "summary": summary(rows),
            "services": [row.to_json() for row in rows],
        },
        headers={"Cache-Control": "no-store"},
    )


# --- versions and rollback ----------------------------------------------------------------------


async def versions_page(page: ConsolePage) -> Response:
    latest = page.service.latest
    return page.render(
        "config_versions.html",
        versions=await page.service.versions(100),
        latest=latest.number if latest else None,
        can_publish=page.admin.can("config.publish"),
    )


async def rollback(page: ConsolePage) -> Response:
    number = int(page.request.path_params["number"])
    fields = await page.form()
    comment = fields.get("comment", "").strip()[:MAX_COMMENT] or f"rollback to version {number}"
    allow = [i for i in fields.get("allow_removal", "").split() if i]
    try:
        new = await page.service.rollback(number, comment, allow)
    except (RemovalRefused, ConfigError) as error:
        said = _said(error.problems)
        return page.redirect("/console/config/versions", flash=f"Not rolled back: {said}")
    except AdminError as error:
        return page.redirect("/console/config/versions", flash=f"Not rolled back: {error.message}")
    return page.redirect(
        f"/console/config/publish/{new}",
        flash=f"Version {number} published again as version {new}.",
    )


ROUTES = [
    ConsoleRoute("/config", config_home, ("GET",), "config.read", nav="Configuration"),
    ConsoleRoute("/config/resources/new", resource_form, ("GET",), "config.draft"),
    ConsoleRoute("/config/resources/new", save_resource, ("POST",), "config.draft"),
    ConsoleRoute("/config/resources/{resource_id}", resource_form, ("GET",), "config.draft"),
    ConsoleRoute("/config/resources/{resource_id}", save_resource, ("POST",), "config.draft"),
    ConsoleRoute(
        "/config/resources/{resource_id}/delete", delete_resource, ("POST",), "config.draft"
    ),
    ConsoleRoute("/config/rules/new", rule_form, ("GET",), "config.draft"),
    ConsoleRoute("/config/rules/new", save_rule, ("POST",), "config.draft"),
    ConsoleRoute("/config/rules/{name}", rule_form, ("GET",), "config.draft"),
    ConsoleRoute("/config/rules/{name}", save_rule, ("POST",), "config.draft"),
    ConsoleRoute("/config/rules/{name}/delete", delete_rule, ("POST",), "config.draft"),
    ConsoleRoute("/config/draft", draft_form, ("GET",), "config.draft"),
    ConsoleRoute("/config/draft", save_draft, ("POST",), "config.draft"),
    ConsoleRoute("/config/diff", diff_page, ("GET",), "config.read"),
    ConsoleRoute("/config/publish", publish_form, ("GET",), "config.publish"),
    ConsoleRoute("/config/publish", publish, ("POST",), "config.publish"),
    ConsoleRoute("/config/publish/{number:int}", publish_status, ("GET",), "config.read"),
    ConsoleRoute(
        "/config/publish/{number:int}/status.json", publish_status_json, ("GET",), "config.read"
    ),
    ConsoleRoute("/config/versions", versions_page, ("GET",), "config.read"),
    ConsoleRoute("/config/versions/{number:int}/rollback", rollback, ("POST",), "config.publish"),
]
