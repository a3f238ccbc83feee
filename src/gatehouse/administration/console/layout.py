"""The console's templates, cookies and security headers: what every page shares."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import Response

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
PREFIX = "/console"

_environment: Environment | None = None


def environment() -> Environment:
    """The Jinja2 environment (autoescaped), made once."""
    global _environment
    if _environment is None:
        _environment = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        _environment.filters["when"] = when
        _environment.filters["ago"] = ago
    return _environment


def when(moment: datetime | None) -> str:
    """``2030-01-02 03:04:05Z``; ``-`` for none."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """``5s ago``, ``3m ago``, ``in 6d``: how far ``moment`` is from now."""
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    text = f"{seconds}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            text = f"{seconds // size}{unit}"
            break
    return f"in {text}" if future else f"{text} ago"


def secure(request: Request) -> bool:
    """Whether the browser speaks TLS to us (the Administration service always does)."""
    return request.url.scheme == "https"


def cookie_name(request: Request, base: str) -> str:
    """``__Host-`` + ``base`` over TLS (host-only, path /, Secure), ``base`` otherwise."""
    return f"__Host-{base}" if secure(request) else base


SESSION_COOKIE = "gatehouse_console"
PRE_COOKIE = "gatehouse_console_pre"
FLASH_COOKIE = "gatehouse_console_flash"


def set_cookie(
    response: Response, request: Request, base: str, value: str, max_age: int | None = None
) -> None:
    response.set_cookie(
        cookie_name(request, base),
        value,
        max_age=max_age,
        path="/",
        secure=secure(request),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request, base: str) -> None:
    response.delete_cookie(
        cookie_name(request, base),
        path="/",
        secure=secure(request),
        httponly=True,
        samesite="strict",
    )


def read_cookie(request: Request, base: str) -> str | None:
    return request.cookies.get(cookie_name(request, base)) or None


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


def harden(response: Response) -> Response:
    """The headers every console answer carries: strict CSP, no framing, no sniffing, no
    caching, no referrer."""
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    headers.setdefault("Cache-Control", "no-store")
    return response
