"""The console's routes: each page module's ``ROUTES`` behind the sign-in, the role check
and the security headers, plus the sign-in and sign-out pages and the static files.

A page module exports ``ROUTES: list[ConsoleRoute]``; add its name to :data:`PAGE_MODULES`.
Paths are below ``/console`` (``"/audit"`` is served at ``/console/audit``). An endpoint is
called only for a signed-in administrator whose role has the route's ``permission``; others
get the 403 page naming the missing permission. ``nav``: the label of the route in the
menu (shown only to those who have the permission).
"""

from __future__ import annotations

import importlib
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gatehouse.administration.admins import Actor, acting_as
from gatehouse.administration.admins_roles import check_permission
from gatehouse.administration.console import layout
from gatehouse.administration.console.context import (
    Administrator,
    ConsoleError,
    ConsolePage,
    MissingPermission,
    NavItem,
)

if TYPE_CHECKING:
    from gatehouse.administration.service import AdministrationService

Endpoint = Callable[[ConsolePage], Awaitable[Response]]

#: The page modules, in menu order (one line each).
PAGE_MODULES: list[str] = [
    "gatehouse.administration.console.pages_overview",
    "gatehouse.administration.console.pages_audit",
    "gatehouse.administration.console.pages_config",
    "gatehouse.administration.console.pages_users",
    "gatehouse.administration.console.pages_tokens",
    "gatehouse.administration.console.pages_nodes",
]


@dataclass(frozen=True)
class ConsoleRoute:
    path: str
    endpoint: Endpoint
    methods: tuple[str, ...] = ("GET",)
    permission: str = "audit.read"
    #: The menu label (empty: not in the menu).
    nav: str = ""

    def __post_init__(self) -> None:
        check_permission(self.permission)
        if not self.path.startswith("/"):
            raise ValueError(f"console route {self.path!r}: the path must start with '/'")


def page_routes() -> list[ConsoleRoute]:
    routes: list[ConsoleRoute] = []
    for name in PAGE_MODULES:
        routes.extend(importlib.import_module(name).ROUTES)
    return routes


def _service(request: Request) -> AdministrationService:
    service: AdministrationService = request.app.state.service
    return service


def flash_of(request: Request) -> str | None:
    value = layout.read_cookie(request, layout.FLASH_COOKIE)
    return urllib.parse.unquote(value) if value else None


def _sign_in_redirect(request: Request) -> Response:
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += f"?{request.url.query}"
    query = urllib.parse.urlencode({"next": target}) if request.method == "GET" else ""
    return RedirectResponse(
        f"{layout.PREFIX}/login" + (f"?{query}" if query else ""), status_code=303
    )


def _frame(
    route: ConsoleRoute, nav: tuple[NavItem, ...]
) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        service = _service(request)
        secret = layout.read_cookie(request, layout.SESSION_COOKIE)
        session = await service.admins.session(secret) if secret else None
        if session is None:
            response = _sign_in_redirect(request)
            if secret:
                layout.clear_cookie(response, request, layout.SESSION_COOKIE)
            return layout.harden(response)
        admin = Administrator(session.name, session.role)
        allowed = tuple(item for item in nav if admin.can(item.permission))
        flash = flash_of(request)
        page = ConsolePage(request, admin, service, session.secret, allowed, flash)
        with acting_as(Actor(admin.name, admin.role, "console")):
            try:
                if not admin.can(route.permission):
                    raise MissingPermission(route.permission, admin.role)
                response = await route.endpoint(page)
            except ConsoleError as error:
                response = page.error(error)
        if flash and request.method == "GET":
            layout.clear_cookie(response, request, layout.FLASH_COOKIE)
        return layout.harden(response)

    handle.__name__ = getattr(route.endpoint, "__name__", "console_page")
    return handle


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    path = (layout.STATIC / name).resolve()
    if path.parent != layout.STATIC.resolve() or not path.is_file():
        return layout.harden(Response("not found", status_code=404, media_type="text/plain"))
    response = FileResponse(path)
    response.headers["Cache-Control"] = "no-cache"
    return layout.harden(response)


async def _slash(request: Request) -> Response:
    return RedirectResponse(f"{layout.PREFIX}/", status_code=307)


async def _not_found(request: Request) -> Response:
    html = (
        layout.environment()
        .get_template("error.html")
        .render(
            page=None,
            admin=None,
            nav=(),
            title="Not found",
            message="There is no such page in the console.",
            permission=None,
        )
    )
    return layout.harden(HTMLResponse(html, status_code=404))


def console_routes() -> list[BaseRoute]:
    """Every console route, for the Administration service's app."""
    from gatehouse.administration.console import auth

    pages = page_routes()
    nav = tuple(NavItem(r.nav, layout.PREFIX + r.path, r.permission) for r in pages if r.nav)
    routes: list[BaseRoute] = [
        Route(layout.PREFIX, _slash, methods=["GET"]),
        Route(f"{layout.PREFIX}/login", auth.login_form, methods=["GET"]),
        Route(f"{layout.PREFIX}/login", auth.login, methods=["POST"]),
        Route(f"{layout.PREFIX}/logout", auth.logout, methods=["POST"]),
        Route(f"{layout.PREFIX}/static/{{name}}", _static, methods=["GET"]),
    ]
    routes += [
        Route(layout.PREFIX + r.path, _frame(r, nav), methods=list(r.methods)) for r in pages
    ]
    routes.append(Route(f"{layout.PREFIX}/{{rest:path}}", _not_found))
    return routes
