"""The SMTP channel against a real SMTP server (aiosmtpd): plain, STARTTLS and implicit TLS
with a CA made at test time, AUTH, and the failures a channel reports (short, without the
password or the text)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatehouse.distribution.channels import ChannelFailure, Outgoing
from gatehouse.distribution.config import SmtpChannel
from gatehouse.distribution.smtp import SmtpSender
from tests.distribution.support import MailSink
from tests.support.certs import Pair, TestCA
from tests.support.processes import free_port

PASSWORD = "s3cret-Pa55word"
TEXT = "Your code is 246810"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("smtp-ca"))


@pytest.fixture(scope="module")
def server_cert(ca: TestCA) -> Pair:
    return ca.issue("smtp", ["127.0.0.1", "localhost"])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "smtp-password").write_text(PASSWORD + "\n")
    (tmp_path / "smtp-password").chmod(0o600)
    return tmp_path


@pytest.fixture
def sinks() -> Iterator[list[MailSink]]:
    started: list[MailSink] = []
    yield started
    for sink in started:
        sink.stop()


def channel(port: int, **extra: Any) -> SmtpChannel:
    return SmtpChannel.model_validate(
        {
            "type": "smtp",
            "name": "mail",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "sender": "Gatehouse <noreply@example.org>",
            "timeout": 3,
            **extra,
        }
    )


def send(sender: SmtpSender, *ids: str) -> None:
    async def go() -> None:
        try:
            for message_id in ids:
                await sender.send(Outgoing(message_id, "jane@example.org", "Code", TEXT))
        finally:
            await sender.aclose()

    asyncio.run(go())


def failure(sender: SmtpSender) -> str:
    with pytest.raises(ChannelFailure) as caught:
        send(sender, "m1")
    reason = str(caught.value)
    assert PASSWORD not in reason
    assert TEXT not in reason
    return reason


def test_plain_smtp_delivers_with_the_message_id(home: Path, sinks: list[MailSink]) -> None:
    sink = MailSink().start()
    sinks.append(sink)
    send(SmtpSender(channel(sink.port), home), "msg-one", "msg-two")
    mails = sink.wait_for(2)
    assert [m.message_id for m in mails] == ["<msg-one@gatehouse>", "<msg-two@gatehouse>"]
    assert mails[0].recipients == ("jane@example.org",)
    assert mails[0].sender == "noreply@example.org"
    assert mails[0].text.strip() == TEXT
    assert not mails[0].tls


def tls_channel(sink: MailSink, mode: str, ca: TestCA) -> SmtpChannel:
    """A channel to ``sink`` over TLS (``mode``: starttls or tls), signing in as gatehouse."""
    return channel(
        sink.port,
        security=mode,
        username="gatehouse",
        password_file="smtp-password",
        ca_file=str(ca.path),
    )


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_tls_and_auth(
    mode: str, home: Path, ca: TestCA, server_cert: Pair, sinks: list[MailSink]
) -> None:
    sink = MailSink(mode=mode, cert=server_cert, auth=("gatehouse", PASSWORD)).start()
    sinks.append(sink)
    config = tls_channel(sink, mode, ca)
    send(SmtpSender(config, home), "tls-msg")
    (mail,) = sink.wait_for(1)
    assert mail.tls
    assert mail.message_id == "<tls-msg@gatehouse>"


def test_a_wrong_password_is_a_short_failure(
    home: Path, ca: TestCA, server_cert: Pair, sinks: list[MailSink]
) -> None:
    sink = MailSink(mode="tls", cert=server_cert, auth=("gatehouse", "another")).start()
    sinks.append(sink)
    config = tls_channel(sink, "tls", ca)
    assert "authentication refused" in failure(SmtpSender(config, home))
    assert sink.auth_failures >= 1  # each mechanism offered (PLAIN, LOGIN) tried once
    assert sink.mails() == []


def sockets_to(port: int) -> int:
    """This process's open sockets connected to ``port`` (the client's side only: the sink,
    a thread of this process, closes its own side in its own time)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=int(name))
        except OSError:
            continue  # closed meanwhile
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        finally:
            sock.detach()
        if isinstance(peer, tuple) and peer[1] == port:
            count += 1
    return count


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_a_failed_connection_is_released_before_the_failure_is_told(
    mode: str, home: Path, ca: TestCA, server_cert: Pair, sinks: list[MailSink]
) -> None:
    """A refused login closes a TLS connection, whose shutdown takes several loop turns: the
    send waits for it, so no socket is left closing when the loop ends (a ResourceWarning in
    whatever test runs next)."""
    sink = MailSink(mode=mode, cert=server_cert, auth=("gatehouse", "another")).start()
    sinks.append(sink)
    config = tls_channel(sink, mode, ca)
    sender = SmtpSender(config, home)

    async def go() -> None:
        with pytest.raises(ChannelFailure):
            await sender.send(Outgoing("m1", "jane@example.org", "Code", TEXT))
        assert sockets_to(sink.port) == 0  # no await since: released by send itself
        await sender.aclose()

    asyncio.run(go())


def test_an_unknown_ca_is_refused(home: Path, server_cert: Pair, sinks: list[MailSink]) -> None:
    sink = MailSink(mode="tls", cert=server_cert).start()
    sinks.append(sink)
    assert "TLS failed" in failure(SmtpSender(channel(sink.port, security="tls"), home))
    assert sink.mails() == []


def test_starttls_is_required_when_configured(home: Path, sinks: list[MailSink]) -> None:
    sink = MailSink().start()  # offers no STARTTLS
    sinks.append(sink)
    reason = failure(SmtpSender(channel(sink.port, security="starttls"), home))
    assert "STARTTLS" in reason or "not supported" in reason
    assert sink.mails() == []


def test_a_server_that_is_down(home: Path) -> None:
    assert "cannot connect" in failure(SmtpSender(channel(free_port()), home))


def test_a_kept_connection_the_server_dropped_is_replaced(
    home: Path, sinks: list[MailSink]
) -> None:
    port = free_port()
    first = MailSink(port).start()
    sinks.append(first)
    sender = SmtpSender(channel(port), home)

    async def go() -> None:
        await sender.send(Outgoing("before", "jane@example.org", "Code", TEXT))
        await asyncio.to_thread(first.stop)
        second = MailSink(port).start()
        sinks.append(second)
        await sender.send(Outgoing("after", "jane@example.org", "Code", TEXT))
        await sender.aclose()
        assert [m.message_id for m in second.wait_for(1)] == ["<after@gatehouse>"]

    asyncio.run(go())
    assert [m.message_id for m in first.mails()] == ["<before@gatehouse>"]


def test_the_password_file_must_be_private(home: Path) -> None:
    from gatehouse.distribution.secrets import SecretFileError

    (home / "smtp-password").chmod(0o644)
    config = channel(25, security="tls", username="u", password_file="smtp-password")
    with pytest.raises(SecretFileError, match="readable by others") as caught:
        SmtpSender(config, home)
    assert PASSWORD not in str(caught.value)


def test_a_kept_connection_closed_with_421_is_replaced(home: Path, sinks: list[MailSink]) -> None:
    sink = MailSink().start()
    sinks.append(sink)
    sender = SmtpSender(channel(sink.port), home)

    async def go() -> None:
        await sender.send(Outgoing("first", "jane@example.org", "Code", TEXT))
        sink.closing_once = True
        await sender.send(Outgoing("second", "jane@example.org", "Code", TEXT))
        await sender.aclose()

    asyncio.run(go())
    assert [m.message_id for m in sink.wait_for(2)] == ["<first@gatehouse>", "<second@gatehouse>"]
