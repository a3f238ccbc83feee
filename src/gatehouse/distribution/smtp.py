"""The SMTP channel (RFC 5321) over aiosmtplib: plain, STARTTLS (RFC 3207, required when
configured) or implicit TLS (RFC 8314), AUTH (RFC 4954) when a username is configured.

Connections are kept between messages (up to one per delivery worker, idle at most
:data:`IDLE_TIMEOUT`): a code sent right after another does not pay a TCP and TLS handshake
and the greeting. A kept connection the server has closed meanwhile is found out on the next
message, which is then tried once more on a fresh connection (nothing was accepted on the
dead one).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from pathlib import Path

import aiosmtplib

from gatehouse.distribution.channels import ChannelFailure, Kind, Outgoing
from gatehouse.distribution.config import SmtpChannel
from gatehouse.distribution.secrets import read_secret
from gatehouse.distribution.templates import email_bytes, envelope_sender

__all__ = ["SmtpSender", "tls_context"]

#: Seconds a kept connection may stay idle (servers commonly drop idle clients after 5 min).
IDLE_TIMEOUT = 30.0


def tls_context(verify: bool, ca_file: str | None, home: Path) -> ssl.SSLContext:
    """A client context: the system's CAs (or ``ca_file``), TLS 1.2 at least."""
    if ca_file is not None:
        path = Path(ca_file) if Path(ca_file).is_absolute() else home / ca_file
        try:
            context = ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as error:
            reason = getattr(error, "strerror", None) or "not a PEM CA certificate"
            raise ChannelFailure(f"ca_file {path}: {reason}") from None
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpSender:
    """One configured SMTP channel."""

    kind: Kind = "email"

    def __init__(self, config: SmtpChannel, home: Path, max_idle: int = 4) -> None:
        self.config = config
        self.name = config.name
        self.timeout = config.timeout
        self.max_idle = max_idle
        self.password = (
            read_secret(config.password_file, home, f"channels.{config.name}.password_file")
            if config.password_file is not None
            else None
        )
        self.context = (
            tls_context(config.verify_tls, config.ca_file, home)
            if config.security != "none"
            else None
        )
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._closed = False

    def _client(self) -> aiosmtplib.SMTP:
        security = self.config.security
        return _Client(
            hostname=self.config.host,
            port=self.config.port,
            username=self.config.username,
            password=self.password,
            timeout=self.config.timeout,
            use_tls=security == "tls",
            start_tls=security == "starttls",
            validate_certs=self.config.verify_tls,
            tls_context=self.context,
        )

    def _take(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            smtp, since = self._idle.pop()
            if smtp.is_connected and now - since < IDLE_TIMEOUT:
                return smtp
            smtp.close()
        return None

    def _give_back(self, smtp: aiosmtplib.SMTP) -> None:
        if self._closed or len(self._idle) >= self.max_idle or not smtp.is_connected:
            smtp.close()
            return
        self._idle.append((smtp, time.monotonic()))

    async def send(self, message: Outgoing) -> None:
        mail = email_bytes(
            message.id, self.config.sender, message.to, message.subject, message.text
        )
        sender = envelope_sender(self.config.sender)
        smtp = self._take()
        if smtp is not None:
            try:
                await self._transaction(smtp, mail, sender, message.to)
            except _Stale:
                await _discard(smtp)
            else:
                self._give_back(smtp)
                return
        smtp = self._client()
        try:
            async with asyncio.timeout(self.config.timeout):
                await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as error:
            await _discard(smtp)
            raise ChannelFailure(f"{self.name}: authentication refused ({error.code})") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            await _discard(smtp)
            raise ChannelFailure(f"{self.name}: {_reason(error, connecting=True)}") from None
        try:
            await self._transaction(smtp, mail, sender, message.to)
        except _Stale as stale:
            await _discard(smtp)
            raise ChannelFailure(f"{self.name}: {stale}") from None
        self._give_back(smtp)

    async def _transaction(self, smtp: aiosmtplib.SMTP, mail: bytes, sender: str, to: str) -> None:
        """MAIL, RCPT, DATA on an open connection. ``_Stale`` when the connection failed
        (try another), :class:`ChannelFailure` when the server refused the message."""
        try:
            async with asyncio.timeout(self.config.timeout):
                await smtp.sendmail(sender, [to], mail)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError, OSError) as error:
            raise _Stale(_reason(error)) from None
        except aiosmtplib.SMTPResponseException as error:
            if error.code == 421:  # RFC 5321 4.2.2: the server is closing this connection
                raise _Stale(_reason(error)) from None
            await _discard(smtp)
            raise ChannelFailure(f"{self.name}: {_reason(error)}") from None
        except (aiosmtplib.SMTPException, TimeoutError) as error:
            await _discard(smtp)
            raise ChannelFailure(f"{self.name}: {_reason(error)}") from None

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for smtp, _since in idle:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await smtp.quit()
            await _discard(smtp)


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's client, remembering the connection it closed last (aiosmtplib closes it
    itself when ``connect`` fails, e.g. a refused login over TLS) so :func:`_discard` can wait
    until its socket is released."""

    closed_protocol: asyncio.BaseProtocol | None = None

    def close(self) -> None:
        if self.protocol is not None:
            self.closed_protocol = self.protocol
        super().close()


#: Loop turns :func:`_discard` waits at most for a closed connection to be released.
RELEASE_TURNS = 100


async def _discard(smtp: aiosmtplib.SMTP) -> None:
    """Close a connection and wait (briefly) until the loop has released its socket: a TLS
    connection's close runs its shutdown over several loop turns, and a transport left
    closing when its loop ends is a leaked socket."""
    smtp.close()
    protocol = getattr(smtp, "closed_protocol", None)
    for turn in range(RELEASE_TURNS):
        if protocol is None or getattr(protocol, "transport", None) is None:
            return
        await asyncio.sleep(0 if turn < 3 else 0.005)


class _Stale(Exception):
    """The connection failed under a transaction (not a refusal by the server)."""


def _reason(error: BaseException, connecting: bool = False) -> str:
    """A short reason: what kind of failure, the server's code and first words at most."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = sorted({r.code for r in error.recipients})
        return f"recipient refused ({', '.join(map(str, codes))})"
    if isinstance(error, aiosmtplib.SMTPResponseException):
        first = str(error.message).splitlines()[0][:80] if error.message else ""
        return f"server answered {error.code} {first}".rstrip()
    if isinstance(error, aiosmtplib.SMTPNotSupported):
        return f"not supported by the server: {str(error)[:80]}"
    if isinstance(error, TimeoutError | aiosmtplib.SMTPTimeoutError):
        return "timed out connecting" if connecting else "timed out"
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return f"TLS failed: {getattr(error, 'reason', None) or str(error)[:80]}"
    if isinstance(error, aiosmtplib.SMTPConnectError | ConnectionRefusedError):
        cause = error.__cause__ or error.__context__
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed: {cause.reason or str(cause)[:80]}"
        return "cannot connect" + (f": {str(error)[:100]}" if str(error) else "")
    if isinstance(error, aiosmtplib.SMTPServerDisconnected):
        return "connection closed by the server"
    if isinstance(error, OSError):
        return f"connection failed: {error.strerror or type(error).__name__}"
    return f"{type(error).__name__}: {str(error)[:80]}"
