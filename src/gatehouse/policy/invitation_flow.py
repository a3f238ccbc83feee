"""The portal's enrolment by invitation: the page an e-mailed token invitation link opens.

``GET {prefix}enrol/invite?t=SECRET`` asks the Authentication services what the link is
(:mod:`gatehouse.authentication.invitation_calls`). A link that is not usable gets a page
saying why (not found, expired, used, withdrawn) before anything else. A usable one needs the
invited user signed in: a browser without a session is sent to the login page and back; one
signed in as someone else is told so and offered to sign out. The invited user then enrols a
TOTP token as in :mod:`gatehouse.policy.otp_flow` (a POST makes the pending token; its first
code activates it), and that first code uses the link up, in the same call, once everywhere.

Every form carries the portal's CSRF token; codes go with an ``attempt`` id made when the form
was served (a resubmission is the same attempt). The link's secret travels only in the URL
and in the forms' hidden fields, never in a log line; pages are ``no-store`` and send no
referrer.
"""

from __future__ import annotations

import logging
import re
from typing import Protocol
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.authentication.invitation_calls import (
    MAX_SECRET,
    InvitationAnswer,
    InvitationCheck,
    InvitationEnrolAnswer,
)
from gatehouse.policy.csrf import FIELD_NAME as CSRF_FIELD
from gatehouse.policy.otp_flow import (
    MISSING_CODE,
    WRONG_ENROL_CODE,
    Enrolment,
    attempt_of,
    clean_code,
    enrol_context,
    issuer_of,
)
from gatehouse.policy.portal import AuthUnavailable, Origin, Portal, _login_link, page_headers
from gatehouse.policy.sessions import SessionRecord

log = logging.getLogger(__name__)

INVITE_PATH = "enrol/invite"
_SERIAL = re.compile(r"^[!-~]{1,64}$")

#: What the user reads for each link that cannot be used: status, heading, message.
REFUSED: dict[str, tuple[int, str, str]] = {
    "unknown": (
        404,
        "Invitation not found",
        "This invitation link is not valid. Check that you opened the whole link from the "
        "e-mail, or ask your administrator for a new invitation.",
    ),
    "expired": (
        410,
        "Invitation expired",
        "This invitation has expired. Please ask your administrator for a new one.",
    ),
    "used": (
        410,
        "Invitation already used",
        "This invitation has already been used to set up an authenticator app: each link "
        "works once. If that was not you, tell your administrator.",
    ),
    "revoked": (
        410,
        "Invitation withdrawn",
        "An administrator has withdrawn this invitation. Please ask them for a new one.",
    ),
}
FOREIGN = (
    "This invitation is for another account. Sign out, then open the link again and sign in "
    "as the invited user."
)
LOCKED = "Too many wrong codes for the new token. Please start again with a new key."
DONE = (
    "Your authenticator app is set up. From now on, pages that need a second factor ask for "
    "the code it shows."
)


class InvitationChecker(Protocol):
    """The invitation calls of the Authentication services; each raises
    :class:`~gatehouse.policy.portal.AuthUnavailable` when none gives a usable answer."""

    async def invitation_check(self, secret: str) -> InvitationCheck: ...

    async def invitation_enrol(
        self, secret: str, username: str, issuer: str
    ) -> InvitationEnrolAnswer: ...

    async def invitation_confirm(
        self, secret: str, username: str, serial: str, code: str, client_ip: str, attempt: str
    ) -> InvitationAnswer: ...


def secret_of(value: str | None) -> str:
    """The link's secret as the browser brought it (cut: a longer one is unknown anyway)."""
    return (value or "")[:MAX_SECRET]


def invite_url(prefix: str, secret: str) -> str:
    """The page's own address, to come back to after signing in."""
    return f"{prefix}{INVITE_PATH}?t={quote(secret, safe='')}"


