"""The login portal: sign-in and sign-out pages, relayed to browsers by the Access Points.

Plain HTML forms that work without JavaScript, one inlined stylesheet, no external assets.
Every form is protected by a signed double-submit token (:mod:`gatehouse.policy.csrf`); every
return URL passes :func:`gatehouse.policy.redirects.safe_return_url`. A login always creates
a new session id (a session cookie the browser already had is ended first), so a planted id
can never become an authenticated one. A login whose rule asks for a one-time password too
(``step=otp``), or whose user must enrol a token, continues in :mod:`gatehouse.policy.otp_flow`;
one asking for a code by e-mail or SMS (``step=email_otp`` / ``sms_otp``) in
:mod:`gatehouse.policy.code_flow`.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gatehouse.internal.peer import scope_peer
from gatehouse.policy.csrf import COOKIE_NAME as CSRF_COOKIE
from gatehouse.policy.csrf import FIELD_NAME as CSRF_FIELD
from gatehouse.policy.csrf import CsrfGuard
from gatehouse.policy.devices import COOKIE_NAME as DEVICE_COOKIE
from gatehouse.policy.devices import DeviceCookies
from gatehouse.policy.redirects import HostPatterns, safe_return_url
from gatehouse.policy.sessions import Identity, SessionStore, session_cookie
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.trust.identity import ACCESS_POINT

if TYPE_CHECKING:
    from gatehouse.policy.code_flow import CodeChecker
    from gatehouse.policy.invitation_flow import InvitationChecker
    from gatehouse.policy.otp_flow import OtpChecker, OtpStatus

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STYLESHEET = (HERE / "static" / "gatehouse.css").read_text(encoding="utf-8")
STYLESHEET_HASH = base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()
MAX_USERNAME = 256
MAX_PASSWORD = 1024

#: How long the portal's wait page (:func:`wait_url`) waits for the session DB at most,
#: seconds: under the Access Points' portal read timeout (60 s,
#: ``gatehouse.access_point.runtime.PORTAL_READ_TIMEOUT``), so the browser gets the page's
#: answer, never the AP's timeout.
WAIT_PAGE_LIMIT = 45.0


def wait_url(prefix: str, original: str) -> str:
    """The portal's wait page for ``original``: it waits for the session DB (a failover),
    then sends the browser back to ``original``."""
    return f"{prefix}wait?rd={quote(original, safe='')}"


WRONG_CREDENTIALS = "Wrong user name or password."
MISSING_CREDENTIALS = "Enter your user name and password."

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- pure pieces -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a browser's request really came from, as told by a trusted Access Point."""

    client_ip: str
    https: bool
    host: str | None
    #: The Access Point terminated TLS itself (its own element of ``Forwarded``, the last,
    #: says ``proto=https``): the session and CSRF cookies are ``__Host-`` cookies, the name
    #: that AP reads on its TLS listener.
    tls: bool = False

    def cookie(self, name: str) -> str:
        """The name cookie ``name`` has for this request (``__Host-NAME`` under :attr:`tls`)."""
        return HOST_PREFIX + name if self.tls else name


#: RFC 6265bis §4.1.3.2: such a cookie is Secure, Path=/ and host-only, so neither a sibling
#: subdomain nor a plain-HTTP page can plant or overwrite it.
HOST_PREFIX = "__Host-"


def last_forwarded_proto(value: str | None) -> str:
    """``proto`` of the last element of a ``Forwarded`` field (RFC 7239), lower case; ""
    when absent. Commas inside quoted strings do not split elements."""
    if not value:
        return ""
    quoted = False
    start = 0
    for index, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            start = index + 1
    for pair in value[start:].split(";"):
        key, _, item = pair.strip().partition("=")
        if key.strip().lower() == "proto":
            return item.strip().strip('"').lower()
    return ""


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:
        value = value[1 : value.index("]")]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(ip: str, networks: Sequence[Network]) -> bool:
    address = _ip(ip)
    return address is not None and any(address in net for net in networks)


