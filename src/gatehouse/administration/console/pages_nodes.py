"""The console's nodes: every registered service by node (role, endpoint, version running,
health, certificate), join tokens made for a new service (shown once), and removing a
service (its certificates revoked, the revocation published at once).

The operations are the REST API's (``GET /api/v1/services``, ``POST /api/v1/join-tokens``,
``POST /api/v1/services/{id}/revoke``): the same service calls with the same request model.
"""

from __future__ import annotations

from collections import defaultdict

from starlette.responses import Response

from gatehouse.administration import api_models as api
from gatehouse.administration.console.app import ConsoleRoute
from gatehouse.administration.console.context import ConsolePage
from gatehouse.administration.console.page_support import summary_of
from gatehouse.administration.errors import AdminError
from gatehouse.administration.model import ROLE_NAMES
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError

JOIN_LABELS = {
    "role": "Role",
    "service_id": "Service id",
    "ttl": "The token works for",
    "replace": "Enrol again",
}
TTLS = (("15m", "15 minutes"), ("1h", "1 hour"), ("8h", "8 hours"), ("24h", "24 hours"))


def by_node(services: list[api.ServiceOut]) -> list[tuple[str, list[api.ServiceOut]]]:
    """The services grouped by node, nodes and services in name order."""
    nodes: dict[str, list[api.ServiceOut]] = defaultdict(list)
    for service in services:
        nodes[service.node].append(service)
    return [(node, sorted(nodes[node], key=lambda s: s.id)) for node in sorted(nodes)]


async def nodes_page(
    page: ConsolePage,
    fields: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> Response:
    services = await page.service.services()
    latest = page.service.latest
    errors = errors or {}
    return page.render(
        "nodes.html",
        status_code=status,
        nodes=by_node(services),
        count=len(services),
        latest=latest.number if latest else None,
        roles=ROLE_NAMES,
        ttls=TTLS,
        fields=fields or {"role": "policy", "ttl": "1h"},
        errors=errors,
        problems=summary_of(errors, JOIN_LABELS),
        can_write=page.admin.can("nodes.write"),
    )


async def join_token(page: ConsolePage) -> Response:
    fields = await page.form()
    given = {
        "role": fields.get("role", ""),
        "service_id": fields.get("service_id", "").strip(),
        "ttl": fields.get("ttl", "1h"),
        "replace": fields.get("replace", "") == "on",
    }
    try:
        request = validate(api.JoinTokenIn, given)
        made = await page.service.join_token(request)
    except ConfigError as error:
        errors: dict[str, list[str]] = {}
        for path, message in error.problems:
            errors.setdefault(path.split(".", 1)[0] or "service_id", []).append(message)
        return await nodes_page(page, fields, errors, 422)
    except AdminError as error:
        return await nodes_page(page, fields, {"service_id": [error.message]}, 422)
    return page.render(
        "nodes_token.html",
        token=made,
        role=request.role,
        role_name=ROLE_NAMES[request.role],
        service_id=request.service_id,
        admin_url=f"{page.request.url.scheme}://{page.request.url.netloc}",
    )


async def remove(page: ConsolePage) -> Response:
    service_id = page.request.path_params["service_id"]
    fields = await page.form()
    reason = fields.get("reason", "").strip()[: api.MAX_COMMENT] or "removed in the console"
    try:
        revoked = await page.service.revoke(service_id, reason)
    except AdminError as error:
        return page.redirect("/nodes", flash=f"Nothing changed: {error.message}")
    said = (
        f"Removed {service_id}: certificate(s) {', '.join(revoked.revoked)} revoked, "
        f"published in version {revoked.version}."
        if revoked.revoked
        else f"{service_id} had no certificate in use; version {revoked.version} is current."
    )
    return page.redirect(
        "/nodes",
        flash=said + " Take it out of the configuration too (Configuration → YAML) to stop "
        "it being listed there.",
    )


ROUTES = [
    ConsoleRoute("/nodes", nodes_page, ("GET",), "nodes.read", nav="Nodes"),
    ConsoleRoute("/nodes/join-tokens", join_token, ("POST",), "nodes.write"),
    ConsoleRoute("/nodes/services/{service_id}/remove", remove, ("POST",), "nodes.write"),
]
