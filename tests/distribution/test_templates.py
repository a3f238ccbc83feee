"""What the channels send: the e-mail and the SMS gateway body (escaped per content type)."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from urllib.parse import parse_qs

from hypothesis import given
from hypothesis import strategies as st

from gatehouse.distribution.templates import (
    email_bytes,
    envelope_sender,
    message_id_header,
    render_sms_body,
)

HOSTILE = 'say "hi"\\ {to} & <b>\n\u00e9'


def test_json_template_values_are_escaped() -> None:
    body = render_sms_body(
        '{"to": "{to}", "text": "{text}", "ref": "{id}"}',
        "application/json",
        to="+4915112345678",
        text=HOSTILE,
        message_id="abc",
    )
    # One pass: the {to} inside the text stays as the user's text.
    assert json.loads(body) == {"to": "+4915112345678", "text": HOSTILE, "ref": "abc"}


def test_vendor_json_content_types_are_json_too() -> None:
    body = render_sms_body(
        '{"t": "{text}", "n": "{to}"}',
        "application/vnd.gw+json; charset=utf-8",
        to="+1",
        text='"',
        message_id="x",
    )
    assert json.loads(body) == {"t": '"', "n": "+1"}


def test_form_and_query_values_are_form_encoded() -> None:
    form = render_sms_body(
        "to={to}&msg={text}",
        "application/x-www-form-urlencoded",
        to="+49 1",
        text=HOSTILE,
        message_id="x",
    )
    assert parse_qs(form) == {"to": ["+49 1"], "msg": [HOSTILE]}
    query = render_sms_body(
        "to={to}&msg={text}&id={id}",
        "application/json",
        to="+1",
        text="a&b=c",
        message_id="m",
        query=True,
    )
    assert parse_qs(query) == {"to": ["+1"], "msg": ["a&b=c"], "id": ["m"]}


def test_plain_templates_are_filled_as_they_are() -> None:
    assert render_sms_body("{to}: {text}", "text/plain", to="+1", text="{id}", message_id="m") == (
        "+1: {id}"
    )


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_the_email_carries_the_message_id_and_the_text() -> None:
    raw = email_bytes(
        "MID123",
        "Gatehouse <noreply@example.org>",
        "jane@example.org",
        "Your code",
        "Code: 123456\n",
    )
    assert b"\r\n\r\nCode: 123456\r\n" in raw
    mail = parsed(raw)
    assert mail["Message-ID"] == message_id_header("MID123") == "<MID123@gatehouse>"
    assert mail["To"] == "jane@example.org"
    assert mail["From"] == "Gatehouse <noreply@example.org>"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Content-Transfer-Encoding"] == "7bit"
    assert mail.get_content().replace("\r\n", "\n") == "Code: 123456\n"
    assert envelope_sender("Gatehouse <noreply@example.org>") == "noreply@example.org"
    assert envelope_sender("noreply@example.org") == "noreply@example.org"


@given(
    subject=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=120),
    text=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"),
        min_size=1,
        max_size=300,
    ),
    name=st.text(
        st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters='"<>@,;:\\()[]'),
        max_size=30,
    ),
)
def test_any_subject_text_and_sender_name_survive(subject: str, text: str, name: str) -> None:
    sender = f"{name.strip()} <noreply@example.org>" if name.strip() else "noreply@example.org"
    mail = parsed(email_bytes("M", sender, "jane@example.org", subject, text))
    assert (
        str(mail["Subject"]) == subject.strip() or str(mail["Subject"]).split() == subject.split()
    )
    body = mail.get_content().replace("\r\n", "\n")
    expected = text if text.endswith("\n") else text + "\n"
    assert body == expected
