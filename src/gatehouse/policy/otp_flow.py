"""The portal's second factor: the one-time password step, step-up and token self-enrolment.

A sign-in that needs a one-time password (the rule asks for ``otp``: the login URL says
``step=otp``; or an administrator requires the user to enrol a token) keeps its state in the
session DB, never in this process: after the password, the browser holds the id of a
*pending* row (:mod:`gatehouse.policy.sessions`) which decisions ignore. A step-up's state is
the session itself. Whichever Policy service gets the code finishes the sign-in: the row is
replaced by a session with a new id and the methods ``password`` and ``otp``
(:meth:`~gatehouse.policy.sessions.SessionStore.rotate`), and the old id is revoked like any
other, so the Access Points drop what they cached for it.

Self-enrolment (when the Authentication service allows it) is offered only to a user with no
active token, or one an administrator asked to enrol: a password alone never adds a token next
to one the user already has. Its page shows the QR code as inline SVG (segno), the otpauth://
URI and the base32 secret; the secret is never logged or stored here, and the page is
``no-store`` like every portal page. Every form carries the portal's CSRF token. Codes are
sent to the Authentication service with an ``attempt`` id made when the form was served, so a
resubmission of the same form is the same attempt (idempotent there).
"""

from __future__ import annotations

import io
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import segno
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from gatehouse.policy.csrf import COOKIE_NAME as CSRF_COOKIE
from gatehouse.policy.csrf import FIELD_NAME as CSRF_FIELD
from gatehouse.policy.portal import (
    AuthUnavailable,
    Origin,
    Portal,
    _login_link,
    lock_end,
    page_headers,
)
from gatehouse.policy.sessions import SessionRecord, session_cookie

log = logging.getLogger(__name__)

OTP = "otp"
#: The ``step`` marker of a login URL whose rule asks for a one-time password.
STEP_OTP = "otp"
MAX_CODE = 16
MAX_ISSUER = 64
_ATTEMPT = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SERIAL = re.compile(r"^[!-~]{1,64}$")

WRONG_CODE = "That code is not right. Type the code your authenticator app shows now."
MISSING_CODE = "Type the code your authenticator app shows."
WRONG_ENROL_CODE = (
    "That code does not match the new token. Check that the app shows the account you just "
    "added and type its current code."
)
NO_TOKEN = (
    "This page needs a second factor, and no authenticator is set up for your account. "
    "Please contact your administrator."
)
ENDED = "This sign-in has ended or expired. Please sign in again."


# --- the Authentication service, as the second factor needs it ---------------------------


@dataclass(frozen=True, slots=True)
class OtpStatus:
    active: int
    pending: str | None
    enrol_required: bool


@dataclass(frozen=True, slots=True)
class OtpResult:
    result: Literal["ok", "invalid", "locked", "no_token"]
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Enrolment:
    serial: str
    uri: str
    secret: str


class EnrolmentRefused(Exception):
    """Self-enrolment is switched off (the Authentication service's ``otp.self_enrolment``)."""


class OtpChecker(Protocol):
    """The OTP calls of the Authentication services. Each raises :class:`AuthUnavailable`
    when none gives a usable answer."""

    async def otp_status(self, username: str) -> OtpStatus: ...

    async def otp_verify(
        self, username: str, code: str, client_ip: str, attempt: str
    ) -> OtpResult: ...

    async def otp_enrol(self, username: str, issuer: str) -> Enrolment:
        """Raises :class:`EnrolmentRefused` when self-enrolment is off."""
        ...

    async def otp_confirm(
        self, username: str, serial: str, code: str, client_ip: str, attempt: str
    ) -> OtpResult: ...


# --- pure pieces -----------------------------------------------------------------------------


def new_attempt() -> str:
    """A submission id for the Authentication service (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def attempt_of(value: str | None) -> str:
    """The form's attempt id if well formed, else a fresh one."""
    return value if value is not None and _ATTEMPT.match(value) else new_attempt()


def clean_code(value: str | None) -> str:
    """What the user typed, without the spaces and dashes apps show inside codes."""
    return re.sub(r"[\s-]", "", value or "")[:MAX_CODE]


