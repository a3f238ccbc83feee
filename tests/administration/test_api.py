"""The Administration API, through a real ``gatehouse administration`` process on loopback.

Also home to the helpers the other process tests use: :class:`Admin` (the process and its
calls), :func:`single_node` (the installation ``gatehouse up`` runs) and :func:`join`.
"""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse.administration import api_models, tokens_api
from gatehouse.administration.app import create_app
from gatehouse.administration.credentials import operator_context
from gatehouse.administration.document import parse_config
from gatehouse.administration.openapi import openapi_document
from gatehouse.administration.signing import verify
from gatehouse.administration.views import view_for
from gatehouse.node import NodeAddresses, installation
from gatehouse.trust.ca import key_pem, make_csr, make_key
from gatehouse.trust.tls import Credentials, write_credentials
from tests.support.processes import Service, free_port, write_config

ADMIN_TOKEN = object()  # "use the admin token" (the default of Admin.call)
OPERATOR = object()  # "present the operator's certificate" (the default of Admin.call)
Answer = tuple[int, Any]


def single_node(backend: str = "http://127.0.0.1:9000") -> dict[str, Any]:
    """The installation of ``gatehouse up`` (node.node_configs) as one configuration."""
    return {
        "services": [
            {
                "id": "ap1",
                "role": "access_point",
                "endpoint": "http://127.0.0.1:8080",
                "node": "local",
            },
            {"id": "ps1", "role": "policy", "endpoint": "http://127.0.0.1:8101", "node": "local"},
            {
                "id": "auth1",
                "role": "authentication",
                "endpoint": "http://127.0.0.1:8201",
                "node": "local",
            },
        ],
        "access_points": [{"id": "ap1", "policy_services": ["ps1"]}],
        "policy_services": [
            {"id": "ps1", "authentication": ["auth1"], "admin_token_file": "policy-admin.token"}
        ],
        "resources": [
            {"id": "demo", "hosts": ["*"], "path_prefix": "/", "backends": [backend]},
            {"id": "demo-public", "hosts": ["*"], "path_prefix": "/public", "backends": [backend]},
        ],
        "global_rule": "public",
        "resource_rules": {"demo": "authenticated", "demo-public": "public"},
    }


def as_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


