"""What the channels send: the e-mail and the SMS gateway body (escaped per content type)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from gatehouse.distribution.templates import (
    envelope_sender,
    message_id_header,
    render_email,
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


def test_the_email_carries_the_message_id_and_the_text() -> None:
    mail = render_email(
        "MID123",
        "Gatehouse <noreply@example.org>",
        "jane@example.org",
        "Your code",
        "Code: 123456\n",
    )
    assert mail["Message-ID"] == message_id_header("MID123") == "<MID123@gatehouse>"
    assert mail["To"] == "jane@example.org"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content() == "Code: 123456\n"
    assert envelope_sender("Gatehouse <noreply@example.org>") == "noreply@example.org"
    assert envelope_sender("noreply@example.org") == "noreply@example.org"