def request_origin(
    peer_ip: str,
    headers: Callable[[str], str | None],
    trusted: Sequence[Network],
    *,
    access_point: bool = False,
) -> Origin:
    """Client address, scheme and host of a request, believing forwarded fields only from
    trusted proxies. The client is the right-most X-Forwarded-For entry not itself trusted.

    ``access_point``: the peer is an Access Point, as its certificate says (mutual TLS), so
    its forwarded fields are believed whatever its address. Its X-Forwarded-For ends with the
    address it saw; before that comes the chain of a load balancer it trusts, if any (an
    Access Point keeps no chain from anyone else), whose last entry the Access Point takes for
    the client, and so does this: further left only through ``trusted``.
    """
    host = headers("host")
    if not access_point and not _trusted(peer_ip, trusted):
        return Origin(peer_ip, False, host)
    client = peer_ip
    chain = [
        p for p in (part.strip() for part in (headers("x-forwarded-for") or "").split(",")) if p
    ]
    if access_point and len(chain) > 1:
        chain.pop()  # the load balancer the Access Point trusts: the one before is the client
    for hop in reversed(chain):
        if _ip(hop) is None:
            break
        client = str(_ip(hop))
        if not _trusted(hop, trusted):
            break
    proto = (headers("x-forwarded-proto") or "").split(",")[0].strip().lower()
    forwarded_host = (headers("x-forwarded-host") or "").split(",")[0].strip()
    tls = last_forwarded_proto(headers("forwarded")) == "https"
    return Origin(client, proto == "https" or tls, forwarded_host or host, tls)


def set_cookie_header(
    name: str,
    value: str,
    *,
    path: str = "/",
    domain: str | None = None,
    secure: bool = False,
    same_site: Literal["Lax", "Strict"] = "Lax",
    max_age: int | None = None,
) -> str:
    if name.startswith(HOST_PREFIX):
        # The prefix is a promise browsers check: otherwise they drop the cookie.
        path, domain, secure = "/", None, True
    parts = [f"{name}={value}", f"Path={path}"]
    if domain:
        parts.append(f"Domain={domain}")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
        if max_age == 0:
            parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    parts.append(f"SameSite={same_site}")
    return "; ".join(parts)


def lock_end(now: datetime, retry_after: float) -> datetime:
    """When a lock with ``retry_after`` seconds left is over, rounded up to the whole minute
    (so that at the minute shown, signing in is possible again)."""
    end = now + timedelta(seconds=max(0.0, retry_after))
    if end.second or end.microsecond:
        end = end.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return end


def locked_message(retry_after: float, now: datetime, tz: tzinfo | None = None) -> Markup:
    """The sign-in page's message for a locked account: until when, as a clock time in ``tz``
    (None: this process's local time zone) with the zone's abbreviation, in a ``<time>``
    element whose ``datetime`` is the same instant in UTC; and that an administrator can
    unlock the account. ``now`` must be timezone-aware."""
    end = lock_end(now, retry_after)
    local = end.astimezone(tz)
    shown = f"{local:%H:%M} {local.tzname() or local.strftime('%z')}"
    if local.date() != now.astimezone(tz).date():
        shown += f" on {local:%Y-%m-%d}"
    return Markup(
        "Too many failed attempts. This account is locked until "
        '<time datetime="{}">{}</time>. '
        "If you need access before then, an administrator can unlock your account."
    ).format(f"{end.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}", shown)


# --- the Authentication service, as the portal needs it ---------------------------------


class AuthUnavailable(Exception):
    """No Authentication service gave a usable answer."""


class AuthOverloaded(AuthUnavailable):
    """The Authentication services refused the check: too many sign-ins at once."""


@dataclass(frozen=True, slots=True)
class Verdict:
    result: Literal["ok", "invalid", "locked"]
    identity: Identity | None = None
    retry_after: float = 0.0
    #: With ``ok``: the trusted-device id the Authentication service issued or renewed.
    device: str | None = None
    #: With ``ok``, when asked for and the Authentication service could tell: the user's
    #: one-time password status (else the portal asks for it).
    otp: OtpStatus | None = None


class PasswordChecker(Protocol):
    async def verify(
        self,
        username: str,
        password: str,
        client_ip: str,
        device: str | None = None,
        otp: bool = False,
    ) -> Verdict:
        """Raises :class:`AuthUnavailable` when no Authentication service answers
        (:class:`AuthOverloaded` when they answer that too many checks are under way).
        ``device``: the trusted-device id of a device cookie signed for ``username``;
        ``otp``: a right password's verdict should carry the user's OTP status."""
        ...