def issuer_of(title: str) -> str:
    """The issuer an authenticator app shows: the portal's title, without ``:``."""
    issuer = title.replace(":", " ").strip()[:MAX_ISSUER].strip()
    return issuer or "Gatehouse"


def qr_svg(text: str) -> Markup:
    """``text`` as a QR code: inline SVG (no external asset, nothing CSP must allow)."""
    code = segno.make(text, error="m", micro=False)
    out = io.BytesIO()
    code.save(
        out,
        kind="svg",
        xmldecl=False,
        svgns=True,
        scale=5,
        border=4,
        dark="#000",
        light="#fff",
        svgclass="qr",
        lineclass=None,
        title="QR code of the new token",
    )
    return Markup(out.getvalue().decode("ascii").strip())  # segno's own SVG: no user-given markup


def grouped(secret: str) -> str:
    """A base32 secret in groups of four, easier to type by hand."""
    plain = secret.replace(" ", "")
    return " ".join(plain[i : i + 4] for i in range(0, len(plain), 4))


def enrol_context(
    enrolment: Enrolment | None,
    serial: str,
    error: str,
    *,
    confirm_path: str,
    restart_path: str,
    carry: tuple[str, str],
) -> dict[str, object]:
    """What ``enrol.html`` shows: the new token (QR code, URI, secret) with ``enrolment``, the
    code field alone without (a wrong code); its two forms post to ``confirm_path`` and
    ``restart_path`` under the portal's prefix, each with the hidden field ``carry`` (name,
    value) that names the flow (``rd`` or ``invitation``)."""
    context: dict[str, object] = {
        "serial": serial,
        "error": error,
        "confirm_path": confirm_path,
        "restart_path": restart_path,
        "carry_name": carry[0],
        "carry_value": carry[1],
    }
    if enrolment is not None:
        context.update(
            qr=qr_svg(enrolment.uri), uri=enrolment.uri, secret=grouped(enrolment.secret)
        )
    return context


def with_otp(methods: Sequence[str], method: str = OTP) -> list[str]:
    """``methods`` and the second factor just run (``otp``, or a code method)."""
    return [*dict.fromkeys([*methods, method])]


def needs_otp(record: SessionRecord) -> bool:
    """Whether ``record`` is a sign-in or session that has yet to run the second factor."""
    return record.pending is not None or OTP not in record.methods


# --- the pages -------------------------------------------------------------------------------


