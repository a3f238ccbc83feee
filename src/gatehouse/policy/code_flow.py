"""The portal's one-time codes sent out of band: ``email_otp`` and ``sms_otp``.

A rule asking for one of them makes the login URL say ``step=email_otp`` (or ``sms_otp``).
After the password the sign-in waits in the session DB as for ``otp``
(:mod:`gatehouse.policy.otp_flow`) and the portal asks the Authentication service to send a
code (``CODE_SEND``, with a ``key`` made when the form was served, so a resubmitted form is the
same send). The portal tells the truth:

- "We sent a code to j***@example.org" only once a Distribution service accepted the message
  (``CODE_SEND`` answers only then); before the code page renders it waits up to
  :data:`STATUS_WAIT` seconds for the message to be sent or to fail (``CODE_STATUS``).
- If delivery failed on every channel (or the message expired undelivered) the page says so,
  offers a new code and another method (the authenticator app, for a user who has a token),
  and shows no code field: never a prompt for a code that will not come.
- No contact data, a throttled resend, Distribution down: each its own plain sentence.

A right code (``CODE_VERIFY``, idempotent per ``attempt``) finishes the sign-in like ``otp``:
a new session id whose methods include ``email_otp`` / ``sms_otp`` (the Access Points send
them in ``Remote-Auth-Methods``). A step-up (a session lacking the method) starts with a page
that sends the code on a button press (no code is sent by a GET). Codes are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from gatehouse.policy.otp_flow import (
    OtpSteps,
    attempt_of,
    clean_code,
)
from gatehouse.policy.portal import AuthUnavailable, Origin, page_headers
from gatehouse.policy.sessions import SessionRecord

log = logging.getLogger(__name__)

EMAIL_OTP = "email_otp"
SMS_OTP = "sms_otp"
CODE_METHODS: tuple[str, ...] = (EMAIL_OTP, SMS_OTP)
#: The longest the code page waits for a message to be sent (or to fail) before rendering.
STATUS_WAIT = 2.0
STATUS_POLL = 0.1
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

HEADING = {EMAIL_OTP: "Enter the code we e-mailed you", SMS_OTP: "Enter the code we texted you"}
SEND_HEADING = {EMAIL_OTP: "Get a code by e-mail", SMS_OTP: "Get a code by text message"}
NOT_DELIVERED = "Code not delivered"
MISSING_CODE = "Type the code from the message we sent you."
WRONG_CODE = "That code is not right. Check the message we sent and type its code."
EXPIRED_CODE = "That code has expired. Send a new code."
LOCKED_CODE = "Too many wrong codes: that code no longer works. Send a new code."
CANNOT_SEND = (
    "We could not send a code right now (the message service is unavailable). "
    "Please try again in a minute, or use another method."
)


# --- the Authentication service, as the code steps need it --------------------------------


@dataclass(frozen=True, slots=True)
class SendOutcome:
    result: Literal["accepted", "throttled", "no_contact"]
    message_id: str | None = None
    status: str | None = None
    hint: str = ""
    retry_after: float | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    status: Literal["accepted", "sent", "failed", "expired", "unknown"]
    hint: str = ""


class CodeChecker(Protocol):
    """The code calls of the Authentication services; each raises :class:`AuthUnavailable`
    when none gives a usable answer (for a send: no Distribution service accepted it)."""

    async def code_send(
        self, username: str, method: str, key: str, client_ip: str
    ) -> SendOutcome: ...

    async def code_status(self, username: str, message_id: str) -> Delivery: ...

    async def code_verify(
        self, username: str, method: str, code: str, client_ip: str, attempt: str
    ) -> Literal["ok", "invalid", "expired", "locked"]: ...


# --- pure pieces -----------------------------------------------------------------------------


def code_method(value: str | None) -> str | None:
    """``value`` if it names a code method, else None."""
    return value if value in CODE_METHODS else None


def message_id_of(value: str | None) -> str | None:
    return value if value is not None and _MESSAGE_ID.match(value) else None


def needs(record: SessionRecord, method: str) -> bool:
    """Whether ``record`` is a sign-in or a session that has yet to run ``method``."""
    return record.pending is not None or method not in record.methods


def code_url(prefix: str, method: str, message_id: str, rd: str) -> str:
    return f"{prefix}code?method={method}&m={message_id}&rd={quote(rd, safe='')}"


def sent_notice(hint: str, status: str) -> str:
    to = f" to {hint}" if hint else ""
    if status == "sent":
        return f"We sent a code{to}."
    return f"We are sending a code{to}. It can take a moment to arrive."


def wait_words(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


# --- the pages -------------------------------------------------------------------------------


class CodeSteps:
    """The code pages of one portal; they share its settings, CSRF, sessions and the OTP
    steps' rendering and finish."""

    def __init__(self, otp: OtpSteps, checker: CodeChecker | None) -> None:
        self.otp = otp
        self.portal = otp.portal
        self.checker = checker

    def _checker(self) -> CodeChecker:
        if self.checker is None:
            raise AuthUnavailable("no one-time code service configured")
        return self.checker

    # rendering

    async def alternatives(self, record: SessionRecord, rd: str) -> list[tuple[str, str]]:
        """Other methods the user can run now: the authenticator app when the user has one."""
        checker = self.otp.checker
        if checker is None:
            return []
        try:
            status = await checker.otp_status(record.username)
        except AuthUnavailable:
            return []
        if status.active == 0:
            return []
        prefix = self.portal.settings.prefix
        return [(f"{prefix}otp?rd={quote(rd, safe='')}", "Use your authenticator app")]

    async def send_page(
        self,
        request: Request,
        origin: Origin,
        rd: str,
        record: SessionRecord,
        method: str,
        *,
        error: str = "",
        intro: str = "",
        can_send: bool = True,
        check_url: str = "",
        status: int = 200,
        send_label: str = "",
        heading: str = "",
    ) -> Response:
        """The page without a code field: a button to send (or send again), the other
        methods, and what went wrong if anything did."""
        return self.otp.form_page(
            request,
            origin,
            "code_send.html",
            heading or SEND_HEADING[method],
            status,
            rd=rd,
            method=method,
            error=error,
            intro=intro,
            can_send=can_send,
            check_url=check_url,
            send_label=send_label or ("Send a new code" if error else "Send me a code"),
            alternatives=await self.alternatives(record, rd),
        )

    def code_page(
        self,
        request: Request,
        origin: Origin,
        rd: str,
        method: str,
        message_id: str,
        *,
        hint: str = "",
        notice: str = "",
        error: str = "",
    ) -> Response:
        return self.otp.form_page(
            request,
            origin,
            "code.html",
            HEADING[method],
            200,
            rd=rd,
            method=method,
            message=message_id,
            hint=hint,
            notice=notice,
            error=error,
        )

    # steps

    async def begin(
        self, request: Request, origin: Origin, rd: str, record: SessionRecord, method: str
    ) -> Response:
        """After the password: send a code now (this is a POST). A step-up's first page
        (a GET) only offers to send one."""
        if request.method != "POST":
            intro = (
                "This page needs a one-time code sent to your e-mail address."
                if method == EMAIL_OTP
                else "This page needs a one-time code sent to your phone."
            )
            return await self.send_page(request, origin, rd, record, method, intro=intro)
        return await self.send(request, origin, rd, record, method, attempt_of(None))

    async def send(
        self,
        request: Request,
        origin: Origin,
        rd: str,
        record: SessionRecord,
        method: str,
        key: str,
    ) -> Response:
        """Ask for a code; on acceptance 303 to the code page (which checks delivery)."""
        try:
            outcome = await self._checker().code_send(
                record.username, method, key, origin.client_ip
            )
        except AuthUnavailable as exc:
            log.warning("code for %r not sent: %s", record.username, exc)
            return await self.send_page(
                request,
                origin,
                rd,
                record,
                method,
                error=CANNOT_SEND,
                status=503,
                send_label="Try again",
            )
        if outcome.result == "no_contact":
            message = outcome.message or "No contact data on file; choose another method."
            return await self.send_page(
                request,
                origin,
                rd,
                record,
                method,
                error=message[:1].upper() + message[1:] + ".",
                can_send=False,
            )
        if outcome.result == "throttled":
            wait = wait_words(outcome.retry_after or 30.0)
            if outcome.message_id is not None:
                # The code sent a moment ago is still good: its page (which checks that its
                # message did go out) with the reason no new one was sent.
                error = (
                    f"A code was sent to you a short while ago: use that one, or wait {wait} "
                    "before asking for a new one."
                )
                return await self.show(
                    request, origin, rd, record, method, outcome.message_id, error
                )
            error = f"Too many codes were sent to you. Wait {wait} before asking for a new one."
            return await self.send_page(request, origin, rd, record, method, error=error)
        assert outcome.message_id is not None
        location = code_url(self.portal.settings.prefix, method, outcome.message_id, rd)
        return Response(status_code=303, headers={**page_headers(), "Location": location})

    async def delivery(self, username: str, message_id: str) -> Delivery:
        """The message's status once sent or failed, waiting at most :data:`STATUS_WAIT`."""
        checker = self._checker()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STATUS_WAIT
        while True:
            found = await checker.code_status(username, message_id)
            if found.status != "accepted" or loop.time() >= deadline:
                return found
            await asyncio.sleep(STATUS_POLL)

    async def show(
        self,
        request: Request,
        origin: Origin,
        rd: str,
        record: SessionRecord,
        method: str,
        message_id: str,
        error: str = "",
    ) -> Response:
        """The code page when the message is on its way or arrived; else the truth."""
        found = await self.delivery(record.username, message_id)
        prefix = self.portal.settings.prefix
        if found.status in ("sent", "accepted"):
            return self.code_page(
                request,
                origin,
                rd,
                method,
                message_id,
                hint=found.hint,
                notice=sent_notice(found.hint, found.status),
                error=error,
            )
        to = f" to {found.hint}" if found.hint else ""
        if found.status == "failed":
            message = (
                f"We could not deliver the code{to}: every way of sending it failed so far. "
                "We keep trying until the code expires, but it may not arrive."
            )
            check = code_url(prefix, method, message_id, rd)
            return await self.send_page(
                request,
                origin,
                rd,
                record,
                method,
                error=message,
                check_url=check,
                heading=NOT_DELIVERED,
            )
        if found.status == "expired":
            message = f"The code could not be delivered{to} in time."
            return await self.send_page(
                request, origin, rd, record, method, error=message, heading=NOT_DELIVERED
            )
        return await self.send_page(request, origin, rd, record, method)

    # handlers

    async def page(self, request: Request) -> Response:
        """GET ``code``: the code page of a message sent (``m``), or the page to send one."""
        portal = self.portal
        origin = portal.origin(request)
        params = request.query_params
        rd = portal.return_url(params.get("rd"), origin)
        method = code_method(params.get("method"))
        flow = await self.otp.flow(request, origin)
        if flow is None or method is None:
            return self.otp.ended_page(rd)
        record = flow[1]
        if not needs(record, method):
            return _see_other(rd)
        message_id = message_id_of(params.get("m"))
        if message_id is None:
            return await self.begin(request, origin, rd, record, method)
        return await self.show(request, origin, rd, record, method, message_id)

    async def _posted(
        self, request: Request
    ) -> tuple[Origin, str, dict[str, str], SessionRecord, str] | Response:
        posted = await self.otp._posted(request, lambda record: True)
        if isinstance(posted, Response):
            return posted
        origin, rd, fields, record = posted
        method = code_method(fields.get("method"))
        if method is None:
            return self.otp.ended_page(rd)
        if not needs(record, method):
            return _see_other(rd)
        return origin, rd, fields, record, method

    async def send_submit(self, request: Request) -> Response:
        """POST ``code/send``: send a (new) code; the form's ``key`` makes a resubmitted
        form the same send."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        origin, rd, fields, record, method = posted
        return await self.send(request, origin, rd, record, method, attempt_of(fields.get("key")))

    async def submit(self, request: Request) -> Response:
        """POST ``code``: check the code; right: finish, else say why."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        origin, rd, fields, record, method = posted
        message_id = message_id_of(fields.get("m"))
        code = clean_code(fields.get("code"))
        if message_id is None:
            return await self.send_page(request, origin, rd, record, method)
        if not code:
            return await self.show(request, origin, rd, record, method, message_id, MISSING_CODE)
        result = await self._checker().code_verify(
            record.username, method, code, origin.client_ip, attempt_of(fields.get("attempt"))
        )
        if result == "ok":
            return await self.otp.finish(request, origin, rd, record, None, method)
        if result == "invalid":
            return await self.show(request, origin, rd, record, method, message_id, WRONG_CODE)
        message = EXPIRED_CODE if result == "expired" else LOCKED_CODE
        return await self.send_page(request, origin, rd, record, method, error=message)


def _see_other(location: str) -> Response:
    return Response(status_code=303, headers={**page_headers(), "Location": location})


__all__ = [
    "CODE_METHODS",
    "CodeChecker",
    "CodeSteps",
    "Delivery",
    "SendOutcome",
    "code_method",
    "needs",
]
