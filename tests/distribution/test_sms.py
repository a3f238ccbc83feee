"""The HTTP SMS gateway channel against a real local HTTP server: the request made from the
template, auth from files, the idempotency key, success by status and pattern, failures."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatehouse.distribution.channels import ChannelFailure, Outgoing
from gatehouse.distribution.config import HttpSmsChannel
from gatehouse.distribution.sms import HttpSmsSender
from tests.distribution.support import SmsGateway
from tests.support.certs import TestCA
from tests.support.processes import free_port

TOKEN = "tok-4f1c9e"
TEXT = 'Your code is 135790 "now"'


@pytest.fixture
def gateway() -> Iterator[SmsGateway]:
    gw = SmsGateway().start()
    yield gw
    gw.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    for name, value in (("sms-token", TOKEN), ("sms-password", "pw:1")):
        (tmp_path / name).write_text(value + "\n")
        (tmp_path / name).chmod(0o600)
    return tmp_path


def sender(url: str, home: Path, **extra: Any) -> HttpSmsSender:
    config = HttpSmsChannel.model_validate(
        {
            "type": "http_sms",
            "name": "sms",
            "url": url,
            "body_template": '{"to": "{to}", "text": "{text}", "ref": "{id}"}',
            "timeout": 2,
            **extra,
        }
    )
    return HttpSmsSender(config, home)


def send(channel: HttpSmsSender, message_id: str = "m-1") -> None:
    asyncio.run(channel.send(Outgoing(message_id, "+4915112345678", "Code", TEXT)))


def test_a_json_post_with_bearer_auth_and_the_idempotency_key(
    gateway: SmsGateway, home: Path
) -> None:
    send(
        sender(gateway.url, home, auth="bearer", token_file="sms-token", headers={"X-Gw": "1"}),
        "msg-42",
    )
    (request,) = gateway.recorded()
    assert request.method == "POST"
    assert request.path == "/send"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Idempotency-Key"] == "msg-42"
    assert request.headers["X-Gw"] == "1"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"to": "+4915112345678", "text": TEXT, "ref": "msg-42"}


def test_basic_auth_and_a_get_with_the_values_in_the_query(gateway: SmsGateway, home: Path) -> None:
    channel = sender(
        gateway.url + "?account=7",
        home,
        method="GET",
        body_template="to={to}&msg={text}",
        auth="basic",
        username="gh",
        password_file="sms-password",
    )
    send(channel)
    (request,) = gateway.recorded()
    assert request.method == "GET"
    assert request.path.startswith("/send?account=7&to=%2B4915112345678&msg=")
    expected = base64.b64encode(b"gh:pw:1").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"


def test_success_is_decided_by_status_and_pattern(gateway: SmsGateway, home: Path) -> None:
    gateway.status = 500
    with pytest.raises(ChannelFailure, match="gateway answered HTTP 500"):
        send(sender(gateway.url, home))
    gateway.status = 200
    gateway.reply = b'{"result": "rejected"}'
    strict = sender(gateway.url, home, success_pattern='"result":\\s*"queued"')
    with pytest.raises(ChannelFailure, match="without the success pattern"):
        send(strict)
    gateway.reply = b'{"result": "queued"}'
    send(strict)
    gateway.status = 299
    send(sender(gateway.url, home, success_status=[299]))


def test_a_gateway_that_is_down_or_silent(home: Path) -> None:
    with pytest.raises(ChannelFailure, match="cannot connect") as caught:
        send(
            sender(
                f"http://127.0.0.1:{free_port()}/send", home, auth="bearer", token_file="sms-token"
            )
        )
    assert TOKEN not in str(caught.value)
    assert TEXT not in str(caught.value)

    import socket

    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(ChannelFailure, match="no response within 1 s"):
            send(sender(f"http://127.0.0.1:{port}/send", home, timeout=1))


def test_credentials_are_never_inline() -> None:
    with pytest.raises(ValueError, match="no credentials in the URL"):
        HttpSmsChannel.model_validate(
            {
                "type": "http_sms",
                "name": "s",
                "url": "https://u:p@gw.example/send",
                "body_template": "{to}{text}",
            }
        )
    with pytest.raises(ValueError, match="auth bearer: needs token_file"):
        HttpSmsChannel.model_validate(
            {
                "type": "http_sms",
                "name": "s",
                "url": "https://gw.example/send",
                "body_template": "{to}{text}",
                "auth": "bearer",
            }
        )
    with pytest.raises(ValueError, match="set by the channel"):
        HttpSmsChannel.model_validate(
            {
                "type": "http_sms",
                "name": "s",
                "url": "https://gw.example/send",
                "body_template": "{to}{text}",
                "headers": {"Authorization": "Bearer x"},
            }
        )


def test_https_with_the_gateways_ca(home: Path, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    gateway = SmsGateway(cert=ca.issue("gw", ["127.0.0.1"])).start()
    try:
        send(sender(gateway.url, home, ca_file=str(ca.path)), "tls-1")
        assert [r.headers["Idempotency-Key"] for r in gateway.recorded()] == ["tls-1"]
        with pytest.raises(ChannelFailure, match="TLS failed"):
            send(sender(gateway.url, home))  # the system's CAs do not know this one
        assert len(gateway.recorded()) == 1
    finally:
        gateway.stop()