AuditHook = Callable[[str, str | None, str | None, dict[str, object]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PortalSettings:
    prefix: str
    title: str
    cookie_name: str
    cookie_domain: str | None
    trusted_proxies: tuple[Network, ...]
    redirect_hosts: HostPatterns


# --- pages ---------------------------------------------------------------------------------


class Pages:
    """Renders the portal's templates with the common frame."""

    def __init__(self, settings: PortalSettings) -> None:
        self._env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            auto_reload=False,
        )
        self._settings = settings

    def render(self, template: str, heading: str, status: int = 200, **context: object) -> Response:
        html = self._env.get_template(template).render(
            heading=heading,
            site_title=self._settings.title,
            prefix=self._settings.prefix,
            stylesheet=Markup(STYLESHEET),  # our own file: inlined verbatim
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=page_headers())

    def error(
        self, status: int, heading: str, message: str, retry_url: str = "", retry_label: str = ""
    ) -> Response:
        return self.render(
            "error.html",
            heading,
            status,
            message=message,
            retry_url=retry_url,
            retry_label=retry_label,
        )


def page_headers() -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{STYLESHEET_HASH}'; img-src 'self'; "
            "base-uri 'none'; frame-ancestors 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def unavailable_page(pages: Pages, prefix: str, action: str = "Signing in") -> Response:
    again = f"{prefix}login" if action == "Signing in" else f"{prefix}logout"
    return pages.error(
        503,
        "Sign-in unavailable" if action == "Signing in" else "Sign-out unavailable",
        f"{action} is not possible right now. Please try again in a few minutes.",
        again,
        "Try again",
    )


def overloaded_page(pages: Pages, prefix: str) -> Response:
    response = pages.error(
        503,
        "Too many sign-ins",
        "Too many sign-ins right now. Please try again in a moment.",
        f"{prefix}login",
        "Try again",
    )
    response.headers["Retry-After"] = "5"
    return response


class Portal:
    """Request handlers of the sign-in and sign-out pages."""

    def __init__(
        self,
        settings: PortalSettings,
        sessions: SessionStore,
        checker: PasswordChecker,
        csrf: CsrfGuard,
        audit: AuditHook,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tz: tzinfo | None = None,
        devices: DeviceCookies | None = None,
        otp: OtpChecker | None = None,
        invitations: InvitationChecker | None = None,
        codes: CodeChecker | None = None,
    ) -> None:
        from gatehouse.policy.code_flow import CodeSteps  # it builds on this module
        from gatehouse.policy.invitation_flow import InvitationSteps  # it builds on this module
        from gatehouse.policy.otp_flow import OtpSteps  # it builds on this module

        self.settings = settings
        #: Trusted-device cookies (None: none are set or read).
        self.devices = devices
        self.sessions = sessions
        self.checker = checker
        self.csrf = csrf
        self.audit = audit
        self.clock = clock
        #: The zone lock ends are shown in; None: this process's local time zone.
        self.tz = tz
        self.pages = Pages(settings)
        #: The second factor's pages (None checker: logins never ask for one).
        self.otp = OtpSteps(self, otp)
        #: The pages of codes sent by e-mail or SMS (None checker: never asked for).
        self.codes = CodeSteps(self.otp, codes)
        #: The enrolment by token invitation (None checker: every link is unavailable).
        self.invitations = InvitationSteps(self, invitations)

    # helpers

    def origin(self, request: Request) -> Origin:
        """Where the browser's request came from: forwarded fields are believed from an
        Access Point's certificate (mutual TLS), from ``trusted_proxies`` otherwise."""
        peer = request.client.host if request.client else ""
        _tls, caller = scope_peer(request.scope)
        relay = caller is not None and caller.role == ACCESS_POINT
        return request_origin(
            peer, request.headers.get, self.settings.trusted_proxies, access_point=relay
        )

    def return_url(self, rd: str | None, origin: Origin) -> str:
        return safe_return_url(rd, request_host=origin.host, allowed=self.settings.redirect_hosts)

    def _csrf_cookie(self, response: Response, token: str, origin: Origin) -> None:
        response.headers.append(
            "Set-Cookie",
            set_cookie_header(
                origin.cookie(CSRF_COOKIE),
                token,
                path=self.settings.prefix,
                secure=origin.https,
                same_site="Strict",
            ),
        )

    def _session_cookie(self, response: Response, value: str, origin: Origin) -> None:
        response.headers.append(
            "Set-Cookie",
            set_cookie_header(
                origin.cookie(self.settings.cookie_name),
                value,
                domain=self.settings.cookie_domain,
                secure=origin.https,
                max_age=None if value else 0,
            ),
        )

    def _login_form(
        self,
        request: Request,
        origin: Origin,
        rd: str,
        *,
        username: str = "",
        error: str | Markup = "",
        step: str = "",
    ) -> Response:
        token = self.csrf.token_for(request.cookies.get(origin.cookie(CSRF_COOKIE)))
        response = self.pages.render(
            "login.html",
            "Sign in",
            csrf=self.csrf.form_value(token, origin.client_ip),
            rd=rd,
            username=username,
            error=error,
            step=step,
        )
        self._csrf_cookie(response, token, origin)
        return response

    def _csrf_ok(self, request: Request, submitted: str | None, origin: Origin) -> bool:
        """The form's token signs this browser's CSRF cookie for this client address, and
        the browser does not say the form came from another site (Fetch Metadata)."""
        if request.headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
            log.info("form to %s refused: sent from another site", request.url.path)
            return False
        cookie = request.cookies.get(origin.cookie(CSRF_COOKIE))
        reason = self.csrf.refusal(cookie, submitted, origin.client_ip)
        if reason is None:
            return True
        log.info("form to %s refused: %s", request.url.path, reason)
        return False

    def _device_cookie(self, response: Response, value: str, origin: Origin) -> None:
        assert self.devices is not None
        response.headers.append(
            "Set-Cookie",
            set_cookie_header(
                DEVICE_COOKIE,
                value,
                path=self.settings.prefix,
                secure=origin.https,
                same_site="Strict",
                max_age=int(self.devices.lifetime.total_seconds()),
            ),
        )

    def _forbidden(self, again: str) -> Response:
        return self.pages.error(
            403,
            "Form expired",
            "This form has expired or was not sent from this site. "
            "Please load the page again and retry.",
            again,
            "Load the page again",
        )

    def _unavailable(self, action: str = "Signing in") -> Response:
        return unavailable_page(self.pages, self.settings.prefix, action)

    async def _form(self, request: Request) -> FormData | None:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return None
        return await request.form(max_files=0, max_fields=20, max_part_size=8192)

    # handlers

    async def login_page(self, request: Request) -> Response:
        origin = self.origin(request)
        rd = self.return_url(request.query_params.get("rd"), origin)
        step = _step(request.query_params.get("step"))
        if step in CODE_STEPS and self.codes.checker is not None:
            # A step-up to a code by e-mail or SMS: the page that sends one.
            flow = await self.otp.flow(request, origin)
            if flow is not None and flow[1].pending is None:
                if step in flow[1].methods:
                    return Response(status_code=303, headers={**page_headers(), "Location": rd})
                return await self.codes.begin(request, origin, rd, flow[1], step)
        elif step == "otp" and self.otp.checker is not None:
            # A step-up: a session that has a password but not the second factor the
            # rule asks for gets the code page alone.
            flow = await self.otp.flow(request, origin)
            if flow is not None and flow[1].pending is None:
                record = flow[1]
                if "otp" in record.methods:
                    return Response(status_code=303, headers={**page_headers(), "Location": rd})
                try:
                    status = await self.otp.checker.otp_status(record.username)
                except AuthUnavailable as exc:
                    log.warning(
                        "step-up of %r: authentication unavailable: %s", record.username, exc
                    )
                    return self._unavailable()
                return await self.otp.begin(request, origin, rd, record, status)
        return self._login_form(request, origin, rd, step=step)

    async def login_submit(self, request: Request) -> Response:
        origin = self.origin(request)
        form = await self._form(request)
        if form is None:
            return self._forbidden(f"{self.settings.prefix}login")
        rd = self.return_url(_field(form, "rd"), origin)
        step = _step(_field(form, "step"))
        if not self._csrf_ok(request, _field(form, CSRF_FIELD), origin):
            return self._forbidden(_login_link(self.settings.prefix, rd))
        username = (_field(form, "username") or "").strip()
        password = _field(form, "password") or ""
        if not username or not password:
            return self._login_form(
                request,
                origin,
                rd,
                username=username[:MAX_USERNAME],
                error=MISSING_CREDENTIALS,
                step=step,
            )
        if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
            return self._login_form(request, origin, rd, error=WRONG_CREDENTIALS, step=step)
        device = (
            self.devices.device(request.cookies.get(DEVICE_COOKIE), username, self.clock())
            if self.devices is not None
            else None
        )
        # With one-time passwords configured, the answer of a right password says the user's
        # tokens too: one call to the Authentication service instead of two.
        otp = self.otp.checker is not None
        try:
            verdict = await self.checker.verify(
                username, password, origin.client_ip, device, otp=otp
            )
        except AuthOverloaded as exc:
            log.warning("login of %r: authentication overloaded: %s", username, exc)
            return overloaded_page(self.pages, self.settings.prefix)
        except AuthUnavailable as exc:
            log.warning("login of %r: authentication unavailable: %s", username, exc)
            return self._unavailable()
        if verdict.result == "locked":
            message = locked_message(verdict.retry_after, self.clock(), self.tz)
            return self._login_form(
                request, origin, rd, username=username, error=message, step=step
            )
        if verdict.result != "ok" or verdict.identity is None:
            return self._login_form(
                request, origin, rd, username=username, error=WRONG_CREDENTIALS, step=step
            )
        code_step = step in CODE_STEPS and self.codes.checker is not None
        status = verdict.otp or await self._otp_status(
            verdict.identity.username, required=step == "otp"
        )
        if status is None and step == "otp":
            return self._unavailable()
        second_factor = code_step or (
            status is not None and (step == "otp" or status.enrol_required)
        )
        enrol = status is not None and status.enrol_required
        pending = {"enrol": enrol, "device": verdict.device} if second_factor else None
        try:
            # A new id at every login: whatever session the browser had ends here.
            await self.sessions.end(
                session_cookie(request.headers, origin.cookie(self.settings.cookie_name)), "login"
            )
            session_id, record = await self.sessions.create(
                verdict.identity,
                ["password"],
                self.clock(),
                client_ip=origin.client_ip,
                user_agent=request.headers.get("user-agent"),
                pending=pending,
            )
        except DatabaseUnavailable as exc:
            log.warning("login of %r: session DB unavailable: %s", username, exc)
            return self._unavailable()
        if second_factor:
            # The password was right; the sign-in waits in the session DB for the code.
            await self._audit(
                "password_accepted", record.username, origin, {"pending": record.id_hash}
            )
            try:
                if code_step:
                    response = await self.codes.begin(request, origin, rd, record, step)
                else:
                    assert status is not None
                    response = await self.otp.begin(request, origin, rd, record, status)
            except AuthUnavailable as exc:
                log.warning("login of %r: authentication unavailable: %s", username, exc)
                response = self._unavailable()
            self._session_cookie(response, session_id, origin)
            return response
        await self._audit("session_created", record.username, origin, {"session": record.id_hash})
        response = Response(status_code=303, headers={**page_headers(), "Location": rd})
        self._session_cookie(response, session_id, origin)
        if self.devices is not None and verdict.device is not None:
            value = self.devices.issue(record.username, verdict.device, self.clock())
            self._device_cookie(response, value, origin)
        return response

    async def _otp_status(self, username: str, *, required: bool) -> OtpStatus | None:
        """The user's tokens; None when no one-time password service is configured or (logged)
        none answers. A login that needs no second factor goes on without it."""
        checker = self.otp.checker
        if checker is None:
            return None
        try:
            return await checker.otp_status(username)
        except AuthUnavailable as exc:
            level = logging.WARNING if required else logging.INFO
            log.log(level, "login of %r: one-time password status unavailable: %s", username, exc)
            return None

    async def otp_page(self, request: Request) -> Response:
        return await self._otp_call(self.otp.page, request)

    async def otp_submit(self, request: Request) -> Response:
        return await self._otp_call(self.otp.submit, request)

    async def otp_enrol(self, request: Request) -> Response:
        return await self._otp_call(self.otp.enrol_submit, request)

    async def otp_confirm(self, request: Request) -> Response:
        return await self._otp_call(self.otp.confirm_submit, request)

    async def invite_page(self, request: Request) -> Response:
        return await self._otp_call(self.invitations.page, request)

    async def invite_enrol(self, request: Request) -> Response:
        return await self._otp_call(self.invitations.enrol, request)

    async def invite_confirm(self, request: Request) -> Response:
        return await self._otp_call(self.invitations.confirm, request)

    async def code_page(self, request: Request) -> Response:
        return await self._otp_call(self.codes.page, request)

    async def code_submit(self, request: Request) -> Response:
        return await self._otp_call(self.codes.submit, request)

    async def code_send(self, request: Request) -> Response:
        return await self._otp_call(self.codes.send_submit, request)

    async def _otp_call(
        self, handler: Callable[[Request], Awaitable[Response]], request: Request
    ) -> Response:
        try:
            return await handler(request)
        except AuthUnavailable as exc:
            log.warning("%s: authentication unavailable: %s", request.url.path, exc)
            return self._unavailable()

    async def wait_page(self, request: Request) -> Response:
        """Where a decision sends a browser whose session no Policy service could read while
        the session DB is being replaced: wait for the database (``failover_wait``, at most
        :data:`WAIT_PAGE_LIMIT`), then back to ``rd``, whose decision reads the session
        again (allowed, or the login page for a session that ended). Still unavailable after
        the wait: the page that says so (503), as a sign-in gets."""
        origin = self.origin(request)
        rd = self.return_url(request.query_params.get("rd"), origin)
        cookie = session_cookie(request.headers, origin.cookie(self.settings.cookie_name))
        if cookie:
            await self.sessions.lookup(cookie, self.clock(), cached=False, wait=WAIT_PAGE_LIMIT)
        return Response(status_code=303, headers={**page_headers(), "Location": rd})

    async def logout_page(self, request: Request) -> Response:
        origin = self.origin(request)
        # Where to go after signing in again (the 403 page's "sign in as someone else").
        rd = self.return_url(request.query_params.get("rd"), origin)
        cookie = session_cookie(request.headers, origin.cookie(self.settings.cookie_name))
        if not cookie:
            return self._signed_out(request, origin, rd)
        try:
            record = await self.sessions.lookup(cookie, self.clock(), touch=False)
        except DatabaseUnavailable as exc:
            log.warning("logout page: session DB unavailable: %s", exc)
            name = ""  # the form still works once the database is back
        else:
            if record is None:
                return self._signed_out(request, origin, rd)
            name = record.display_name or record.username
        token = self.csrf.token_for(request.cookies.get(origin.cookie(CSRF_COOKIE)))
        csrf = self.csrf.form_value(token, origin.client_ip)
        response = self.pages.render("logout.html", "Sign out", csrf=csrf, username=name, rd=rd)
        self._csrf_cookie(response, token, origin)
        return response

    async def logout_submit(self, request: Request) -> Response:
        origin = self.origin(request)
        form = await self._form(request)
        submitted = _field(form, CSRF_FIELD) if form is not None else None
        rd = self.return_url(_field(form, "rd") if form is not None else None, origin)
        if not self._csrf_ok(request, submitted, origin):
            return self._forbidden(_logout_link(self.settings.prefix, rd))
        try:
            record = await self.sessions.end(
                session_cookie(request.headers, origin.cookie(self.settings.cookie_name))
            )
        except DatabaseUnavailable as exc:
            log.warning("logout: session DB unavailable: %s", exc)
            return self._unavailable("Signing out")
        if record is not None:
            await self._audit("logout", record.username, origin, {"session": record.id_hash})
        return self._signed_out(request, origin, rd)

    def _signed_out(self, request: Request, origin: Origin, rd: str = "/") -> Response:
        response = self.pages.render(
            "signed_out.html", "Signed out", login_url=_login_link(self.settings.prefix, rd)
        )
        if origin.cookie(self.settings.cookie_name) in request.cookies:
            self._session_cookie(response, "", origin)
        return response

    async def _audit(
        self, event: str, username: str | None, origin: Origin, detail: dict[str, object]
    ) -> None:
        try:
            await self.audit(event, username, origin.client_ip, detail)
        except Exception:  # the audit log must never break a login or a logout
            log.exception("could not write audit event %s", event)

    async def stylesheet(self, request: Request) -> Response:
        return Response(
            STYLESHEET,
            media_type="text/css",
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )


#: The ``step`` markers of codes sent out of band.
CODE_STEPS = ("email_otp", "sms_otp")


def _step(value: str | None) -> str:
    """The login URL's ``step`` marker: ``otp``, ``email_otp``, ``sms_otp`` or nothing."""
    return value if value is not None and value in ("otp", *CODE_STEPS) else ""


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _login_link(prefix: str, rd: str) -> str:
    return f"{prefix}login?rd={quote(rd, safe='')}" if rd != "/" else f"{prefix}login"


def _logout_link(prefix: str, rd: str) -> str:
    return f"{prefix}logout?rd={quote(rd, safe='')}" if rd != "/" else f"{prefix}logout"
