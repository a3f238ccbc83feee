"""Pages and short responses the Access Point answers itself (errors, health)."""

from __future__ import annotations

import html
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import quote_from_bytes

if TYPE_CHECKING:
    from gatehouse.access_point.request import RequestHead

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{code} {phrase}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;
color:#1b1b1b}}h1{{font-size:1.5rem}}p{{line-height:1.5}}small{{color:#555}}</style>
</head><body><main><h1>{code} {phrase}</h1><p>{message}</p>
{extra}<p><small>Gatehouse access point</small></p></main></body></html>
"""

#: The public health answers (``GET /_gatehouse/health``): up or down, nothing else; the
#: details are on the status listener (:mod:`.status`).
HEALTH_OK = b'{"status":"ok"}'
HEALTH_DRAINING = b'{"status":"draining"}'

SIGN_OUT_LABEL = "Sign out / sign in as someone else"
#: A longer return path is left out of the sign-out link (the portal would refuse it anyway).
MAX_RETURN = 2048


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 200 OK``: the AP sends standard reason phrases (clients ignore them)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason(status)}".encode()
    return line


def response(
    status: int,
    body: bytes,
    content_type: bytes,
    close: bool,
    head_only: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """A complete HTTP/1.1 response with a fixed body."""
    lines = [
        f"HTTP/1.1 {status} {reason(status)}".encode(),
        b"Content-Type: " + content_type,
        b"Content-Length: " + str(len(body)).encode(),
        b"Cache-Control: no-store",
    ]
    lines.extend(name + b": " + value for name, value in extra or ())
    lines.append(b"Connection: close" if close else b"Connection: keep-alive")
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head if head_only else head + body


def error_page(
    status: int, message: str, close: bool, head_only: bool = False, link: str = ""
) -> bytes:
    """An HTML error page; ``message`` is plain text and is escaped. ``link`` is an optional
    ready-made HTML paragraph (see :func:`sign_out_link`)."""
    body = _PAGE.format(
        code=status, phrase=reason(status), message=html.escape(message), extra=link
    )
    return response(
        status,
        body.encode(),
        b"text/html; charset=utf-8",
        close,
        head_only,
        [(b"X-Content-Type-Options", b"nosniff")],
    )


def sign_out_link(reserved: str, path: str, query: bytes | None) -> str:
    """The 403 page's way out: a link to the portal's sign-out page under the reserved
    prefix, with the denied request's path and query as the place to return to after
    signing in again. The return path is always local (the portal checks it once more)."""
    target = path.encode("latin-1", "replace") + (b"" if query is None else b"?" + query)
    href = f"{reserved}logout"
    if target != b"/" and not target.startswith(b"//") and len(target) <= MAX_RETURN:
        href += "?rd=" + quote_from_bytes(target, safe="")
    return f'<p><a href="{html.escape(href)}">{html.escape(SIGN_OUT_LABEL)}</a></p>\n'


def forbidden_page(message: str, reserved: str, head: RequestHead, close: bool) -> bytes:
    """403 for a signed-in user whom the rules deny, with a way to sign out or switch user."""
    link = sign_out_link(reserved, head.path, head.query)
    return error_page(403, message, close, head.method == b"HEAD", link)


DEFAULT_MESSAGES = {
    400: "The request could not be understood.",
    404: "No resource is configured for this address.",
    405: "This method is not allowed here.",
    413: "The request body is larger than this resource accepts.",
    408: "The request took too long to arrive.",
    414: "The request target is too long.",
    417: "The expectation given in the Expect header cannot be met.",
    431: "The request header fields are too large.",
    500: "The access point met an internal error.",
    501: "The request uses a feature this server does not implement.",
    502: "The backend could not be reached.",
    503: "The service is unavailable.",
    504: "The backend did not answer in time.",
    505: "The HTTP version is not supported.",
}


def redirect(location: bytes, close: bool, head_only: bool = False) -> bytes:
    """``303 See Other`` to ``location`` (already checked to be a local path)."""
    body = (
        b'<!doctype html><title>See Other</title><a href="'
        + html.escape(location.decode("latin-1")).encode("latin-1")
        + b'">Continue</a>\n'
    )
    return response(
        303, body, b"text/html; charset=utf-8", close, head_only, [(b"Location", location)]
    )


def standard_error(status: int, close: bool, head_only: bool = False) -> bytes:
    return error_page(status, DEFAULT_MESSAGES.get(status, reason(status)), close, head_only)
