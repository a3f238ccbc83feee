"""The Distribution service as a process (``gatehouse distribution --config``) with a real
SMTP server and a real HTTP SMS gateway: the first channel that works delivers, failures move
to the next channel, rounds are retried until the message's expiry and never after, messages
survive a restart, the text is nowhere in clear, and over mutual TLS only Policy and
Authentication services may submit."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import Identity
from gatehouse.trust.tls import write_credentials
from tests.distribution.support import (
    MailSink,
    SmsGateway,
    call,
    new_key,
    sms_channel,
    smtp_channel,
    start_distribution,
    status_of,
    submit,
    wait_until,
)
from tests.support.processes import GATEHOUSE, Service, free_port

EMAIL, PHONE = "jane@example.org", "+4915112345678"


@pytest.fixture
def cleanup() -> Iterator[list[object]]:
    things: list[object] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, Service | MailSink | SmsGateway):
            thing.stop()


def secret_free(home: Path, logs: list[str], *codes: str) -> None:
    """No code in the service's logs, nor anywhere in the outbox DB's files."""
    for code in codes:
        for log in logs:
            assert code not in log
        for file in home.glob("outbox.db*"):
            assert code.encode() not in file.read_bytes(), file.name


def test_the_first_channel_delivers_once_per_key(tmp_path: Path, cleanup: list[object]) -> None:
    sink, gateway = MailSink().start(), SmsGateway().start()
    cleanup += [sink, gateway]
    home = tmp_path / "home"
    svc = start_distribution(
        tmp_path, "dist1", [smtp_channel(sink.port), sms_channel(gateway.url)], home=home
    )
    cleanup.append(svc)
    key = new_key()
    answer = submit(svc.url, key=key, email=EMAIL, phone=PHONE, text="Code 314159")
    assert answer["status"] == "accepted"
    (mail,) = sink.wait_for(1)
    assert mail.message_id == f"<{answer['id']}@gatehouse>"
    assert mail.text.strip() == "Code 314159"
    wait_until(lambda: status_of(svc.url, answer["id"])["status"] == "sent", what="sent")
    status = status_of(svc.url, answer["id"])
    assert status == {
        "id": answer["id"],
        "status": "sent",
        "channel": "mail",
        "attempts": 1,
        "recipient_hint": "j***@example.org, +49*********78",
        "error": None,
    }
    # The same key again: the same message, not a second one.
    again = submit(svc.url, key=key, email=EMAIL, phone=PHONE, text="Code 314159")
    assert again == {"id": answer["id"], "status": "sent"}
    code, refused = call(svc.url, "POST", "/internal/v1/messages", {"key": new_key()})
    assert code == 400
    assert refused["message"] == "purpose: missing"
    code, missing = call(svc.url, "GET", "/internal/v1/messages/" + "x" * 22)
    assert (code, missing["error"]) == (404, "not_found")
    assert len(sink.mails()) == 1
    assert gateway.recorded() == []
    secret_free(home, [svc.output()], "314159")


def test_smtp_down_the_sms_gateway_delivers(tmp_path: Path, cleanup: list[object]) -> None:
    gateway = SmsGateway().start()
    cleanup.append(gateway)
    svc = start_distribution(
        tmp_path,
        "dist1",
        [smtp_channel(free_port()), sms_channel(gateway.url)],
        home=tmp_path / "home",
    )
    cleanup.append(svc)
    answer = submit(svc.url, email=EMAIL, phone=PHONE, text="Code 271828")
    (request,) = gateway.wait_for(1)
    assert request.headers["Idempotency-Key"] == answer["id"]
    assert json.loads(request.body)["text"] == "Code 271828"
    wait_until(lambda: status_of(svc.url, answer["id"])["status"] == "sent", what="sent")
    status = status_of(svc.url, answer["id"])
    assert (status["channel"], status["attempts"]) == ("sms", 2)
    # The caller's own order: SMS first, so the dead SMTP server is not even tried.
    first = submit(svc.url, email=EMAIL, phone=PHONE, channels=["sms", "email"])
    gateway.wait_for(2)
    wait_until(lambda: status_of(svc.url, first["id"])["status"] == "sent", what="sent")
    assert status_of(svc.url, first["id"])["attempts"] == 1


def test_both_down_retried_until_one_returns_and_outbox_cli(
    tmp_path: Path, cleanup: list[object]
) -> None:
    gateway = SmsGateway().start()
    gateway.status = 503
    smtp_port = free_port()
    cleanup.append(gateway)
    home = tmp_path / "home"
    svc = start_distribution(
        tmp_path, "dist1", [smtp_channel(smtp_port), sms_channel(gateway.url)], home=home
    )
    cleanup.append(svc)
    answer = submit(svc.url, email=EMAIL, phone=PHONE, text="Code 161803", ttl=120)
    wait_until(lambda: status_of(svc.url, answer["id"])["status"] == "failed", what="failed round")
    failed = status_of(svc.url, answer["id"])
    assert "mail: cannot connect" in failed["error"]
    assert "sms: gateway answered HTTP 503" in failed["error"]
    gateway.wait_for(2)  # a second round came after the backoff

    shown = outbox(home, "show", answer["id"])
    assert "status:       failed" in shown.stdout
    assert "body:         encrypted" in shown.stdout
    assert "161803" not in shown.stdout

    sink = MailSink(smtp_port).start()
    cleanup.append(sink)
    (mail,) = sink.wait_for(1)
    assert mail.message_id == f"<{answer['id']}@gatehouse>"
    wait_until(lambda: status_of(svc.url, answer["id"])["status"] == "sent", what="sent")
    status = status_of(svc.url, answer["id"])
    assert status["channel"] == "mail"
    assert status["attempts"] >= 5  # two or more rounds of two, then the mail

    listing = outbox(home, "list")
    assert answer["id"] in listing.stdout
    assert "sent via mail" in listing.stdout
    assert "j***@example.org, +49*********78" in listing.stdout
    again = outbox(home, "retry", answer["id"], check=False)
    assert again.returncode == 2
    assert "was sent already" in again.stderr
    assert "body:         erased" in outbox(home, "show", answer["id"]).stdout
    secret_free(home, [svc.output()], "161803")


def test_expired_messages_are_dead_lettered_and_never_sent_late(
    tmp_path: Path, cleanup: list[object]
) -> None:
    smtp_port = free_port()
    home = tmp_path / "home"
    svc = start_distribution(tmp_path, "dist1", [smtp_channel(smtp_port)], home=home)
    cleanup.append(svc)
    answer = submit(svc.url, email=EMAIL, text="Code 141421", ttl=2, username="jane")
    wait_until(lambda: status_of(svc.url, answer["id"])["status"] == "expired", 10, what="expired")
    sink = MailSink(smtp_port).start()
    cleanup.append(sink)
    retry = outbox(home, "retry", answer["id"], check=False)
    assert retry.returncode == 2
    assert "never sent after its expiry" in retry.stderr
    wait_until(lambda: "expired undelivered" in svc.output(), 5, what="the audit event")
    import time

    time.sleep(1.5)  # several polls with the server back
    assert sink.mails() == []
    log = svc.output()
    assert f"message {answer['id']} (code for jane) expired undelivered" in log
    assert "body:         erased" in outbox(home, "show", answer["id"]).stdout
    secret_free(home, [log], "141421")


def test_a_restart_delivers_what_was_accepted(tmp_path: Path, cleanup: list[object]) -> None:
    smtp_port = free_port()
    home = tmp_path / "home"
    port = free_port()
    first = start_distribution(
        tmp_path,
        "dist1",
        [smtp_channel(smtp_port)],
        home=home,
        port=port,
        delivery={"backoff_initial": 30, "backoff_max": 60},
    )
    cleanup.append(first)
    ids = {submit(first.url, email=EMAIL, text=f"Code {n:06d}")["id"] for n in range(20)}
    wait_until(
        lambda: all(status_of(first.url, i)["status"] == "failed" for i in ids), what="failed"
    )
    assert first.stop() == 0
    sink = MailSink(smtp_port).start()
    cleanup.append(sink)
    # Due again only in 30 s; an administrator's retry makes the first due now.
    first_id = sorted(ids)[0]
    assert "is due now" in outbox(home, "retry", first_id).stdout
    second = start_distribution(
        tmp_path, "dist1-again", [smtp_channel(smtp_port)], home=home, port=port
    )
    cleanup.append(second)
    wait_until(lambda: len(sink.mails()) >= 1, what="the retried message")
    assert sink.mails()[0].message_id == f"<{first_id}@gatehouse>"
    second.stop()

    # Accepted and not sent: one worker waits on a server that never greets, the others
    # were never tried, when the service is killed (-9).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        third = start_distribution(
            tmp_path,
            "dist1-third",
            [smtp_channel(silent.getsockname()[1], timeout=5)],
            home=home,
            port=port,
            delivery={"workers": 1, "lease": 12, "backoff_initial": 60, "backoff_max": 60},
        )
        cleanup.append(third)
        fresh = {submit(third.url, email=EMAIL, text="Code 577215")["id"] for _ in range(10)}
        third.proc.kill()
        third.proc.wait()
    fourth = start_distribution(
        tmp_path, "dist1-fourth", [smtp_channel(smtp_port)], home=home, port=port
    )
    cleanup.append(fourth)
    delivered = sink.wait_for(1 + len(fresh), 30)
    got = {m.message_id for m in delivered}
    assert {f"<{i}@gatehouse>" for i in fresh} <= got
    logs = [svc.log_path.read_text() for svc in (first, second, third, fourth)]
    secret_free(home, logs, "577215", "000007")


def outbox(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*GATEHOUSE, "outbox", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_over_mutual_tls_only_policy_and_authentication_may_submit(
    tmp_path: Path, cleanup: list[object]
) -> None:
    sink = MailSink().start()
    cleanup.append(sink)
    ca = CertificateAuthority.create()

    def credentials(role: str, service_id: str) -> Path:
        directory = tmp_path / "tls" / service_id
        key, cert = ca.issue_key_pair(Identity(role, service_id))
        write_credentials(directory, ca.certificate_pem, cert, key)
        return directory

    svc = start_distribution(
        tmp_path,
        "dist1",
        [smtp_channel(sink.port)],
        home=tmp_path / "home",
        tls=credentials("distribution", "dist1"),
    )
    cleanup.append(svc)
    base = f"https://127.0.0.1:{svc.port}"

    def client(role: str, service_id: str) -> ssl.SSLContext:
        directory = credentials(role, service_id)
        context = ssl.create_default_context(cafile=str(directory / "ca.pem"))
        context.check_hostname = False
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        return context

    for role, service_id in (("authentication", "auth1"), ("policy", "ps1")):
        answer = submit(base, client(role, service_id), email=EMAIL, text="Code 662607")
        assert answer["status"] == "accepted"
    sink.wait_for(2)
    for role, service_id in (("access_point", "ap1"), ("distribution", "dist2")):
        body = {
            "key": new_key(),
            "purpose": "code",
            "email": EMAIL,
            "subject": "s",
            "text": "Code 662607",
            "ttl": 60,
        }
        code, answer = call(base, "POST", "/internal/v1/messages", body, client(role, service_id))
        assert code == 403
        assert answer["error"] == "forbidden"
    assert "refused POST /internal/v1/messages (submit_message)" in svc.output()
    code, health = call(base, "GET", "/internal/v1/health", None, client("access_point", "ap1"))
    assert code == 200
    assert health["role"] == "distribution"
    assert len(sink.mails()) == 2


def test_an_outbox_db_that_cannot_be_reached_answers_503(
    tmp_path: Path, cleanup: list[object]
) -> None:
    svc = start_distribution(
        tmp_path,
        "dist1",
        [smtp_channel(free_port())],
        home=tmp_path / "home",
        outbox_db=f"postgresql+asyncpg://gatehouse@127.0.0.1:{free_port()}/outbox",
    )
    cleanup.append(svc)
    body = {
        "key": new_key(),
        "purpose": "code",
        "email": EMAIL,
        "subject": "s",
        "text": "t",
        "ttl": 60,
    }
    code, answer = call(svc.url, "POST", "/internal/v1/messages", body)
    assert code == 503
    assert answer["error"] == "unavailable"  # the caller fails over to another service
    code, _ = call(svc.url, "GET", "/internal/v1/health")
    assert code == 503
