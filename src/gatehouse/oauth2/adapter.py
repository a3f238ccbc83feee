"""Authlib on our stack: its request objects built from (method, URI, headers, body) as the
Policy service relays them, and its answers turned into :class:`HttpAnswer`.

Authlib's grants are synchronous and call hooks for the I/O they need. We keep them I/O-free
instead of running them in a thread: the provider loads beforehand what a request can ask
for (the code, the refresh token, the token to introspect; clients are in memory), attaches
it to the request as :class:`Work`, and the hooks read it and *record* their effects (tokens
to store, a code to consume, a family to revoke) in the same :class:`Work`. After Authlib
answered, the provider commits the effects with one atomic statement each and, when a
concurrent request won the race, replaces the answer by the RFC's error. So the event loop
never waits for a database (on a SQLite file the hot reads and the exchange's two writes
are synchronous but never wait for a lock: see :mod:`gatehouse.oauth2.store`), no thread
pool sits in the request path (the code exchange goal is 500/s), and Authlib decides
everything the RFCs say from a consistent snapshot.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from authlib.common.security import is_secure_transport
from authlib.oauth2.rfc6749 import InsecureTransportError, OAuth2Payload, OAuth2Request

from gatehouse.oauth2.store import CodeRow, NewCode, TokenRow

FORM = "application/x-www-form-urlencoded"
#: Anything but printable ASCII (%x20-7E). A regular expression: a token is hundreds of
#: characters, checked on every introspection (a generator over them cost ~20 µs).
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def error_answer(
    status: int, error: str, description: str, headers: Mapping[str, str] | None = None
) -> HttpAnswer:
    """A JSON error as :rfc:`6749#section-5.2` says (never cached)."""
    body = json.dumps({"error": error, "error_description": description})
    return HttpAnswer(
        status, {"Content-Type": "application/json", **NO_STORE, **(headers or {})}, body
    )


@dataclass
class Work:
    """What one request's hooks may read (loaded before Authlib runs) and what they ask to
    be done (committed after)."""

    now: int
    code: CodeRow | None = None
    refresh: TokenRow | None = None
    #: Introspection / revocation: the row of the presented token and, for an access
    #: token, its verified claims.
    token: TokenRow | None = None
    access_claims: dict[str, Any] | None = None
    # -- effects ---------------------------------------------------------------------------
    new_code: NewCode | None = None
    issued: TokenRow | None = None
    consume_code: str | None = None
    rotate_from: str | None = None
    revoke_family: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Headers(dict[str, str]):
    """Header lookups ignore case, as HTTP's do."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((k.lower(), v) for k, v in headers.items())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._data: dict[str, str] = {}
        self._datalist: dict[str, list[str]] = {}
        for key, value in pairs:
            self._data.setdefault(key, value)
            self._datalist.setdefault(key, []).append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


@functools.lru_cache(maxsize=64)
def _secure(uri: str) -> bool:
    return bool(is_secure_transport(uri))


def _check_transport(uri: str) -> None:
    """Authlib's ``InsecureTransportError.check``, its answer kept per URI."""
    if not _secure(uri):
        raise InsecureTransportError()


class Request(OAuth2Request):  # type: ignore[misc]
    """An Authlib request: ``args`` from the query, ``form`` from a form body; the payload
    (what grants read) is the form for POST and the query for GET."""

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
        work: Work,
    ) -> None:
        # OAuth2Request.__init__ without its transport check, which reads the environment
        # and parses the URI (an IP address too, for http://127.0.0.1) on every request: the
        # URI is one of the configured issuer's endpoints, checked once (_check_transport).
        # tests/oauth2/test_adapter.py keeps the attributes the same as Authlib's.
        _check_transport(uri)
        self.method = method.upper()
        self.uri = uri
        self.headers = _Headers(headers)
        self._body: Any = None
        self.client: Any = None
        self.auth_method: Any = None
        self.user: Any = None
        self.authorization_code: Any = None
        self.refresh_token: Any = None
        self.credential: Any = None
        self._scope: Any = None
        self._args = _Payload(query)
        self._form = _Payload(form)
        self.payload = self._form if self.method == "POST" else self._args
        self.work = work

    @property
    def args(self) -> dict[str, str]:
        return self._args.data

    @property
    def form(self) -> dict[str, str]:
        return self._form.data

    def repeated(self) -> str | None:
        """A parameter given more than once (:rfc:`6749#section-3.1`: refused), if any."""
        for name, values in self.payload.datalist.items():
            if len(values) > 1:
                return str(name)
        return None


def unprintable(pairs: list[tuple[str, str]]) -> str | None:
    """The first parameter whose name or value is not printable ASCII (%x20-7E, what RFC 6749
    Appendix A allows every protocol parameter), if any: refused before Authlib, which would
    quote it into an error description."""
    for name, value in pairs:
        if _UNPRINTABLE.search(value) or _UNPRINTABLE.search(name):
            return "(a parameter name)" if _UNPRINTABLE.search(name) else name
    return None


def parse_form(headers: Mapping[str, str], body: str) -> list[tuple[str, str]]:
    """The body's parameters when it is a form; empty values count as omitted."""
    content_type = _Headers(headers).get("content-type", "") or ""
    if body and content_type.split(";")[0].strip().lower() == FORM:
        return [(k, v) for k, v in parse_qsl(body, keep_blank_values=False)]
    return []


def parse_query(query: str | Mapping[str, str]) -> list[tuple[str, str]]:
    if isinstance(query, str):
        return parse_qsl(query, keep_blank_values=False)
    return [(k, v) for k, v in query.items() if v != ""]


def to_answer(status: int, body: Any, headers: list[tuple[str, str]]) -> HttpAnswer:
    """Authlib's ``(status, body, headers)`` as an :class:`HttpAnswer` (dicts as JSON)."""
    return HttpAnswer(status, dict(headers), body if isinstance(body, str) else dumps(body))


def dumps(data: Any) -> str:
    """``data`` as JSON text: orjson (a tenth of the standard library's time on an
    introspection answer), the standard library for what orjson refuses (integers beyond
    64 bits)."""
    try:
        return orjson.dumps(data).decode()
    except TypeError:
        return json.dumps(data)


__all__ = [
    "FORM",
    "HttpAnswer",
    "Request",
    "Work",
    "dumps",
    "error_answer",
    "parse_form",
    "parse_query",
    "to_answer",
    "unprintable",
]
