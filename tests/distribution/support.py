"""Real components for the Distribution tests: an SMTP server (aiosmtpd, plain, STARTTLS,
implicit TLS, AUTH) and an HTTP SMS gateway (http.server), each in a thread of its own on a
loopback port, recording what they received; and the Distribution service as a process."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.certs import Pair
from tests.support.processes import Service, free_port, write_config


@dataclass(frozen=True)
class Received:
    recipients: tuple[str, ...]
    message_id: str
    subject: str
    text: str
    sender: str
    at: float
    tls: bool


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.sink.closing_once:  # a server shutting down this connection (RFC 5321 4.2.2)
            self.sink.closing_once = False
            return "421 sink.test closing this connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.delay:  # a slow server: the message is taken only after this
            await asyncio.sleep(self.sink.delay)
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""  # type: ignore[attr-defined]
        self.sink.add(
            Received(
                tuple(envelope.rcpt_tos),
                str(message.get("Message-ID", "")),
                str(message.get("Subject", "")),
                text.replace("\r\n", "\n"),
                str(envelope.mail_from),
                time.time(),
                session.ssl is not None or self.sink.mode == "tls",
            )
        )
        return "250 OK"


class MailSink:
    """An SMTP server on loopback. ``mode``: ``none``, ``starttls`` (STARTTLS required) or
    ``tls`` (implicit); ``auth``: (user, password) required before MAIL."""

    def __init__(
        self,
        port: int | None = None,
        *,
        mode: str = "none",
        cert: Pair | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.mode = mode
        self.cert = cert
        self.auth = auth
        self.received: list[Received] = []
        self.auth_failures = 0
        #: Seconds each message's DATA waits before it is taken (and answered).
        self.delay = 0.0
        #: The next MAIL is answered 421 (the server closes that connection).
        self.closing_once = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, mail: Received) -> None:
        with self._lock:
            self.received.append(mail)

    def mails(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def _context(self) -> ssl.SSLContext:
        assert self.cert is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert.cert, self.cert.key)
        return context

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        ok = (
            isinstance(data, LoginPassword)
            and (
                data.login.decode(),
                data.password.decode(),
            )
            == self.auth
        )
        if not ok:
            self.auth_failures += 1
        return AuthResult(success=ok, handled=False)

    def _factory(self) -> SMTP:
        kwargs: dict[str, Any] = {"hostname": "sink.test"}
        if self.mode == "starttls":
            kwargs.update(tls_context=self._context(), require_starttls=True)
        if self.auth is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                # aiosmtpd knows TLS only from its own STARTTLS: with implicit TLS (the
                # server's socket is TLS from the first byte) it would never offer AUTH.
                auth_require_tls=self.mode != "tls",
            )
        with warnings.catch_warnings():
            # "Requiring AUTH while not requiring TLS": implicit TLS, see above.
            warnings.simplefilter("ignore", UserWarning)
            return SMTP(_Handler(self), **kwargs)

    def start(self) -> MailSink:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                ssl_context = self._context() if self.mode == "tls" else None
                self._server = loop.run_until_complete(
                    loop.create_server(self._factory, self.host, self.port, ssl=ssl_context)
                )
            except BaseException as error:
                errors.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._server = None

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mails = self.mails()
            if len(mails) >= count:
                return mails
            time.sleep(0.02)
        raise AssertionError(f"{len(self.mails())} mails received, {count} expected")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)


class SmsGateway:
    """An HTTP SMS gateway on loopback: records every request and answers ``status`` with
    ``reply``."""

    def __init__(self, port: int | None = None, cert: Pair | None = None) -> None:
        self.port = port or free_port()
        self.cert = cert
        self.status = 200
        self.reply = b'{"accepted": true}'
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.cert is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/send"

    def recorded(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def start(self) -> SmsGateway:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with gateway._lock:
                    gateway.requests.append(
                        Request(self.command, self.path, dict(self.headers.items()), body)
                    )
                self.send_response(gateway.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(gateway.reply)))
                self.end_headers()
                self.wfile.write(gateway.reply)

            do_POST = do_PUT = do_GET = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert.cert, self.cert.key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.recorded()) >= count:
                return self.recorded()
            time.sleep(0.02)
        raise AssertionError(f"{len(self.recorded())} SMS requests, {count} expected")


# -- the service --------------------------------------------------------------------------


def smtp_channel(sink_port: int, name: str = "mail", **extra: Any) -> dict[str, Any]:
    return {
        "type": "smtp",
        "name": name,
        "host": "127.0.0.1",
        "port": sink_port,
        "security": "none",
        "sender": "Gatehouse <noreply@example.org>",
        "timeout": 2,
        **extra,
    }


def sms_channel(url: str, name: str = "sms", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http_sms",
        "name": name,
        "url": url,
        "body_template": '{"to": "{to}", "text": "{text}", "ref": "{id}"}',
        "timeout": 2,
        **extra,
    }


FAST = {"poll_interval": 0.2, "backoff_initial": 0.3, "backoff_max": 1, "lease": 5}


def start_distribution(
    tmp: Path,
    name: str,
    channels: list[dict[str, Any]],
    *,
    home: Path,
    delivery: dict[str, Any] | None = None,
    outbox_db: str | None = None,
    tls: Path | None = None,
    port: int | None = None,
) -> Service:
    port = port or free_port()
    settings: dict[str, Any] = {
        "id": name,
        "listen": f"127.0.0.1:{port}",
        "channels": channels,
        "delivery": {**FAST, **(delivery or {})},
    }
    if outbox_db is not None:
        settings["outbox_db"] = outbox_db
    config = write_config(tmp / f"{name}.yaml", {"distribution": settings})
    args = ["distribution", "--config", str(config), "--home", str(home)]
    if tls is not None:
        args += ["--tls", str(tls)]
    return Service(args, tmp / f"{name}.log", "127.0.0.1", port).wait_ready(30)


def new_key() -> str:
    return secrets.token_urlsafe(16)


def call(
    base: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def submit(base: str, context: ssl.SSLContext | None = None, **fields: Any) -> dict[str, Any]:
    body = {
        "key": new_key(),
        "purpose": "code",
        "subject": "Your sign-in code",
        "text": "Your code is 000000",
        "ttl": 60,
        **fields,
    }
    status, answer = call(base, "POST", "/internal/v1/messages", body, context)
    assert status == 200, answer
    return answer


def status_of(base: str, message_id: str) -> dict[str, Any]:
    status, answer = call(base, "GET", f"/internal/v1/messages/{message_id}")
    assert status == 200, answer
    return answer


def wait_until(
    check: Callable[[], bool], timeout: float = 20.0, what: str = "the condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")