class InvitationSteps:
    """The invitation pages of one portal (its settings, CSRF and sessions)."""

    def __init__(self, portal: Portal, checker: InvitationChecker | None) -> None:
        self.portal = portal
        self.checker = checker

    def _checker(self) -> InvitationChecker:
        if self.checker is None:
            raise AuthUnavailable("no authentication service configured")
        return self.checker

    # pages

    def refused_page(self, state: str) -> Response:
        status, heading, message = REFUSED.get(state, REFUSED["unknown"])
        return self.portal.pages.error(status, heading, message)

    def foreign_page(self, secret: str) -> Response:
        prefix = self.portal.settings.prefix
        again = f"{prefix}logout?rd={quote(invite_url(prefix, secret), safe='')}"
        return self.portal.pages.error(
            403, "Invitation for another account", FOREIGN, again, "Sign out"
        )

    def _form_page(
        self, request: Request, origin: Origin, template: str, heading: str, **context: object
    ) -> Response:
        return self.portal.otp.form_page(request, origin, template, heading, 200, **context)

    def offer_page(
        self, request: Request, origin: Origin, secret: str, check: InvitationCheck, error: str = ""
    ) -> Response:
        until = ""
        if check.expires_at is not None:
            end = check.expires_at.astimezone(self.portal.tz)
            until = f"{end:%Y-%m-%d %H:%M} {end.tzname() or end.strftime('%z')}"
        return self._form_page(
            request,
            origin,
            "invite_offer.html",
            "Set up your authenticator app",
            invitation=secret,
            username=check.username or "",
            until=until,
            error=error,
        )

    def enrol_page(
        self,
        request: Request,
        origin: Origin,
        secret: str,
        enrolment: Enrolment | None,
        serial: str,
        error: str = "",
    ) -> Response:
        context = enrol_context(
            enrolment,
            serial,
            error,
            confirm_path="enrol/invite/confirm",
            restart_path="enrol/invite",
            carry=("invitation", secret),
        )
        return self._form_page(
            request, origin, "enrol.html", "Set up your authenticator app", **context
        )

    # state

    async def _signed_in(self, request: Request, origin: Origin) -> SessionRecord | None:
        """The browser's session (a sign-in still waiting for its second factor is none)."""
        flow = await self.portal.otp.flow(request, origin)
        if flow is None or flow[1].pending is not None:
            return None
        return flow[1]

    def _to_login(self, secret: str) -> Response:
        prefix = self.portal.settings.prefix
        location = _login_link(prefix, invite_url(prefix, secret))
        return Response(status_code=303, headers={**page_headers(), "Location": location})

    async def _posted(
        self, request: Request
    ) -> tuple[Origin, str, dict[str, str], SessionRecord] | Response:
        """A form's origin, link secret, fields and the signed-in session; or the page to
        answer (a form from elsewhere, no session)."""
        portal = self.portal
        origin = portal.origin(request)
        form = await portal._form(request)
        if form is None:
            return portal._forbidden(f"{portal.settings.prefix}login")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        secret = secret_of(fields.get("invitation"))
        if not portal._csrf_ok(request, fields.get(CSRF_FIELD), origin):
            return portal._forbidden(invite_url(portal.settings.prefix, secret))
        record = await self._signed_in(request, origin)
        if record is None:
            return self._to_login(secret)
        return origin, secret, fields, record

    # handlers

    async def page(self, request: Request) -> Response:
        """GET: what the link is; sign in first; the offer to set up the app."""
        portal = self.portal
        origin = portal.origin(request)
        secret = secret_of(request.query_params.get("t"))
        check = await self._checker().invitation_check(secret)
        if check.state != "valid":
            return self.refused_page(check.state)
        record = await self._signed_in(request, origin)
        if record is None:
            return self._to_login(secret)
        if record.username != check.username:
            return self.foreign_page(secret)
        return self.offer_page(request, origin, secret, check)

    async def enrol(self, request: Request) -> Response:
        """POST: a pending token for the invited user (its key shown once)."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        origin, secret, _fields, record = posted
        answer = await self._checker().invitation_enrol(
            secret, record.username, issuer_of(self.portal.settings.title)
        )
        if answer.result == "foreign":
            return self.foreign_page(secret)
        if answer.result != "ok" or answer.serial is None:
            return self.refused_page(answer.result)
        enrolment = Enrolment(answer.serial, answer.uri or "", answer.secret or "")
        await self.portal._audit(
            "otp_enrolment_started",
            record.username,
            origin,
            {"serial": enrolment.serial, "by": "invitation"},
        )
        return self.enrol_page(request, origin, secret, enrolment, enrolment.serial)

    async def confirm(self, request: Request) -> Response:
        """POST: the new token's first code activates it and uses the link up."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        origin, secret, fields, record = posted
        serial = fields.get("serial") or ""
        if not _SERIAL.match(serial):
            return self.refused_page("unknown")
        code = clean_code(fields.get("code"))
        if not code:
            return self.enrol_page(request, origin, secret, None, serial, MISSING_CODE)
        answer = await self._checker().invitation_confirm(
            secret,
            record.username,
            serial,
            code,
            origin.client_ip,
            attempt_of(fields.get("attempt")),
        )
        if answer.result == "ok":
            await self.portal._audit(
                "otp_enrolled", record.username, origin, {"serial": serial, "by": "invitation"}
            )
            return self.portal.pages.render(
                "invite_done.html", "Authenticator set up", message=DONE
            )
        if answer.result == "invalid":
            return self.enrol_page(request, origin, secret, None, serial, WRONG_ENROL_CODE)
        if answer.result == "locked":
            check = await self._checker().invitation_check(secret)
            if check.state != "valid":
                return self.refused_page(check.state)
            return self.offer_page(request, origin, secret, check, LOCKED)
        if answer.result == "foreign":
            return self.foreign_page(secret)
        return self.refused_page(answer.result)


__all__ = ["INVITE_PATH", "InvitationChecker", "InvitationSteps", "invite_url", "secret_of"]