class Admin:
    """A real ``gatehouse administration`` with its home, and JSON calls to it."""

    def __init__(
        self,
        home: Path,
        database: str | None = None,
        lock_check_interval: float = 5.0,
        name: str = "admin",
        port: int | None = None,
        **extra: object,
    ) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        settings: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "lock_check_interval": lock_check_interval,
        }
        if database is not None:
            settings["database"] = database
        settings.update(extra)
        self.config = write_config(home / "administration.yaml", {"administration": settings})
        self.process = Service(
            ["administration", "--config", str(self.config), "--home", str(home)],
            home / f"{name}.log",
            "127.0.0.1",
            self.port,
        )

    def start(self) -> Admin:
        self.process.wait_ready()
        self.token = (self.home / "admin.token").read_text().strip()
        self.operator = operator_context(self.home)
        ca = (self.home / "ca" / "ca.pem").read_text()
        self.anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies Admin, no cert
        self.anonymous.check_hostname = False
        self.anonymous.load_verify_locations(cadata=ca)
        return self

    @property
    def ca_pem(self) -> str:
        return (self.home / "ca" / "ca.pem").read_text()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        token: object = ADMIN_TOKEN,
        timeout: float = 10.0,
        cert: object = OPERATOR,
    ) -> Answer:
        """(status, decoded JSON or None); ``token=None`` sends no Authorization; ``cert``:
        the operator's certificate, None for none, or a service's client context."""
        headers = {}
        secret = self.token if token is ADMIN_TOKEN else token
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        context = self.operator if cert is OPERATOR else cert or self.anonymous
        assert isinstance(context, ssl.SSLContext)
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=context)
        try:
            conn.request(method, path, data, headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        assert response.getheader("content-type", "application/json") == "application/json"
        return response.status, json.loads(raw) if raw else None

    def ok(
        self,
        method: str,
        path: str,
        body: object = None,
        token: object = ADMIN_TOKEN,
        cert: object = OPERATOR,
    ) -> Any:
        status, answer = self.call(method, path, body, token, cert=cert)
        assert status == 200, answer
        return answer

    def apply(self, config: dict[str, Any] | str) -> Answer:
        text = config if isinstance(config, str) else as_yaml(config)
        return self.call("PUT", "/api/v1/draft", {"text": text})

    def publish(self, config: dict[str, Any], comment: str = "") -> int:
        assert self.apply(config)[0] == 200
        number: int = self.ok("POST", "/api/v1/publish", {"comment": comment})["version"]
        return number

    def stop(self) -> int:
        return self.process.stop()


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    process = Admin(tmp_path / "home")
    try:
        yield process.start()
    finally:
        process.stop()


@dataclass
class Joined:
    """A service that enrolled: Admin's answer and its credentials (``context``: its client
    TLS context, ``credentials``: the whole directory)."""

    answer: dict[str, Any]
    credentials: Credentials

    @property
    def context(self) -> ssl.SSLContext:
        return self.credentials.client

    @property
    def public_key(self) -> str:
        return str(self.answer["public_key"])


def register_body(token: str, service_id: str, role: str) -> tuple[dict[str, Any], bytes]:
    """A registration request with a CSR for a fresh key; the body and the key's PEM."""
    key = make_key()
    body = {
        "token": token,
        "service_id": service_id,
        "role": role,
        "node": "local",
        "endpoint": f"http://127.0.0.1:{free_port()}",
        "csr": make_csr(key).decode(),
    }
    return body, key_pem(key)


def join(
    admin: Admin, service_id: str, role: str = "access_point", replace: bool = False
) -> Joined:
    """Enrol a service with a fresh join token made for it."""
    made = {"role": role, "service_id": service_id, "ttl": "5m", "replace": replace}
    token = admin.ok("POST", "/api/v1/join-tokens", made)["token"]
    body, key = register_body(token, service_id, role)
    answer: dict[str, Any] = admin.ok("POST", "/api/v1/register", body, token=None, cert=None)
    directory = admin.home / "services" / f"{service_id}-{time.monotonic_ns()}"
    write_credentials(directory, answer["ca"].encode(), answer["certificate"].encode(), key)
    return Joined(answer, Credentials(directory))


# --- the example configuration -------------------------------------------------------------


def test_the_example_is_the_single_node_of_gatehouse_up(tmp_path: Path) -> None:
    example = single_node()
    # gatehouse up's demo also has /secure/, for password + one-time password (issue 15).
    backend = example["resources"][0]["backends"]
    example["resources"].append(
        {"id": "demo-secure", "hosts": ["*"], "path_prefix": "/secure", "backends": backend}
    )
    example["resource_rules"]["demo-secure"] = {"auth_methods": ["password", "otp"]}
    # ... and /secure-email/, for password + a code by e-mail through its Distribution
    # service, which delivers to the demo mail server (issue 16).
    example["resources"].append(
        {"id": "demo-secure-email", "hosts": ["*"], "path_prefix": "/secure-email"}
        | {"backends": backend}
    )
    example["resource_rules"]["demo-secure-email"] = {"auth_methods": ["password", "email_otp"]}
    example["services"].append(
        {"id": "dist1", "role": "distribution", "endpoint": "http://127.0.0.1:8301"}
        | {"node": "local"}
    )
    mail = {"type": "smtp", "name": "demo-mail", "host": "127.0.0.1", "port": 8025}
    mail |= {"security": "none", "sender": "Gatehouse <gatehouse@localhost>"}
    example["distribution"] = {"channels": [mail]}
    config = parse_config(as_yaml(example))
    addresses = NodeAddresses(
        ("127.0.0.1", 8080),
        ("127.0.0.1", 9000),
        ("127.0.0.1", 8101),
        ("127.0.0.1", 8201),
        metrics=None,  # the example has no metrics listeners
    )
    up = parse_config(as_yaml(installation(addresses, tmp_path, "local")))
    assert view_for(up, "dist1") == view_for(config, "dist1")
    assert view_for(up, "auth1")["authentication"]["distribution"] == ["http://127.0.0.1:8301"]
    up_ap, ap = view_for(up, "ap1"), view_for(config, "ap1")
    assert up_ap["access_point"].pop("status_listen") == "127.0.0.1:8090"
    assert ap["access_point"].pop("status_listen") is None
    assert up_ap == ap
    assert view_for(up, "auth1") == view_for(config, "auth1")
    up_policy, policy = view_for(up, "ps1"), view_for(config, "ps1")
    assert up_policy["policy"].pop("admin_token_file") == str(tmp_path / "policy-admin.token")
    assert policy["policy"].pop("admin_token_file") == "policy-admin.token"
    assert up_policy == policy


# --- who may call what ---------------------------------------------------------------------


ADMIN_CALLS = [
    ("GET", "/api/v1/draft", None),
    ("PUT", "/api/v1/draft", {"text": "{}"}),
    ("GET", "/api/v1/diff", None),
    ("POST", "/api/v1/publish", {}),
    ("POST", "/api/v1/rollback", {"version": 1}),
    ("GET", "/api/v1/versions", None),
    ("GET", "/api/v1/versions/1", None),
    ("GET", "/api/v1/services", None),
    ("POST", "/api/v1/join-tokens", {"role": "policy"}),
    ("POST", "/api/v1/services/ps1/revoke", {}),
    ("GET", "/api/v1/audit", None),
]


def test_admin_calls_need_the_admin_token_and_anyone_may_ask_for_health(admin: Admin) -> None:
    assert admin.call("GET", "/api/v1/health", token=None) == (
        200,
        {"status": "ok", "role": "administration", "version": 0},
    )
    assert admin.call("GET", "/api/v1/openapi.json", token=None)[1]["openapi"] == "3.1.0"
    for method, path, body in ADMIN_CALLS:
        for token in (None, "x" * 43, admin.token + "x"):
            status, answer = admin.call(method, path, body, token=token)
            assert (status, answer["error"]) == (401, "unauthorized"), (method, path, token)
    assert admin.ok("GET", "/api/v1/audit") == []  # nothing above changed anything


def test_errors_are_json_never_a_traceback(admin: Admin) -> None:
    assert admin.call("GET", "/api/v1/nothing") == (
        404,
        {"error": "not_found", "message": "Not Found"},
    )
    assert admin.call("DELETE", "/api/v1/draft")[0] == 405
    assert admin.call("PUT", "/api/v1/draft", b"{not json") == (
        400,
        {"error": "bad_request", "message": "body is not valid JSON"},
    )
    assert admin.call("PUT", "/api/v1/draft", {"txt": "x"})[1]["message"] == (
        "text: required field missing; txt: unknown field; did you mean 'text'?"
    )
    assert admin.call("POST", "/api/v1/join-tokens", {"role": "dba"})[0] == 400
    body = {"role": "policy", "service_id": "ps1", "ttl": "soon"}
    status, answer = admin.call("POST", "/api/v1/join-tokens", body)
    assert (status, answer["message"]) == (
        400,
        "ttl: not a duration: 'soon' (use e.g. 30, 30s, 250ms, 5m)",
    )
    assert admin.call("GET", "/api/v1/audit?limit=0")[1]["message"] == (
        "limit: must be a whole number from 1 to 1000, not '0'"
    )
    assert admin.call("GET", "/api/v1/versions/7") == (
        404,
        {"error": "not_found", "message": "there is no version 7"},
    )
    assert admin.call("GET", "/api/v1/draft") == (
        409,
        {"error": "conflict", "message": "there is no draft yet; apply a configuration first"},
    )
    assert "Traceback" not in admin.process.output()


# --- draft, diff, publish, rollback --------------------------------------------------------


def test_an_invalid_configuration_is_refused_with_every_path_and_changes_nothing(
    admin: Admin,
) -> None:
    admin.publish(single_node(), "first")
    draft_before = admin.ok("GET", "/api/v1/draft")
    audit_before = admin.ok("GET", "/api/v1/audit")
    broken = single_node()
    broken["resources"][1]["backends"] = ["http://127.0.0.1:9000", "nope"]
    broken["services"][1]["role"] = "dba"
    status, answer = admin.apply(broken)
    assert status == 422
    assert answer == {
        "error": "bad_request",
        "message": "the configuration is invalid (2 problems)",
        "problems": [
            {
                "path": "services[1].role",
                "message": (
                    "must be one of: access_point, policy, authentication, distribution; got 'dba'"
                ),
            },
            {
                "path": "resources[1].backends[1]",
                "message": "not a URL: 'nope' (expected http://host[:port][/path])",
            },
        ],
    }
    crossed = single_node()
    crossed["access_points"][0]["policy_services"] = ["auth1"]
    assert admin.apply(crossed)[1]["problems"] == [
        {
            "path": "access_points[0].policy_services[0]",
            "message": "'auth1' is an authentication service, not a policy service",
        }
    ]
    status, answer = admin.apply("services: [\n")
    assert status == 422
    assert answer["problems"][0]["path"] == ""
    assert "invalid YAML" in answer["problems"][0]["message"]
    assert admin.ok("GET", "/api/v1/draft") == draft_before
    assert admin.ok("GET", "/api/v1/audit") == audit_before
    assert admin.ok("GET", "/api/v1/health")["version"] == 1


def test_publish_numbers_versions_and_diff_shows_the_change(admin: Admin) -> None:
    assert admin.call("POST", "/api/v1/publish", {})[1]["message"] == (
        "there is no draft to publish; save one first"
    )
    assert admin.apply(single_node()) == (200, {"ok": True})
    first_diff = admin.ok("GET", "/api/v1/diff")["diff"]
    assert first_diff.startswith("--- (nothing published)\n+++ draft\n")
    assert admin.ok("POST", "/api/v1/publish", {"comment": "first"}) == {"version": 1}
    assert admin.ok("GET", "/api/v1/diff") == {"diff": ""}
    status, answer = admin.call("POST", "/api/v1/publish", {})
    assert (status, answer["message"]) == (409, "version 1 already says this; nothing to publish")

    changed = single_node("http://127.0.0.1:9001")
    assert admin.publish(changed, "second backend") == 2
    changed["sessions"] = {"idle_timeout": "10m"}
    admin.apply(changed)
    diff = admin.ok("GET", "/api/v1/diff")["diff"]
    assert diff.startswith("--- version 2\n+++ draft\n")
    assert "-  idle_timeout: 1800.0\n+  idle_timeout: 600.0\n" in diff
    assert "9001" not in diff
    assert (
        "-  - http://127.0.0.1:9000\n+  - http://127.0.0.1:9001\n"
        in admin.ok("GET", "/api/v1/diff?from=1")["diff"]
    )
    assert admin.ok("POST", "/api/v1/publish", {}) == {"version": 3}

    versions = admin.ok("GET", "/api/v1/versions")
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert [v["comment"] for v in versions] == ["", "second backend", "first"]
    assert {v["created_by"] for v in versions} == {"admin-token"}
    assert all(v["created_at"].endswith("Z") and v["rollback_of"] is None for v in versions)
    assert [v["version"] for v in admin.ok("GET", "/api/v1/versions?limit=1")] == [3]
    two = admin.ok("GET", "/api/v1/versions/2")
    assert two["text"] == as_yaml(single_node("http://127.0.0.1:9001"))
    assert two["services"] == ["ap1", "ps1", "auth1"]
    assert admin.ok("GET", "/api/v1/health")["version"] == 3
    draft = admin.ok("GET", "/api/v1/draft")
    assert (draft["text"], draft["updated_by"]) == (as_yaml(changed), "admin-token")


def test_rollback_publishes_an_old_version_again_as_a_new_one(admin: Admin) -> None:
    admin.publish(single_node(), "one")
    admin.publish(single_node("http://127.0.0.1:9001"), "two")
    assert admin.ok("POST", "/api/v1/rollback", {"version": 1}) == {"version": 3}
    three = admin.ok("GET", "/api/v1/versions/3")
    assert (three["rollback_of"], three["comment"]) == (1, "rollback to version 1")
    assert three["text"] == admin.ok("GET", "/api/v1/versions/1")["text"]
    assert admin.ok("GET", "/api/v1/draft")["text"] == three["text"]
    status, answer = admin.call("POST", "/api/v1/rollback", {"version": 1, "comment": "again"})
    assert (status, answer["error"]) == (409, "conflict")
    assert admin.call("POST", "/api/v1/rollback", {"version": 9})[0] == 404
    assert admin.call("POST", "/api/v1/rollback", {"version": 0})[0] == 400
    assert admin.ok("POST", "/api/v1/rollback", {"version": 2, "comment": "back"}) == {"version": 4}


# --- services: join tokens, enrolment, certificates, config, acks ---------------------------


def test_a_join_token_enrols_once_the_service_it_names_until_it_expires(admin: Admin) -> None:
    made = admin.ok("POST", "/api/v1/join-tokens", {"role": "policy", "service_id": "ps1"})
    fingerprint = made["ca_fingerprint"]
    assert fingerprint.startswith("sha256:")
    assert len(fingerprint) == 7 + 43
    assert made["token"].startswith(f"ghj1.{fingerprint[7:]}.")
    assert made["expires_at"].endswith("Z")
    body, _ = register_body(made["token"], "ps1", "policy")
    assert admin.call("POST", "/api/v1/register", {**body, "role": "bogus"}, token=None)[0] == 400
    assert (
        admin.call("POST", "/api/v1/register", {**body, "endpoint": "nope"}, token=None)[0] == 400
    )
    assert admin.call("POST", "/api/v1/register", {**body, "csr": "nope"}, token=None) == (
        400,
        {"error": "bad_request", "message": "csr: not a PEM certificate signing request"},
    )
    # Made for ps1 as a policy service: another id or role is refused, the token kept.
    for other in ({"service_id": "ps2"}, {"role": "authentication", "service_id": "ps1"}):
        status, answer = admin.call("POST", "/api/v1/register", {**body, **other}, token=None)
        assert status == 401, answer
        assert answer["message"].startswith("the join token was made for a policy service 'ps1'")
    registered = admin.ok("POST", "/api/v1/register", body, token=None, cert=None)
    assert registered["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert registered["ca"] == admin.ca_pem
    assert registered["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert "service_secret" not in registered
    refused = (
        401,
        {"error": "unauthorized", "message": "join token unknown, expired or already used"},
    )
    assert admin.call("POST", "/api/v1/register", body, token=None) == refused

    made = {"role": "policy", "service_id": "ps3", "ttl": "1s"}
    short = admin.ok("POST", "/api/v1/join-tokens", made)["token"]
    time.sleep(1.1)
    late, _ = register_body(short, "ps3", "policy")
    assert admin.call("POST", "/api/v1/register", late, token=None) == refused
    services = admin.ok("GET", "/api/v1/services")
    assert [(s["id"], s["role"], s["endpoint"]) for s in services] == [
        ("ps1", "policy", body["endpoint"])
    ]
    certificate = services[0]["certificate"]
    assert certificate["revoked"] is False
    assert certificate["not_after"] > certificate["not_before"]


def test_join_tokens_live_at_most_a_day(admin: Admin) -> None:
    body = {"role": "policy", "service_id": "ps1", "ttl": "25h"}
    assert admin.call("POST", "/api/v1/join-tokens", body) == (
        400,
        {
            "error": "bad_request",
            "message": "ttl: a join token lives at most 24h, not 90000 seconds",
        },
    )
    made = admin.ok("POST", "/api/v1/join-tokens", {**body, "ttl": "24h"})
    assert (
        made["expires_at"]
        > admin.ok("POST", "/api/v1/join-tokens", body | {"ttl": 60})["expires_at"]
    )


def test_config_and_ack_need_the_services_own_certificate(admin: Admin) -> None:
    ap = join(admin, "ap1")
    ps = join(admin, "ps1", "policy")
    version = admin.publish(single_node())
    path = "/api/v1/config/ap1"
    for cert in (None, admin.operator, ps.context):
        status, answer = admin.call("GET", path, token=None, cert=cert)
        assert (status, answer["error"]) == (403, "forbidden"), answer
        assert admin.call("POST", f"{path}/ack", {"version": 1}, token=None, cert=cert)[0] == 403
    assert admin.call("GET", path, token=None, cert=ps.context)[1]["message"] == (
        "the client certificate is policy 'ps1''s, not 'ap1''s"
    )
    status, envelope = admin.call("GET", path, token=None, cert=ap.context)
    assert status == 200
    verified = verify(ap.public_key, envelope, service="ap1")
    assert verified.version == version
    assert verified.view == view_for(parse_config(as_yaml(single_node())), "ap1")
    assert verified.revoked == frozenset()
    assert "rules" not in verified.view  # an AP's view only

    # A service joins as what the configuration says it is; a refusal keeps the token.
    made = {"role": "access_point", "service_id": "ps1", "replace": True}
    token = admin.ok("POST", "/api/v1/join-tokens", made)["token"]
    body, _ = register_body(token, "ps1", "access_point")
    assert admin.call("POST", "/api/v1/register", body, token=None) == (
        400,
        {
            "error": "bad_request",
            "message": "role: 'ps1' is a policy service in version 1, not an access point",
        },
    )

    # A registered service that the newest version leaves out is told so.
    stray = join(admin, "ap9")
    assert admin.call("GET", "/api/v1/config/ap9", token=None, cert=stray.context) == (
        404,
        {"error": "not_found", "message": "service 'ap9' is not in version 1"},
    )


def test_the_certificate_names_the_token_not_the_csr(admin: Admin) -> None:
    """A CSR naming another service and role is only a proof of its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from gatehouse.trust.identity import Identity, identity_of

    token = admin.ok("POST", "/api/v1/join-tokens", {"role": "access_point", "service_id": "ap1"})
    body, key_file = register_body(token["token"], "ap1", "access_point")
    key = serialization.load_pem_private_key(key_file, None)
    forged = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ps1")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://gatehouse/administration/admin")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
        .public_bytes(serialization.Encoding.PEM)
    )
    answer = admin.ok("POST", "/api/v1/register", {**body, "csr": forged.decode()}, token=None)
    certificate = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert identity_of(certificate) == Identity("access_point", "ap1")
    uris = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert uris.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://gatehouse/access_point/ap1"
    ]


def test_enrolling_again_needs_replace_which_revokes_the_old_certificate(admin: Admin) -> None:
    first = join(admin, "ap1")
    admin.publish(single_node())
    token = admin.ok("POST", "/api/v1/join-tokens", {"role": "access_point", "service_id": "ap1"})
    body, _ = register_body(token["token"], "ap1", "access_point")
    status, answer = admin.call("POST", "/api/v1/register", body, token=None)
    assert (status, answer["error"]) == (409, "conflict")
    assert answer["message"].startswith("'ap1' is enrolled already; to enrol it again")
    assert "--replace" in answer["message"]
    assert admin.call("GET", "/api/v1/config/ap1", token=None, cert=first.context)[0] == 200

    second = join(admin, "ap1", replace=True)
    serial = f"{first.credentials.info.serial:x}"
    replaced = admin.ok("GET", "/api/v1/audit?limit=5")
    entry = next(e for e in replaced if e["action"] == "service.replace")
    assert f"replacing its enrolment (revoked: {serial})" in entry["what"]
    # The old certificate is refused and published as revoked, in a new version.
    status, answer = admin.call("GET", "/api/v1/config/ap1", token=None, cert=first.context)
    assert (status, answer["error"]) == (403, "forbidden")
    assert "is revoked" in answer["message"]
    status, envelope = admin.call("GET", "/api/v1/config/ap1", token=None, cert=second.context)
    assert (status, envelope["version"], envelope["revoked"]) == (200, 2, [serial])


def test_revoking_a_service_refuses_it_and_publishes_its_serials(admin: Admin) -> None:
    ap = join(admin, "ap1")
    ps = join(admin, "ps1", "policy")
    admin.publish(single_node())
    assert admin.call("POST", "/api/v1/services/nope/revoke", {}) == (
        404,
        {"error": "not_found", "message": "no certificate was issued to 'nope'"},
    )
    # ps1's poll is parked when the revocation comes: it is answered 403, not the envelope.
    results: list[tuple[float, Answer]] = []
    waiter = threading.Thread(
        target=lambda: results.append(
            (
                0.0,
                admin.call("GET", "/api/v1/config/ps1?after=1&wait=20", None, None, 30, ps.context),
            )
        )
    )
    waiter.start()
    time.sleep(0.3)
    answer = admin.ok("POST", "/api/v1/services/ps1/revoke", {})
    serial = f"{ps.credentials.info.serial:x}"
    assert answer == {"revoked": [serial], "version": 2}
    waiter.join(5)
    assert [(status, body["error"]) for _, (status, body) in results] == [(403, "forbidden")]
    status, envelope = admin.call("GET", "/api/v1/config/ap1?after=1", token=None, cert=ap.context)
    assert (status, envelope["version"], envelope["revoked"]) == (200, 2, [serial])
    assert verify(ap.public_key, envelope).revoked == {ps.credentials.info.serial}
    status, refused = admin.call(
        "POST", "/api/v1/config/ps1/ack", {"version": 1}, None, cert=ps.context
    )
    assert status == 403
    renew, _ = register_body("x", "ps1", "policy")
    status, refused = admin.call(
        "POST", "/api/v1/certificates/renew", {"csr": renew["csr"]}, None, cert=ps.context
    )
    assert (status, refused["error"]) == (403, "forbidden")
    ps_row = {s["id"]: s for s in admin.ok("GET", "/api/v1/services")}["ps1"]
    assert ps_row["certificate"]["revoked"] is True
    audit = admin.ok("GET", "/api/v1/audit?limit=3")
    assert [e["action"] for e in audit][:2] == ["version.republish", "certificate.revoke"]
    # Revoked, ps1 may enrol again with a plain token (no --replace needed).
    again = join(admin, "ps1", "policy")
    assert admin.call("GET", "/api/v1/config/ps1", token=None, cert=again.context)[0] == 200


def test_a_service_renews_its_certificate_with_the_current_one(admin: Admin) -> None:
    ap = join(admin, "ap1")
    body, _ = register_body("x", "ap1", "access_point")
    assert (
        admin.call("POST", "/api/v1/certificates/renew", {"csr": body["csr"]}, None, cert=None)[0]
        == 403
    )
    assert (
        admin.call(
            "POST", "/api/v1/certificates/renew", {"csr": body["csr"]}, None, cert=admin.operator
        )[1]["message"]
        == "the client certificate is operator 'cli''s, not a service's"
    )
    renewed = admin.ok(
        "POST", "/api/v1/certificates/renew", {"csr": body["csr"]}, token=None, cert=ap.context
    )
    assert renewed["ca"] == admin.ca_pem
    from gatehouse.trust.ca import load_certificate
    from gatehouse.trust.identity import identity_of

    certificate = load_certificate(renewed["certificate"].encode())
    assert str(identity_of(certificate)) == "access_point 'ap1'"
    assert certificate.serial_number != ap.credentials.info.serial
    row = {s["id"]: s for s in admin.ok("GET", "/api/v1/services")}["ap1"]
    assert row["certificate"]["serial"] == f"{certificate.serial_number:x}"


def test_acks_are_recorded_in_services(admin: Admin) -> None:
    cert = join(admin, "ap1").context
    join(admin, "ps1", "policy")
    admin.publish(single_node())
    ap = {s["id"]: s for s in admin.ok("GET", "/api/v1/services")}["ap1"]
    assert (ap["running_version"], ap["healthy"], ap["last_report"]) == (None, False, None)

    assert admin.ok("POST", "/api/v1/config/ap1/ack", {"version": 1}, None, cert) == {"ok": True}
    services = {s["id"]: s for s in admin.ok("GET", "/api/v1/services")}
    ap, ps = services["ap1"], services["ps1"]
    assert (ap["running_version"], ap["last_error"], ap["healthy"]) == (1, None, True)
    assert ap["last_seen_at"].endswith("Z")
    assert ap["last_report"] == {"version": 1, "error": None, "at": ap["last_seen_at"]}
    assert (ps["running_version"], ps["last_seen_at"], ps["healthy"]) == (None, None, False)

    admin.publish(single_node("http://127.0.0.1:9001"))
    body = {"version": 2, "error": "resources[0].backends[0]: refused"}
    admin.ok("POST", "/api/v1/config/ap1/ack", body, None, cert)
    ap = {s["id"]: s for s in admin.ok("GET", "/api/v1/services")}["ap1"]
    assert (ap["running_version"], ap["last_error"], ap["healthy"]) == (1, body["error"], False)
    assert ap["last_report"]["version"] == 2

    status, answer = admin.call("POST", "/api/v1/config/ap1/ack", {"version": 3}, None, cert=cert)
    assert (status, answer["message"]) == (400, "version: there is no version 3 to run")
    assert admin.call("POST", "/api/v1/config/ap1/ack", {}, None, cert=cert)[0] == 400


# --- the long poll -------------------------------------------------------------------------


def poll(
    admin: Admin, cert: ssl.SSLContext, after: int, wait: float, out: list[tuple[float, Answer]]
) -> None:
    answer = admin.call(
        "GET", f"/api/v1/config/ap1?after={after}&wait={wait}", None, None, wait + 10, cert
    )
    out.append((time.monotonic(), answer))


def test_a_waiting_config_request_wakes_within_100ms_of_a_publish(admin: Admin) -> None:
    secret = join(admin, "ap1").context
    started = time.monotonic()
    assert admin.call("GET", "/api/v1/config/ap1?after=0&wait=0.3", token=None, cert=secret) == (
        204,
        None,
    )
    assert 0.3 <= time.monotonic() - started < 1.5

    assert admin.publish(single_node()) == 1
    for query, message in (
        ("after=-1", "after: must be a whole number from 0 to 2147483647, not '-1'"),
        ("after=1&wait=61", "wait: must be a number of seconds from 0 to 60, not '61'"),
        ("after=1&wait=soon", "wait: must be a number of seconds from 0 to 60, not 'soon'"),
    ):
        status, answer = admin.call("GET", f"/api/v1/config/ap1?{query}", token=None, cert=secret)
        assert (status, answer["message"]) == (400, message)
    status, answer = admin.call("GET", "/api/v1/config/ap1?after=5", token=None, cert=secret)
    assert (status, answer["error"]) == (409, "conflict")
    assert "runs version 5, but the newest version here is 1" in answer["message"]

    # A newer version than `after` is answered at once, however long the wait asked for.
    started = time.monotonic()
    status, envelope = admin.call(
        "GET", "/api/v1/config/ap1?after=0&wait=60", token=None, cert=secret
    )
    assert (status, envelope["version"]) == (200, 1)
    assert time.monotonic() - started < 0.5

    for round_ in range(3):
        results: list[tuple[float, Answer]] = []
        waiters = [
            threading.Thread(target=poll, args=(admin, secret, 1 + round_, 20, results))
            for _ in range(3)
        ]
        for waiter in waiters:
            waiter.start()
        time.sleep(0.3)  # parked
        assert not results
        if round_ < 2:
            admin.apply(single_node(f"http://127.0.0.1:{9001 + round_}"))
            admin.ok("POST", "/api/v1/publish", {})
        else:  # a rollback publishes too
            admin.ok("POST", "/api/v1/rollback", {"version": 1})
        published = time.monotonic()
        for waiter in waiters:
            waiter.join(5)
        assert len(results) == 3
        for answered_at, (status, envelope) in results:
            assert (status, envelope["version"]) == (200, 2 + round_)
            assert answered_at - published < 0.1, answered_at - published


def test_stopping_answers_the_parked_requests_at_once(admin: Admin) -> None:
    secret = join(admin, "ap1").context
    results: list[tuple[float, Answer]] = []
    waiter = threading.Thread(target=poll, args=(admin, secret, 0, 60, results))
    waiter.start()
    time.sleep(0.3)
    stopping = time.monotonic()
    admin.process.signal(signal.SIGTERM)
    assert admin.process.proc.wait(5) == 0
    waiter.join(5)
    assert [answer for _, answer in results] == [(204, None)]
    assert time.monotonic() - stopping < 3


# --- audit ---------------------------------------------------------------------------------


def test_every_write_is_audited_with_who_and_the_diff(admin: Admin) -> None:
    admin.publish(single_node(), "first")
    secret = join(admin, "ap1").context
    admin.ok("POST", "/api/v1/config/ap1/ack", {"version": 1}, token=None, cert=secret)
    admin.publish(single_node("http://127.0.0.1:9001"))
    admin.ok("POST", "/api/v1/rollback", {"version": 1})
    entries = admin.ok("GET", "/api/v1/audit")
    assert [(e["who"], e["action"]) for e in reversed(entries)] == [
        ("admin-token", "draft.save"),
        ("admin-token", "version.publish"),
        ("admin-token", "join_token.create"),
        ("ap1", "service.register"),
        ("ap1", "service.ack"),
        ("admin-token", "draft.save"),
        ("admin-token", "version.publish"),
        ("admin-token", "version.rollback"),
    ]
    by_action = {e["action"]: e for e in reversed(entries)}  # the newest of each
    assert by_action["service.ack"]["what"] == "ap1 runs version 1"
    assert by_action["version.publish"]["what"] == "published version 2"
    assert (
        "-  - http://127.0.0.1:9000\n+  - http://127.0.0.1:9001\n"
        in (by_action["version.publish"]["diff"])
    )
    assert "+  - http://127.0.0.1:9000\n" in by_action["version.rollback"]["diff"]
    assert by_action["draft.save"]["diff"].startswith("--- draft (before)\n+++ draft\n")
    assert [e["id"] for e in admin.ok("GET", "/api/v1/audit?limit=2")] == [
        entries[0]["id"],
        entries[1]["id"],
    ]
    older = admin.ok("GET", f"/api/v1/audit?before={entries[1]['id']}&limit=1")
    assert [e["id"] for e in older] == [entries[2]["id"]]


# --- the OpenAPI document ------------------------------------------------------------------


def served_routes() -> set[tuple[str, str]]:
    """(method, path) of every route of the app Admin serves (its own, the OAuth routes, the
    token routes, and whatever is added to :func:`create_app`)."""

    def no_service() -> Any:
        raise AssertionError("the routes are read without starting the app")

    app = create_app(no_service)
    served = {
        (method.lower(), route.path.replace("{number:int}", "{number}"))
        for route in app.routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD" and not route.path.startswith("/console")  # HTML, not the API
    }
    return served


#: The models tokens_api validates and answers with, and those the document shows for them.
TOKEN_MODELS = [
    (tokens_api.TokenIn, api_models.TokenIn),
    (tokens_api.ImportIn, api_models.TokenImportIn),
    (tokens_api.AssignIn, api_models.TokenAssignIn),
    (tokens_api.ResyncIn, api_models.TokenResyncIn),
    (tokens_api.EnrolmentIn, api_models.EnrolmentIn),
    (tokens_api.InvitationIn, api_models.InvitationIn),
    (tokens_api.TokenOut, api_models.TokenOut),
    (tokens_api.AddedOut, api_models.TokenAddedOut),
    (tokens_api.ImportedOut, api_models.TokensImportedOut),
    (tokens_api.RekeyOut, api_models.RekeyOut),
    (tokens_api.EnrolmentOut, api_models.EnrolmentOut),
    (tokens_api.InvitationOut, api_models.InvitationOut),
]


@pytest.mark.parametrize(("wire", "described"), TOKEN_MODELS, ids=lambda m: m.__name__)
def test_the_documented_token_models_are_the_ones_the_token_routes_use(
    wire: type[Any], described: type[Any]
) -> None:
    documented = dict(TOKEN_MODELS)  # a wire model inside another: its documented model

    def shape(model: type[Any]) -> dict[str, tuple[object, ...]]:
        return {
            name: (
                documented.get(f.annotation, f.annotation),
                f.is_required(),
                None if f.is_required() else f.get_default(call_default_factory=True),
                [m for m in f.metadata if not hasattr(m, "json_schema")],
            )
            for name, f in model.model_fields.items()
        }

    # The same fields, types, defaults and constraints; only the documentation differs.
    assert shape(described) == shape(wire)
    if wire.__name__.endswith("In"):  # a body: unknown fields refused in both
        assert described in api_models.REQUEST_MODELS
        assert described.model_config["extra"] == wire.model_config["extra"] == "forbid"
    else:
        assert described in api_models.ANSWER_MODELS


def test_the_openapi_document_describes_every_route_and_nothing_else(admin: Admin) -> None:
    document = admin.ok("GET", "/api/v1/openapi.json", token=None)
    assert document == openapi_document()
    described = {(m, path) for path, ops in document["paths"].items() for m in ops}
    assert described == served_routes()
    # Every family of routes is in the app (and so, above, in the document).
    for path in ("/api/v1/draft", "/api/v1/oauth/keys", "/api/v1/tokens/{serial}/{action}"):
        assert path in document["paths"], path

    schemas = document["components"]["schemas"]
    refs: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    assert refs
    assert all(r.removeprefix("#/components/schemas/") in schemas for r in refs)
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["summary"]
            assert "200" in op["responses"]
            named = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert named == {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert (method in ("put", "post")) == ("requestBody" in op), (method, path)
            if op["security"]:
                assert ("401" if op["security"] == [{"adminToken": []}] else "403") in op[
                    "responses"
                ], (method, path)
    assert set(schemas["RegisterIn"]["required"]) == {
        "token",
        "service_id",
        "role",
        "node",
        "endpoint",
        "csr",
    }
    try:
        from openapi_spec_validator import validate  # type: ignore[import-not-found]
    except ImportError:
        return
    validate(document)
