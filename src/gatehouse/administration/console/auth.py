"""Signing in to the console (user name, password and one-time password, checked by the
Authentication services) and out.

The sign-in form's CSRF token comes from a pre-session cookie set with the form. Whatever
was wrong (an unknown user, a wrong password or code, a user who is not an administrator),
the answer is the same; a locked account or token says when to try again. Every attempt is
audited: a success or sign-out under the administrator's name, a failure as
``console.sign_in_failed`` naming the user name typed.
"""

from __future__ import annotations

import secrets
import urllib.parse
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gatehouse.administration.admins_signin import Check
from gatehouse.administration.console import layout
from gatehouse.administration.console.csrf import FIELD, csrf_token, csrf_valid
from gatehouse.storage.directory import valid_username

if TYPE_CHECKING:
    from gatehouse.administration.service import AdministrationService

GENERIC = (
    "The user name, password or one-time password is wrong, or the user is not an administrator."
)
MAX_FIELD = 1024


def _service(request: Request) -> AdministrationService:
    service: AdministrationService = request.app.state.service
    return service


def _next(value: str | None) -> str:
    """Where to go after signing in: a console path, never another site."""
    if not value:
        return f"{layout.PREFIX}/"
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{layout.PREFIX}/"):
        return f"{layout.PREFIX}/"
    if parts.path.startswith(f"{layout.PREFIX}/login"):
        return f"{layout.PREFIX}/"
    return value


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "127.0.0.1"


def _render(
    request: Request,
    pre: str,
    *,
    error: str | None = None,
    username: str = "",
    next_path: str = "",
    status: int = 200,
    new_pre: bool = False,
) -> Response:
    html = (
        layout.environment()
        .get_template("login.html")
        .render(
            page=None,
            admin=None,
            nav=(),
            csrf=csrf_token(pre),
            csrf_field=FIELD,
            error=error,
            username=username,
            next=_next(next_path),
            flash=None,
        )
    )
    response = HTMLResponse(html, status_code=status)
    if new_pre:
        layout.set_cookie(response, request, layout.PRE_COOKIE, pre)
    return layout.harden(response)


async def login_form(request: Request) -> Response:
    secret = layout.read_cookie(request, layout.SESSION_COOKIE)
    if secret and await _service(request).admins.session(secret) is not None:
        return layout.harden(
            RedirectResponse(_next(request.query_params.get("next")), status_code=303)
        )
    pre = layout.read_cookie(request, layout.PRE_COOKIE)
    fresh = pre is None
    return _render(
        request,
        pre or secrets.token_urlsafe(32),
        next_path=request.query_params.get("next", ""),
        new_pre=fresh,
    )


async def login(request: Request) -> Response:
    service = _service(request)
    pre = layout.read_cookie(request, layout.PRE_COOKIE)
    form = await request.form(max_files=0, max_fields=20, max_part_size=MAX_FIELD)
    fields = {k: v[:MAX_FIELD] for k, v in form.items() if isinstance(v, str)}
    username = fields.get("username", "").strip()
    next_path = fields.get("next", "")
    if pre is None or not csrf_valid(pre, fields.get(FIELD)):
        fresh = secrets.token_urlsafe(32)
        return _render(
            request,
            fresh,
            error="The form had expired; please sign in again.",
            username=username,
            next_path=next_path,
            status=403,
            new_pre=True,
        )
    password = fields.get("password", "")
    code = fields.get("otp", "").strip().replace(" ", "")
    missing = [
        name
        for name, value in (
            ("user name", username),
            ("password", password),
            ("one-time password", code),
        )
        if not value
    ]
    if missing:
        return _render(
            request,
            pre,
            error=f"Enter your {', '.join(missing)}.",
            username=username,
            next_path=next_path,
            status=400,
        )
    checker = service.checker
    if checker is None:
        return _render(
            request,
            pre,
            error="Sign-in is not available on this Administration service.",
            username=username,
            next_path=next_path,
            status=503,
        )
    ip = _client_ip(request)
    error = None
    if not valid_username(username):
        error = GENERIC
    else:
        checked = await checker.password(username, password, ip)
        if checked.result == "ok" and await service.admins.get(username) is not None:
            attempt = secrets.token_urlsafe(24)
            checked = await checker.otp(username, code, ip, attempt)
        elif checked.result == "ok":
            checked = Check("invalid")  # not an administrator: the same answer
        if checked.result == "ok":
            session = await service.admins.create_session(username)
            response = RedirectResponse(_next(next_path), status_code=303)
            layout.set_cookie(response, request, layout.SESSION_COOKIE, session.secret)
            layout.clear_cookie(response, request, layout.PRE_COOKIE)
            return layout.harden(response)
        if checked.result == "locked":
            wait = f" in {int(checked.retry_after)} seconds" if checked.retry_after else " later"
            error = f"Too many failed attempts: try again{wait}, or ask another administrator."
        elif checked.result == "unavailable":
            error = "No Authentication service answered; try again in a moment."
        else:
            error = GENERIC
    shown = (
        username if valid_username(username) else username[:64].encode("unicode_escape").decode()
    )
    await service.store.record_audit(
        shown or "-", "console.sign_in_failed", f"console sign-in failed for {shown!r} from {ip}"
    )
    status = 503 if "No Authentication service" in error else 401
    return _render(request, pre, error=error, username=username, next_path=next_path, status=status)


async def logout(request: Request) -> Response:
    service = _service(request)
    secret = layout.read_cookie(request, layout.SESSION_COOKIE)
    form = await request.form(max_files=0, max_fields=10, max_part_size=MAX_FIELD)
    given = form.get(FIELD)
    response = RedirectResponse(f"{layout.PREFIX}/login", status_code=303)
    if secret and csrf_valid(secret, given if isinstance(given, str) else None):
        await service.admins.end_session(secret)
        layout.clear_cookie(response, request, layout.SESSION_COOKIE)
    elif secret:
        return layout.harden(
            HTMLResponse("the sign-out form had expired; reload the page", status_code=403)
        )
    return layout.harden(response)
