"""The demo mail server: an SMTP sink (aiosmtpd) that keeps the last messages in memory.

It runs in the demo backend's process and event loop (``gatehouse demo-backend --smtp
HOST:PORT``) so the single node can deliver one-time codes and invitations by e-mail without
any outside service; the backend lists what arrived at ``…/mail`` (a page) and ``…/mail.json``.
Nothing is relayed or written to disk: the messages live until the process ends or newer ones
push them out.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import html
import re
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

#: Messages kept by default: older ones are dropped as new ones arrive.
DEFAULT_KEEP = 200
#: The largest message accepted (bytes); a demo's mails are a few hundred.
MAX_MESSAGE = 1 << 20


@dataclass(frozen=True, slots=True)
class Mail:
    """One received message, as the mail pages show it."""

    recipient: str
    subject: str
    text: str
    time: str
    message_id: str | None

    def as_json(self) -> dict[str, str | None]:
        return asdict(self)


def _text_of(message: EmailMessage) -> str:
    """The plain-text body (the text/plain part of a multipart message), else ''."""
    body = message.get_body(preferencelist=("plain",))
    if body is None:
        return ""
    try:
        content = body.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken transfer encoding
        payload = body.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    # SMTP carries lines ending in CRLF; show them as the sender wrote them.
    return content.replace("\r\n", "\n") if isinstance(content, str) else ""


def parse_mail(raw: bytes, recipients: list[str], received: datetime) -> Mail:
    """A :class:`Mail` from the message's bytes and its envelope recipients."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    message_id = message.get("Message-ID")
    return Mail(
        recipient=", ".join(recipients),
        subject=str(message.get("Subject", "")),
        text=_text_of(message),
        time=received.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        message_id=str(message_id).strip() if message_id is not None else None,
    )


class MailBox:
    """The last ``keep`` messages received, newest first."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self._mails: deque[Mail] = deque(maxlen=keep)

    def add(self, mail: Mail) -> None:
        self._mails.appendleft(mail)

    def newest_first(self) -> list[Mail]:
        return list(self._mails)


class _Handler:
    """aiosmtpd's handler: every message accepted for every recipient goes into the box."""

    def __init__(self, box: MailBox) -> None:
        self._box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        self._box.add(parse_mail(raw, list(envelope.rcpt_tos), datetime.now(UTC)))
        return "250 Message accepted for delivery"


class MailSink:
    """The SMTP server, started and stopped on the running event loop."""

    def __init__(self, host: str, port: int, box: MailBox) -> None:
        self.host = host
        self.port = port
        self.box = box
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        from aiosmtpd.smtp import SMTP

        handler = _Handler(self.box)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(
                handler,
                hostname="gatehouse-demo",
                ident="Gatehouse demo mail sink",
                data_size_limit=MAX_MESSAGE,
                decode_data=False,
                enable_SMTPUTF8=True,
            ),
            self.host,
            self.port,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def mail_json(box: MailBox) -> list[dict[str, str | None]]:
    return [mail.as_json() for mail in box.newest_first()]


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>Demo mail</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}
article{{border:1px solid #ccc;border-radius:6px;padding:.5em 1em;margin:1em 0}}
pre{{white-space:pre-wrap;word-break:break-all}}dt{{font-weight:bold}}</style></head>
<body><h1>Demo mail</h1>
<p>What the demo mail sink received, newest first ({count} kept; this page reloads every 5 s;
<a href="mail.json">as JSON</a>).</p>
{items}
</body></html>
"""

_ITEM = """<article class="mail"><dl>
<dt>To</dt><dd class="recipient">{recipient}</dd>
<dt>Subject</dt><dd class="subject">{subject}</dd>
<dt>Received</dt><dd class="time">{time}</dd></dl>
<pre class="text">{text}</pre></article>"""


_URL = re.compile(r"https?://[^\s<>\"']+")


def linked(text: str) -> str:
    """``text`` escaped for HTML, its http(s) URLs made links (a demo's invitation link is
    one click away); nothing else of the text becomes markup."""
    parts: list[str] = []
    end = 0
    for match in _URL.finditer(text):
        parts.append(html.escape(text[end : match.start()]))
        url = html.escape(match.group(0))
        parts.append(f'<a href="{url}">{url}</a>')
        end = match.end()
    parts.append(html.escape(text[end:]))
    return "".join(parts)


def mail_page(box: MailBox) -> str:
    """The HTML list of the messages, every value escaped."""
    mails = box.newest_first()
    items = "\n".join(
        _ITEM.format(
            recipient=html.escape(mail.recipient),
            subject=html.escape(mail.subject),
            time=html.escape(mail.time),
            text=linked(mail.text),
        )
        for mail in mails
    )
    return _PAGE.format(count=len(mails), items=items or "<p>No mail yet.</p>")