class OtpSteps:
    """The second-factor pages of one portal (they share its settings, CSRF and sessions)."""

    def __init__(self, portal: Portal, checker: OtpChecker | None) -> None:
        self.portal = portal
        self.checker = checker

    # state

    async def flow(self, request: Request, origin: Origin) -> tuple[str, SessionRecord] | None:
        """The sign-in under way or the session behind the browser's session cookie (its id
        and record); the callers check whether it still needs the second factor."""
        portal = self.portal
        cookie = session_cookie(request.headers, origin.cookie(portal.settings.cookie_name))
        if cookie is None:
            return None
        record = await portal.sessions.lookup(
            cookie, portal.clock(), touch=False, cached=False, pending=True
        )
        if record is None:
            return None
        return cookie, record

    # rendering

    def form_page(
        self,
        request: Request,
        origin: Origin,
        template: str,
        heading: str,
        status: int = 200,
        **context: object,
    ) -> Response:
        portal = self.portal
        token = portal.csrf.token_for(request.cookies.get(origin.cookie(CSRF_COOKIE)))
        response = portal.pages.render(
            template,
            heading,
            status,
            csrf=portal.csrf.form_value(token, origin.client_ip),
            attempt=new_attempt(),
            **context,
        )
        portal._csrf_cookie(response, token, origin)
        return response

    def code_page(
        self, request: Request, origin: Origin, rd: str, error: str | Markup = "", status: int = 200
    ) -> Response:
        return self.form_page(
            request, origin, "otp.html", "Enter your one-time code", status, rd=rd, error=error
        )

    def offer_page(self, request: Request, origin: Origin, rd: str) -> Response:
        return self.form_page(request, origin, "otp_offer.html", "Set up a second factor", rd=rd)

    def no_token_page(self) -> Response:
        return self.portal.pages.error(
            403,
            "No second factor",
            NO_TOKEN,
            f"{self.portal.settings.prefix}logout",
            "Sign out",
        )

    def locked_page(self, retry_after: float | None) -> Response:
        portal = self.portal
        if retry_after:
            end = lock_end(portal.clock(), retry_after).astimezone(portal.tz)
            until = f"until {end:%H:%M} {end.tzname() or end.strftime('%z')}"
        else:
            until = "until an administrator unlocks it"
        message = (
            f"Too many wrong codes. Your authenticator is locked {until}. If you need access "
            "sooner, an administrator can unlock it."
        )
        return portal.pages.error(
            403, "Authenticator locked", message, f"{portal.settings.prefix}logout", "Sign out"
        )

    def ended_page(self, rd: str) -> Response:
        return self.portal.pages.error(
            400, "Sign-in ended", ENDED, _login_link(self.portal.settings.prefix, rd), "Sign in"
        )

    def enrol_page(
        self,
        request: Request,
        origin: Origin,
        rd: str,
        enrolment: Enrolment | None,
        serial: str,
        error: str = "",
    ) -> Response:
        """The new token (QR code, URI, secret) and its code field; without ``enrolment``
        (a wrong code) the code field alone."""
        context = enrol_context(
            enrolment,
            serial,
            error,
            confirm_path="otp/confirm",
            restart_path="otp/enrol",
            carry=("rd", rd),
        )
        return self.form_page(
            request, origin, "enrol.html", "Set up your authenticator app", 200, **context
        )

    # steps

    def _checker(self) -> OtpChecker:
        if self.checker is None:
            raise AuthUnavailable("no one-time password service configured")
        return self.checker

    async def begin(
        self, request: Request, origin: Origin, rd: str, record: SessionRecord, status: OtpStatus
    ) -> Response:
        """The page after the password (or a step-up's first page): the code, or enrolment
        for a user without an active token or one asked to enrol."""
        if status.enrol_required or status.active == 0:
            if request.method == "POST":
                return await self.enrol(request, origin, rd, record)
            return self.offer_page(request, origin, rd)
        return self.code_page(request, origin, rd)

    async def enrol(
        self, request: Request, origin: Origin, rd: str, record: SessionRecord
    ) -> Response:
        """Start an enrolment for ``record``'s user (POST only: it makes a pending token)."""
        checker = self._checker()
        try:
            enrolment = await checker.otp_enrol(
                record.username, issuer_of(self.portal.settings.title)
            )
        except EnrolmentRefused:
            return self.no_token_page()
        await self.portal._audit(
            "otp_enrolment_started", record.username, origin, {"serial": enrolment.serial}
        )
        return self.enrol_page(request, origin, rd, enrolment, enrolment.serial)

    async def finish(
        self,
        request: Request,
        origin: Origin,
        rd: str,
        record: SessionRecord,
        serial: str | None,
        method: str = OTP,
    ) -> Response:
        """The code was right: the session gets ``method`` (``otp``, or ``email_otp`` /
        ``sms_otp`` from :mod:`gatehouse.policy.code_flow`) and a new id; back to ``rd``."""
        portal = self.portal
        now = portal.clock()
        rotated = await portal.sessions.rotate(
            record,
            with_otp(record.methods, method),
            now,
            reason="signed_in" if record.pending is not None else "step_up",
            client_ip=origin.client_ip,
            user_agent=request.headers.get("user-agent"),
        )
        if rotated is None:
            return self.ended_page(rd)
        session_id, new = rotated
        event = "session_created" if record.pending is not None else "session_stepped_up"
        detail: dict[str, object] = {"session": new.id_hash, "methods": list(new.methods)}
        if serial:
            detail["serial"] = serial
        detail["replaces"] = record.id_hash
        await portal._audit(event, new.username, origin, detail)
        response = Response(status_code=303, headers={**page_headers(), "Location": rd})
        portal._session_cookie(response, session_id, origin)
        device = record.pending.get("device") if record.pending is not None else None
        if portal.devices is not None and isinstance(device, str):
            value = portal.devices.issue(new.username, device, now)
            portal._device_cookie(response, value, origin)
        return response

    # handlers

    async def _posted(
        self, request: Request, needed: Callable[[SessionRecord], bool] = needs_otp
    ) -> tuple[Origin, str, dict[str, str], SessionRecord] | Response:
        """A second-factor form's origin, return URL, fields and the sign-in that needs the
        second factor (``needed``); or the page to answer (an expired form, a sign-in that
        has ended or needs no second factor any more)."""
        portal = self.portal
        origin = portal.origin(request)
        form = await portal._form(request)
        if form is None:
            return portal._forbidden(f"{portal.settings.prefix}login")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        rd = portal.return_url(fields.get("rd"), origin)
        if not portal._csrf_ok(request, fields.get(CSRF_FIELD), origin):
            return portal._forbidden(_login_link(portal.settings.prefix, rd))
        flow = await self.flow(request, origin)
        if flow is None:
            return self.ended_page(rd)
        record = flow[1]
        if not needed(record):
            return _see_other(rd)
        return origin, rd, fields, record

    async def page(self, request: Request) -> Response:
        """GET ``otp``: the code form for the sign-in under way (after a reload or Back)."""
        portal = self.portal
        origin = portal.origin(request)
        rd = portal.return_url(request.query_params.get("rd"), origin)
        flow = await self.flow(request, origin)
        if flow is None or not needs_otp(flow[1]):
            return self.ended_page(rd) if flow is None else _see_other(rd)
        return await self.begin(
            request, origin, rd, flow[1], await self._checker().otp_status(flow[1].username)
        )

    async def submit(self, request: Request) -> Response:
        """POST ``otp``: check the code; right: finish, wrong: the form again."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        origin, rd, fields, record = posted
        code = clean_code(fields.get("code"))
        if not code:
            return self.code_page(request, origin, rd, MISSING_CODE)
        answer = await self._checker().otp_verify(
            record.username, code, origin.client_ip, attempt_of(fields.get("attempt"))
        )
        if answer.result == "ok":
            return await self.finish(request, origin, rd, record, None)
        if answer.result == "locked":
            return self.locked_page(answer.retry_after)
        if answer.result == "no_token":
            status = await self._checker().otp_status(record.username)
            return await self.begin(request, origin, rd, record, status)
        return self.code_page(request, origin, rd, WRONG_CODE)

    async def enrol_submit(self, request: Request) -> Response:
        """POST ``otp/enrol``: a new pending token, for a user who may enrol one."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        origin, rd, _fields, record = posted
        status = await self._checker().otp_status(record.username)
        if not (status.active == 0 or status.enrol_required):
            # A password alone never adds a token next to the user's own.
            return self.code_page(request, origin, rd)
        return await self.enrol(request, origin, rd, record)

    async def confirm_submit(self, request: Request) -> Response:
        """POST ``otp/confirm``: the new token's first code activates it and finishes."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        origin, rd, fields, record = posted
        serial = fields.get("serial") or ""
        if not _SERIAL.match(serial):
            return self.ended_page(rd)
        code = clean_code(fields.get("code"))
        if not code:
            return self.enrol_page(request, origin, rd, None, serial, MISSING_CODE)
        answer = await self._checker().otp_confirm(
            record.username, serial, code, origin.client_ip, attempt_of(fields.get("attempt"))
        )
        if answer.result == "ok":
            await self.portal._audit("otp_enrolled", record.username, origin, {"serial": serial})
            return await self.finish(request, origin, rd, record, serial)
        if answer.result == "locked":
            message = "Too many wrong codes for the new token. Please start again."
            return self.form_page(
                request, origin, "otp_offer.html", "Set up a second factor", rd=rd, error=message
            )
        return self.enrol_page(request, origin, rd, None, serial, WRONG_ENROL_CODE)


def _see_other(location: str) -> Response:
    return Response(status_code=303, headers={**page_headers(), "Location": location})
