"""Installation configurations for the tests: a realistic HA one and a minimal one."""

from __future__ import annotations

import copy
from typing import Any

PG = "postgresql+asyncpg://gatehouse:s3cret-pw@db1.internal:5432/gatehouse"
SESSION_PG = "postgresql+asyncpg://gatehouse:other-pw@db2.internal:5432/sessions"
OUTBOX_PG = "postgresql+asyncpg://gatehouse_dist:outbox-pw@db1.internal:5432/gatehouse_outbox"

#: User names that appear in rules; they must never reach an Access Point.
RULE_USERS = ("alice.ops", "bob.admin", "carol.finance")

HA: dict[str, Any] = {
    "services": [
        {"id": "ap1", "role": "access_point", "endpoint": "http://10.0.0.11:8080", "node": "dmz1"},
        {"id": "ap2", "role": "access_point", "endpoint": "http://10.0.0.12:8080", "node": "dmz2"},
        {
            "id": "ap3",
            "role": "access_point",
            "endpoint": "https://ap3.example:8443",
            "node": "dmz3",
        },
        {"id": "ps1", "role": "policy", "endpoint": "http://10.0.1.11:8101", "node": "int1"},
        {"id": "ps2", "role": "policy", "endpoint": "http://10.0.1.12:8101", "node": "int2"},
        {
            "id": "auth1",
            "role": "authentication",
            "endpoint": "http://10.0.1.11:8201",
            "node": "int1",
        },
        {
            "id": "auth2",
            "role": "authentication",
            "endpoint": "http://10.0.1.12:8201",
            "node": "int2",
        },
        {
            "id": "dist1",
            "role": "distribution",
            "endpoint": "http://10.0.1.11:8301",
            "node": "int1",
        },
        {
            "id": "dist2",
            "role": "distribution",
            "endpoint": "http://10.0.1.12:8301",
            "node": "int2",
        },
    ],
    "access_points": [
        {"id": "ap1", "policy_services": ["ps1", "ps2"], "workers": 4},
        {"id": "ap2", "policy_services": ["ps2", "ps1"], "trusted_proxies": ["10.0.0.0/24"]},
        {
            "id": "ap3",
            "policy_services": ["ps1"],
            "listen": "0.0.0.0:8443",
            "identity_headers": ["X-Remote-User"],
        },
    ],
    "policy_services": [
        {"id": "ps1", "authentication": ["auth1", "auth2"], "trusted_proxies": ["10.0.0.0/24"]},
        {
            "id": "ps2",
            "authentication": ["auth2", "auth1"],
            "session_db": SESSION_PG,
            "admin_token_file": "/etc/gatehouse/policy-admin.token",
        },
    ],
    "authentication_services": [{"id": "auth2", "listen": "0.0.0.0:8201"}],
    "distribution_services": [{"id": "dist2", "listen": "0.0.0.0:8301"}],
    "databases": {"user_db": PG, "outbox_db": OUTBOX_PG},
    "authentication": {"lockout": {"account_max_failures": 5}},
    "distribution": {
        "channels": [
            {
                "type": "smtp",
                "name": "mail",
                "host": "smtp.example",
                "port": 587,
                "security": "starttls",
                "username": "gatehouse",
                "password_file": "/etc/gatehouse/smtp-password",
                "sender": "Gatehouse <noreply@example.org>",
            },
            {
                "type": "http_sms",
                "name": "sms",
                "url": "https://sms.example/api/send",
                "body_template": '{"to": "{to}", "text": "{text}", "ref": "{id}"}',
                "auth": "bearer",
                "token_file": "sms-token",
            },
        ],
        "delivery": {"workers": 2, "lease": "20s"},
    },
    "resources": [
        {"id": "wiki", "hosts": ["wiki.example"], "backends": ["http://10.0.2.5:8000"]},
        {"id": "intranet", "path_prefix": "/", "backends": ["http://10.0.2.6:80"]},
        {"id": "status", "path_prefix": "/status", "backends": ["http://10.0.2.7:80"]},
        {"id": "finance", "path_prefix": "/finance", "backends": ["https://10.0.2.8"]},
    ],
    "sessions": {"cookie_name": "corp_session", "idle_timeout": "20m"},
    "login": {"portal_prefix": "/_sso/", "title": "Corp sign-in"},
    "identity_headers": {"user": "X-Auth-User", "groups": "X-Auth-Groups"},
    "rules": {
        "ops": {"users": list(RULE_USERS[:2])},
        "finance-team": {
            "any": [{"users": [RULE_USERS[2]]}, {"groups_any": ["finance"]}],
        },
        "internal": {"ip": ["10.0.0.0/8"]},
        "teams": {"header": {"name": "X-Team", "matches": "^blue$"}},
    },
    "global_rule": "public",
    "resource_rules": {
        "wiki": {"rule": "ops"},
        "status": "public",
        "finance": {"all": [{"rule": "finance-team"}, {"access_point": ["ap1", "ap2"]}]},
    },
}

MINIMAL: dict[str, Any] = {
    "services": [
        {"id": "ap1", "role": "access_point", "endpoint": "http://127.0.0.1:8080", "node": "n1"},
        {"id": "ps1", "role": "policy", "endpoint": "http://127.0.0.1:8101", "node": "n1"},
        {
            "id": "auth1",
            "role": "authentication",
            "endpoint": "http://127.0.0.1:8201",
            "node": "n1",
        },
    ],
    "access_points": [{"id": "ap1", "policy_services": ["ps1"]}],
    "policy_services": [{"id": "ps1", "authentication": ["auth1"]}],
    "resources": [{"id": "demo", "backends": ["http://127.0.0.1:8000"]}],
}


def ha() -> dict[str, Any]:
    return copy.deepcopy(HA)


def minimal() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL)
