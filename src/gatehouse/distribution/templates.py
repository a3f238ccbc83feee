"""What a channel sends, made from a message: the e-mail (RFC 5322) and the SMS gateway's
request body from its template. Pure functions; the channels do the I/O."""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from urllib.parse import quote_plus

import orjson

__all__ = ["envelope_sender", "message_id_header", "render_email", "render_sms_body"]

_PLACEHOLDER = re.compile(r"\{(to|text|id)\}")
#: Content types whose template values are JSON string contents, escaped.
_JSON = re.compile(r"^application/([a-z0-9.+-]*\+)?json\b", re.IGNORECASE)
_FORM = "application/x-www-form-urlencoded"


def message_id_header(message_id: str) -> str:
    """The Message-ID every delivery of one message carries (so duplicates can be recognised)."""
    return f"<{message_id}@gatehouse>"


def envelope_sender(sender: str) -> str:
    """The address of a ``From`` value (``Name <a@example.org>`` -> ``a@example.org``)."""
    return parseaddr(sender)[1] or sender


def render_email(
    message_id: str, sender: str, to: str, subject: str, text: str, when: float | None = None
) -> EmailMessage:
    """A plain text UTF-8 e-mail with the message's Message-ID."""
    mail = EmailMessage(policy=SMTP)
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = message_id_header(message_id)
    mail["Date"] = formatdate(when, usegmt=True)
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(text, charset="utf-8")
    return mail


def _escape(value: str, content_type: str) -> str:
    if _JSON.match(content_type.strip()):
        return orjson.dumps(value).decode("utf-8")[1:-1]
    if content_type.split(";")[0].strip().lower() == _FORM:
        return quote_plus(value)
    return value


def render_sms_body(
    template: str, content_type: str, *, to: str, text: str, message_id: str, query: bool = False
) -> str:
    """``template`` with ``{to}``, ``{text}`` and ``{id}`` filled in, each escaped for the
    content type (JSON string contents, form encoding; ``query``: a query string, form
    encoded). One pass: a value that contains ``{text}`` is not filled in again."""
    kind = _FORM if query else content_type
    values = {"to": to, "text": text, "id": message_id}
    return _PLACEHOLDER.sub(lambda m: _escape(values[m[1]], kind), template)
