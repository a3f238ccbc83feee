"""What a console page's endpoint gets: the request, the signed-in administrator, the
Administration service, and the means to answer (a page in the layout, a redirect, an error).

An endpoint is ``async def f(page: ConsolePage) -> Response``; it is only called once the
administrator is signed in and their role has the route's permission (:mod:`.app`).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gatehouse.administration.admins_roles import allows
from gatehouse.administration.console import layout
from gatehouse.administration.console.csrf import FIELD, csrf_token, csrf_valid

if TYPE_CHECKING:
    from gatehouse.administration.service import AdministrationService

#: The longest form body read (a configuration text with room to spare).
MAX_FORM = 4 * 1024 * 1024


@dataclass
class Administrator:
    """The signed-in administrator."""

    name: str
    role: str

    def can(self, permission: str) -> bool:
        return allows(self.role, permission)


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    path: str
    permission: str


class ConsoleError(Exception):
    """An answer as an error page: ``status``, a title and a message."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class MissingPermission(ConsoleError):
    def __init__(self, permission: str, role: str) -> None:
        super().__init__(
            403,
            "Not allowed",
            f"This needs the permission {permission}, which the role {role} does not have.",
        )
        self.permission = permission


class CsrfRejected(ConsoleError):
    def __init__(self) -> None:
        super().__init__(
            403,
            "Form expired",
            "The form was not accepted (its security token is missing or stale). "
            "Go back, reload the page and try again.",
        )


@dataclass
class ConsolePage:
    """One request to a console page by a signed-in administrator."""

    request: Request
    admin: Administrator
    service: AdministrationService
    #: The session's secret (the cookie's value): the forms' CSRF token is derived from it.
    secret: str = field(repr=False)
    nav: tuple[NavItem, ...] = ()
    flash: str | None = None
    _form: dict[str, str] | None = field(default=None, repr=False)

    @property
    def csrf(self) -> str:
        return csrf_token(self.secret)

    def url(self, path: str = "/", **query: object) -> str:
        """``/console`` + ``path``, with the query values that are not None."""
        values = {k: str(v) for k, v in query.items() if v is not None and v != ""}
        suffix = f"?{urllib.parse.urlencode(values)}" if values else ""
        return f"{layout.PREFIX}{path}{suffix}"

    def require(self, permission: str) -> None:
        """Stop with the 403 page unless the administrator has ``permission`` (for a
        second action on a page whose route needs less)."""
        if not self.admin.can(permission):
            raise MissingPermission(permission, self.admin.role)

    def render(self, template_name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        """``template_name`` (which extends ``base.html``) with ``values``; every template
        also sees ``page``, ``admin``, ``csrf`` (the token for its forms' ``csrf`` field),
        ``nav`` and ``flash``."""
        template = layout.environment().get_template(template_name)
        path = self.request.url.path
        html = template.render(
            page=self,
            admin=self.admin,
            csrf=self.csrf,
            csrf_field=FIELD,
            nav=self.nav,
            current=path,
            flash=self.flash,
            **values,
        )
        return HTMLResponse(html, status_code=status_code)

    async def form(self) -> dict[str, str]:
        """The POSTed form's fields (the last value of each), once its CSRF token is checked.

        Raises:
            CsrfRejected: the token is missing or wrong (the frame answers a 403 page).
        """
        if self._form is None:
            declared = self.request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_FORM:
                raise ConsoleError(413, "Too large", f"The form is larger than {MAX_FORM} bytes.")
            data = await self.request.form(max_files=0, max_fields=1000, max_part_size=MAX_FORM)
            fields = {k: v for k, v in data.items() if isinstance(v, str)}
            if not csrf_valid(self.secret, fields.get(FIELD)):
                raise CsrfRejected()
            fields.pop(FIELD, None)
            self._form = fields
        return self._form

    def redirect(self, path: str, flash: str | None = None) -> Response:
        """303 to ``/console`` + ``path`` (or ``path`` if it starts with ``/console``), with a
        one-time message shown on the next page."""
        target = path if path.startswith(layout.PREFIX) else f"{layout.PREFIX}{path}"
        response = RedirectResponse(target, status_code=303)
        if flash:
            value = urllib.parse.quote(flash[:500])
            layout.set_cookie(response, self.request, layout.FLASH_COOKIE, value, max_age=60)
        return response

    def error(self, error: ConsoleError) -> HTMLResponse:
        return self.render(
            "error.html",
            status_code=error.status,
            title=error.title,
            message=error.message,
            permission=getattr(error, "permission", None),
        )
