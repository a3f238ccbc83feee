"""The role matrix: every declared internal call (gatehouse.internal.catalog), with every
certificate role, against the real Policy, Authentication and Distribution apps served over
mutual TLS.

A pair the declaration does not allow is refused with 403 ``forbidden`` and audited on
``gatehouse.audit``; an allowed pair is not refused by role; a certificate from another CA
fails the handshake. Then the facts that come from the certificate: the Access Point of a
decision is the one the certificate names, whatever the body says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from gatehouse.authentication.app import create_app as authentication_app
from gatehouse.authentication.calls import (
    CodeSendRequest,
    CodeStatusRequest,
    CodeVerifyRequest,
    ConfirmRequest,
    EnrolRequest,
    OtpRequest,
    StatusRequest,
    VerifyRequest,
)
from gatehouse.authentication.config import AuthenticationSettings
from gatehouse.authentication.invitation_calls import (
    InvitationConfirm,
    InvitationEnrol,
    InvitationRequest,
)
from gatehouse.authentication.oauth_calls import (
    AuthorizeRequest,
    BearerRequest,
    ConsentsRequest,
    EndpointRequest,
    HintRequest,
    SessionEnded,
)
from gatehouse.config.loader import validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.distribution.app import create_app as distribution_app
from gatehouse.distribution.calls import SUBMIT, SubmitRequest
from gatehouse.distribution.config import DistributionSettings
from gatehouse.internal import catalog
from gatehouse.internal.calls import Call
from gatehouse.internal.client import AllEndpointsFailed, FailoverClient, StreamRefused
from gatehouse.internal.client import Response as Answer
from gatehouse.internal.hosting import server_config
from gatehouse.policy.app import create_app as policy_app
from gatehouse.policy.calls import DECIDE, PORTAL, DecisionRequest
from gatehouse.policy.end_sessions import revoke_through
from gatehouse.policy.service import PolicyService
from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import ACCESS_POINT, AUTHENTICATION, OPERATOR, POLICY, ROLES
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import ClientTLS, Credentials
from tests.support.asgi_server import serving
from tests.support.processes import free_port

from .conftest import MakeCredentials, on_uvloop

TOKEN = "matrix-admin-token-0123456789"
SAMPLES: dict[str, Any] = {
    "decide": DecisionRequest(
        session=None,
        resource="app",
        method="GET",
        path="/",
        url="https://app.test/",
        client_ip="192.0.2.1",
        headers={},
        ap="x",
    ),
    "verify_password": VerifyRequest("nobody", "not the password", "192.0.2.1"),
    "verify_otp": OtpRequest("nobody", "123456", "192.0.2.1", "matrix-attempt-0001"),
    "enrol_otp": EnrolRequest("nobody", "Gatehouse"),
    "confirm_otp": ConfirmRequest("nobody", "TOTP0", "123456", "192.0.2.1", "matrix-attempt-02"),
    "otp_status": StatusRequest("nobody"),
    "send_code": CodeSendRequest("nobody", "email_otp", "matrix-send-key-01", "192.0.2.1"),
    "code_status": CodeStatusRequest("nobody", "matrix-message-id-01"),
    "verify_code": CodeVerifyRequest(
        "nobody", "email_otp", "123456", "192.0.2.1", "matrix-attempt-04"
    ),
    "check_invitation": InvitationRequest("x" * 43),
    "enrol_invitation": InvitationEnrol("x" * 43, "nobody", "Gatehouse"),
    "confirm_invitation": InvitationConfirm(
        "x" * 43, "nobody", "TOTP0", "123456", "192.0.2.1", "matrix-attempt-03"
    ),
    # An unknown client: an error page, never a redirect.
    "oauth_authorize": AuthorizeRequest(
        {"client_id": "nobody", "response_type": "code"}, None, None, "matrix-attempt-05"
    ),
    # No client authentication: answered 401 by the provider, relayed in a 200.
    "oauth_endpoint": EndpointRequest(
        "introspect",
        "POST",
        {"content-type": "application/x-www-form-urlencoded"},
        "token=nothing",
    ),
    "oauth_session_ended": SessionEnded("0" * 32),
    "oauth_id_token_hint": HintRequest("not.a.token"),
    "oauth_bearer": BearerRequest("nothing"),
    "oauth_consents": ConsentsRequest("nobody"),
    # The same key every time: one message, answered again (idempotent by key).
    "submit_message": SubmitRequest(
        "matrix-message-key-01", "notice", "nobody@example.org", None, "Matrix", "text"
    ),
}
#: ``message_status`` asks for the message the stack submitted (set by ``_stack``).
PARAMS: dict[str, dict[str, str]] = {"revoke_session": {"id_hash": "0" * 32}}
QUERIES = {"list_sessions": "user=nobody", "end_sessions": "user=nobody"}


@dataclass
class Stack:
    urls: dict[str, str]


def _serve(app: Any, credentials: Credentials) -> contextlib.AbstractAsyncContextManager[str]:
    config = server_config(
        app, "127.0.0.1", free_port(), tls=credentials.server, revocations=Revocations()
    )
    return serving(config)


@contextlib.asynccontextmanager
async def _stack(tmp: Path, make_credentials: MakeCredentials) -> AsyncIterator[Stack]:
    """The Authentication and Policy services, each on mutual TLS, sharing one SQLite DB, and
    a Distribution service (without channels) on an outbox of its own."""
    db = f"sqlite+aiosqlite:///{tmp / 'gatehouse.db'}"
    token = tmp / "admin.token"
    token.write_text(TOKEN + "\n")
    home = tmp / "home"
    home.mkdir(mode=0o700)
    auth_app = authentication_app(
        AuthenticationSettings(),
        db,
        oath_db=db,
        oath_keyring=home / "oath-seeds.key",
        oauth2_db=db,
        oauth_keys=home / "oauth-signing-keys.json",
    )
    async with _serve(auth_app, make_credentials(AUTHENTICATION, "auth1")) as auth_url:
        policy_creds = make_credentials(POLICY, "ps1")
        config = validate(
            PolicyConfig,
            {
                "policy": {
                    "id": "ps1",
                    "authentication": [auth_url],
                    "admin_token_file": str(token),
                },
                "resources": {"app": "public", "ap7_only": {"access_point": ["ap7"]}},
            },
        )

        def make_service() -> PolicyService:
            return PolicyService(
                config,
                session_db=db,
                user_db=db,
                home=home,
                config_dir=tmp,
                credentials=policy_creds,
            )

        app = policy_app(config.login.portal_prefix, make_service)
        dist_app = distribution_app(
            DistributionSettings(),
            f"sqlite+aiosqlite:///{tmp / 'outbox.db'}",
            home / "outbox.key",
            home,
        )
        async with (
            _serve(app, policy_creds) as policy_url,
            _serve(dist_app, make_credentials("distribution", "dist1")) as dist_url,
        ):
            stack = Stack(
                {"policy": policy_url, "authentication": auth_url, "distribution": dist_url}
            )
            await _until_ready(stack, make_credentials)
            async with _client(dist_url, policy_creds, "distribution") as client:
                message = await SUBMIT.invoke(client, SAMPLES["submit_message"])
            PARAMS["message_status"] = {"id": message.id}
            yield stack


async def _until_ready(stack: Stack, make_credentials: MakeCredentials) -> None:
    """Both services answer their health (their databases are migrated)."""
    operator = make_credentials("operator", "ready")
    for service, url in stack.urls.items():
        async with _client(url, operator, service) as client:
            for _ in range(500):
                answer = await client.call_raw("GET", "/internal/v1/health", None, retry_safe=True)
                if answer.status == 200:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError(f"{service} never became healthy")


def _client(url: str, credentials: Credentials, service: str) -> FailoverClient:
    return FailoverClient(
        [url],
        tls=ClientTLS(credentials.client, frozenset({service})),
        connect_timeout=2,
        timeout=10,
        bearer_token=TOKEN,
    )


async def _make(call: Call[Any, Any], client: FailoverClient) -> Answer:
    """Make ``call`` (its first method) and return the answer, or the start of a stream."""
    if call.stream:
        try:
            async with contextlib.aclosing(call.stream_lines(client)) as lines:
                async for line in lines:
                    return Answer(200, {}, line)
        except StreamRefused as refused:
            return refused.response
        raise AssertionError(f"{call.name}: the stream ended at once")
    if call is PORTAL:
        return await client.call_raw("GET", "/_gatehouse/login", None, retry_safe=True)
    return await call.send(
        client,
        SAMPLES.get(call.name),
        params=PARAMS.get(call.name),
        query=QUERIES.get(call.name, ""),
    )


@on_uvloop
async def test_every_call_by_every_role(
    tmp_path: Path, make_credentials: MakeCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gatehouse.audit")
    certificates = {role: make_credentials(role, f"{role.replace('_', '-')}1") for role in ROLES}
    async with _stack(tmp_path, make_credentials) as stack:
        outcomes: dict[tuple[str, str], int] = {}
        for call in catalog.ALL:
            url = stack.urls[call.service]
            for role, credentials in certificates.items():
                caplog.clear()
                async with _client(url, credentials, call.service) as client:
                    answer = await _make(call, client)
                outcomes[(call.name, role)] = answer.status
                who = f"{role} '{role.replace('_', '-')}1'"
                refusals = [r.getMessage() for r in caplog.records if r.name == "gatehouse.audit"]
                if call.allows(role):
                    assert answer.status != 403, (call.name, role, answer.body)
                    assert not refusals, (call.name, role, refusals)
                else:
                    assert answer.status == 403, (call.name, role, answer.status)
                    assert orjson.loads(answer.body)["error"] == "forbidden"
                    assert any(
                        m.startswith(f"refused {call.method} ") and f"({call.name}) to {who}" in m
                        for m in refusals
                    ), (call.name, role, refusals)
        # The provider's client endpoints, served before the Policy app's router
        # (policy.oauth_relay): the portal's declaration, checked there too.
        for role, credentials in certificates.items():
            caplog.clear()
            async with _client(stack.urls["policy"], credentials, POLICY) as client:
                answer = await client.call_raw(
                    "POST", "/_gatehouse/oauth2/introspect", b"{}", retry_safe=False
                )
            refusals = [r.getMessage() for r in caplog.records if r.name == "gatehouse.audit"]
            if PORTAL.allows(role):
                # No client authentication: the provider's 401, relayed.
                assert answer.status == 401, (role, answer.status, answer.body)
                assert orjson.loads(answer.body)["error"] == "invalid_client"
                assert not refusals, (role, refusals)
            else:
                assert answer.status == 403, (role, answer.status)
                assert orjson.loads(answer.body)["error"] == "forbidden"
                assert any(
                    m.startswith("refused POST /_gatehouse/oauth2/introspect (portal)")
                    for m in refusals
                ), (role, refusals)
    # What the allowed pairs got: the real answers, not just "not refused".
    allowed = {pair: status for pair, status in outcomes.items() if status != 403}
    assert set(allowed.values()) == {200}, allowed
    assert len(allowed) == sum(len(c.roles) for c in catalog.ALL)


@on_uvloop
async def test_a_certificate_from_another_ca_fails_the_handshake(
    tmp_path: Path, make_credentials: MakeCredentials
) -> None:
    stranger = CertificateAuthority.create()
    async with _stack(tmp_path, make_credentials) as stack:
        for service, url in stack.urls.items():
            credentials = make_credentials(
                POLICY if service == AUTHENTICATION else ACCESS_POINT, "x1", stranger
            )
            async with _client(url, credentials, service) as client:
                with pytest.raises(AllEndpointsFailed):
                    await client.call_raw("GET", "/internal/v1/health", None, retry_safe=True)


@on_uvloop
async def test_the_access_point_of_a_decision_is_the_certificates(
    tmp_path: Path, make_credentials: MakeCredentials
) -> None:
    async with _stack(tmp_path, make_credentials) as stack:
        url = stack.urls["policy"]

        async def decision(cert_id: str, body_ap: str) -> str:
            request: DecisionRequest = {
                **SAMPLES["decide"],
                "resource": "ap7_only",
                "ap": body_ap,
            }
            async with _client(url, make_credentials(ACCESS_POINT, cert_id), POLICY) as client:
                answer = await DECIDE.invoke(client, request)
            return str(answer["decision"])

        assert await decision("ap7", "ap1") == "allow"
        assert await decision("ap1", "ap7") == "deny"


@on_uvloop
async def test_the_operator_cli_ends_sessions_through_the_declaration(
    tmp_path: Path, make_credentials: MakeCredentials
) -> None:
    """``gatehouse users`` asks a Policy service on mutual TLS with the operator's client
    context (end_sessions.revoke_through): refused for another role, the server checked."""
    async with _stack(tmp_path, make_credentials) as stack:
        port = int(stack.urls["policy"].rsplit(":", 1)[1])

        def config(policy_id: str) -> PolicyConfig:
            settings = {
                "id": policy_id,
                "listen": f"127.0.0.1:{port}",
                "admin_token_file": str(tmp_path / "admin.token"),
            }
            return validate(PolicyConfig, {"policy": settings})

        query = {"user": "nobody", "reason": "revoked"}
        operator = make_credentials(OPERATOR, "cli").client
        assert await revoke_through(config("ps1"), tmp_path, query, operator) == 0
        # An AP's certificate is refused (403); plaintext gets no answer from a TLS listener;
        # a server that is not the configured Policy service is not believed.
        ap = make_credentials(ACCESS_POINT, "ap1").client
        assert await revoke_through(config("ps1"), tmp_path, query, ap) is None
        assert await revoke_through(config("ps1"), tmp_path, query) is None
        assert await revoke_through(config("ps2"), tmp_path, query, operator) is None
