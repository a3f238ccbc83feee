"""The OpenID Provider's signing keys and clients in the Administration service: what the
views carry (public keys and the current kid for Authentication, no secret hash for Policy,
no private key anywhere), the private keys sealed in the database, the rotation timeline
under a fake clock, and the clients' add/remove/rotate-secret publishing versions."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse.administration.document import parse_config
from gatehouse.administration.oauth_admin import (
    ClientExists,
    UnknownClient,
    add_client,
    new_client,
    remove_client,
    replace_section,
    rotate_secret,
)
from gatehouse.administration.oauth_keys import KeyRecord, Timeline, due, key_view, published
from gatehouse.administration.service import AdministrationService, migrate
from gatehouse.administration.signing import generate_private_key
from gatehouse.administration.store import AdminStore
from gatehouse.config.oauth import OAuthSettings, SigningSettings
from gatehouse.oath.seeds import Keyring
from gatehouse.oauth2.clients import check_secret
from gatehouse.storage.engine import Database
from gatehouse.trust.ca import CertificateAuthority
from tests.administration.samples import minimal

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


Admin = tuple[AdministrationService, Clock, Path]


def run(tmp_path: Path, body: Callable[[Admin], Awaitable[None]]) -> None:
    async def go() -> None:
        async with admin(tmp_path) as made:
            await body(made)

    asyncio.run(go())


@asynccontextmanager
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    path = tmp_path / "admin.db"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate(url)
    clock = Clock()
    keyring = Keyring.load_or_create(tmp_path / "oauth-keys.key")
    store = AdminStore(Database(url), clock)
    service = AdministrationService(
        store,
        generate_private_key(),
        "t" * 32,
        None,
        CertificateAuthority.create(),
        clock=clock,
        oauth_keyring=keyring,
    )
    try:
        yield service, clock, path
    finally:
        await store.close()


def config_text(**oauth: Any) -> str:
    document = minimal()
    if oauth:
        document["oauth"] = oauth
    return "# the installation\n" + yaml.safe_dump(document, sort_keys=False)


async def publish(service: AdministrationService, text: str) -> int:
    await service.save_draft(text)
    return await service.publish("test")


def views(service: AdministrationService) -> dict[str, dict[str, Any]]:
    assert service.latest is not None
    return {sid: env["view"] for sid, env in service.latest.envelopes.items()}


PRIVATE = ("d", "p", "q", "dp", "dq", "qi")


def private_members(node: object) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("kty") in ("EC", "RSA"):
            found += [k for k in PRIVATE if k in node]
        for value in node.values():
            found += private_members(value)
    elif isinstance(node, list):
        for value in node:
            found += private_members(value)
    return found


def test_views_carry_public_keys_and_no_secret_for_policy(tmp_path: Path) -> None:
    run(tmp_path, _test_views_carry_public_keys_and_no_secret_for_policy)


async def _test_views_carry_public_keys_and_no_secret_for_policy(
    admin: Admin,
) -> None:
    service, _, db_file = admin
    assert service.oauth_keys is not None
    await service.oauth_keys.step()  # what the app does before it answers
    await publish(service, config_text())
    client, secret = new_client(
        {"client_id": "app1", "name": "App One", "redirect_uris": ["https://app1.example/cb"]}
    )
    change = await add_client(service, client, secret)
    assert change.version == 2
    assert secret is not None

    every = views(service)
    auth = every["auth1"]["authentication"]["oauth"]
    keys = auth["keys"]
    assert set(keys["current"]) == {"ES256", "RS256"}
    kids = {k["kid"] for k in keys["jwks"]["keys"]}
    assert set(keys["current"].values()) == kids
    assert auth["clients"][0]["secret_hash"] == client.secret_hash
    assert check_secret(secret, auth["clients"][0]["secret_hash"])

    policy = every["ps1"]["oauth"]
    assert policy["clients"] == [
        {
            "client_id": "app1",
            "name": "App One",
            "public": False,
            "redirect_uris": ["https://app1.example/cb"],
            "post_logout_redirect_uris": [],
        }
    ]
    assert {k["kid"] for k in policy["jwks"]["keys"]} == kids
    text = json.dumps(every)
    for sid in ("ps1", "ap1"):
        assert "secret_hash" not in json.dumps(every[sid])
        assert "sha256:" not in json.dumps(every[sid])
    assert "jwks" not in json.dumps(every["ap1"])
    assert secret not in text
    assert private_members(every) == []

    # The private keys are only sealed in the Admin DB: not one private parameter in clear.
    private = await service.oauth_keys.private_keys([])
    assert {k["kid"] for k in private} == kids
    files = [db_file, db_file.with_name(db_file.name + "-wal")]
    raw = b"".join(f.read_bytes() for f in files if f.exists())
    for jwk in private:
        for member in ("d", "p", "q"):
            if member in jwk:
                value = jwk[member]
                assert value.encode() not in raw, member
                assert base64.urlsafe_b64decode(value + "==") not in raw, member
        assert jwk["kid"].encode() in raw  # the row is there, with its public half
    assert secret.encode() not in raw


def test_rotation_publishes_before_signing_and_keeps_after(tmp_path: Path) -> None:
    run(tmp_path, _test_rotation_publishes_before_signing_and_keeps_after)


async def _test_rotation_publishes_before_signing_and_keeps_after(
    admin: Admin,
) -> None:
    service, clock, _ = admin
    keeper = service.oauth_keys
    assert keeper is not None
    signing = {"algorithms": ["ES256"], "rotate_every": "240h", "publish_before": "24h"}
    oauth = {"signing": {**signing, "keep_after": "2h"}, "access_token_lifetime": "1h"}
    await keeper.step()
    await publish(service, config_text(**oauth))
    first = views(service)["auth1"]["authentication"]["oauth"]["keys"]
    (k1,) = first["current"].values()
    assert [k["kid"] for k in first["jwks"]["keys"]] == [k1]

    # Before the rotation is due nothing changes.
    clock.now = T0 + 9 * DAY - timedelta(seconds=1)
    assert await keeper.step() is None
    # Due (rotate_every - publish_before): a new key is published, the old one still signs.
    clock.now = T0 + 9 * DAY
    number = await keeper.step()
    assert number == 2
    second = views(service)["auth1"]["authentication"]["oauth"]["keys"]
    assert second["current"] == {"ES256": k1}
    (k2,) = {k["kid"] for k in second["jwks"]["keys"]} - {k1}
    assert views(service)["ps1"]["oauth"]["jwks"] == second["jwks"]
    assert await keeper.step() is None  # the same view: no version
    # After publish_before the new key signs; the old one stays published.
    clock.now = T0 + 10 * DAY
    assert await keeper.step() == 3
    third = views(service)["auth1"]["authentication"]["oauth"]["keys"]
    assert third["current"] == {"ES256": k2}
    assert {k["kid"] for k in third["jwks"]["keys"]} == {k1, k2}
    states = {s.kid: s.state for s in await keeper.states()}
    assert states == {k1: "retired", k2: "current"}
    # It leaves keep_after after the longest token it signed expired (1 h + 2 h).
    clock.now = T0 + 10 * DAY + timedelta(hours=3) - timedelta(seconds=1)
    assert await keeper.step() is None
    clock.now = T0 + 10 * DAY + timedelta(hours=3)
    assert await keeper.step() == 4
    fourth = views(service)["auth1"]["authentication"]["oauth"]["keys"]
    assert [k["kid"] for k in fourth["jwks"]["keys"]] == [k2]
    assert [r.kid for r in await service.store.oauth_keys()] == [k2]  # its row is gone
    assert await keeper.private_keys([k1]) == []

    # A restarted Admin (a new service on the same database) publishes nothing new.
    again = AdministrationService(
        service.store,
        service.key,
        "t" * 32,
        service.latest,
        service.ca,
        clock=clock,
        oauth_keyring=keeper.keyring,
    )
    assert again.oauth_keys is not None
    assert await again.oauth_keys.step() is None


def test_a_manual_rotation_is_published_at_once_and_signs_later(tmp_path: Path) -> None:
    run(tmp_path, _test_a_manual_rotation_is_published_at_once_and_signs_later)


async def _test_a_manual_rotation_is_published_at_once_and_signs_later(
    admin: Admin,
) -> None:
    service, clock, _ = admin
    keeper = service.oauth_keys
    assert keeper is not None
    await keeper.step()
    await publish(service, config_text())
    before = views(service)["auth1"]["authentication"]["oauth"]["keys"]["current"]
    made, number = await keeper.rotate()
    assert {r.alg for r in made} == {"ES256", "RS256"}
    assert number == 2
    after = views(service)["auth1"]["authentication"]["oauth"]["keys"]
    assert after["current"] == before
    assert {r.kid for r in made} <= {k["kid"] for k in after["jwks"]["keys"]}
    assert (await keeper.rotate())[0] == []  # one on its way already per algorithm
    clock.now = T0 + DAY
    assert await keeper.step() == 3
    now_signing = views(service)["auth1"]["authentication"]["oauth"]["keys"]["current"]
    assert set(now_signing.values()) == {r.kid for r in made}


def test_the_timeline_is_a_function_of_the_keys_and_the_clock() -> None:
    oauth = OAuthSettings(signing=SigningSettings(algorithms=["ES256"]))
    timeline = Timeline.of(oauth)
    assert due([], T0, timeline) == {"ES256": T0}  # the first key signs at once
    one = KeyRecord("k1", "ES256", {"kid": "k1", "kty": "EC"}, T0, T0)
    two = KeyRecord("k2", "ES256", {"kid": "k2", "kty": "EC"}, T0 + 29 * DAY, T0 + 30 * DAY)
    assert due([one], T0 + 29 * DAY - timedelta(seconds=1), timeline) == {}
    assert due([one], T0 + 29 * DAY, timeline) == {"ES256": T0 + 30 * DAY}
    assert due([one, two], T0 + 29 * DAY, timeline) == {}
    view = key_view([one, two], T0 + 29 * DAY, timeline)
    assert view.current == {"ES256": "k1"}
    assert len(view.jwks["keys"]) == 2  # type: ignore[arg-type]
    assert key_view([one, two], T0 + 30 * DAY, timeline).current == {"ES256": "k2"}
    gone = T0 + 30 * DAY + timedelta(seconds=600) + DAY  # longest token 10 min, keep 1 day
    assert [r.kid for r in published([one, two], gone - timedelta(seconds=1), timeline)] == [
        "k1",
        "k2",
    ]
    assert [r.kid for r in published([one, two], gone, timeline)] == ["k2"]


def test_clients_are_added_removed_and_rekeyed_as_versions(tmp_path: Path) -> None:
    run(tmp_path, _test_clients_are_added_removed_and_rekeyed_as_versions)


async def _test_clients_are_added_removed_and_rekeyed_as_versions(
    admin: Admin,
) -> None:
    service, _, _ = admin
    assert service.oauth_keys is not None
    await service.oauth_keys.step()
    await publish(service, config_text(access_token_lifetime="1h"))
    public, none = new_client(
        {"client_id": "spa", "public": True, "redirect_uris": ["http://127.0.0.1:9/cb"]}
    )
    assert none is None
    assert (await add_client(service, public, None)).version == 2
    with pytest.raises(ClientExists, match="client_id: 'spa' is registered already"):
        await add_client(service, public, None)
    confidential, secret = new_client(
        {"client_id": "app1", "redirect_uris": ["https://app1.example/cb"]}
    )
    await add_client(service, confidential, secret)
    assert service.latest is not None
    assert service.latest.source.startswith("# the installation\n")  # comments kept
    assert "access_token_lifetime: 1h\n" in service.latest.source  # as written
    assert [c.client_id for c in service.latest.config().oauth.clients] == ["spa", "app1"]

    change = await rotate_secret(service, "app1")
    assert change.secret
    assert change.secret != secret
    assert change.version == 4
    stored = service.latest.config().oauth.client("app1")
    assert stored is not None
    assert check_secret(change.secret, stored.secret_hash or "")
    assert not check_secret(secret or "", stored.secret_hash or "")
    with pytest.raises(Exception, match="public client"):
        await rotate_secret(service, "spa")

    assert (await remove_client(service, "spa")).version == 5
    with pytest.raises(UnknownClient):
        await remove_client(service, "spa")
    draft = await service.store.get_draft()
    assert draft is not None
    assert draft.source == service.latest.source  # the draft follows


def test_the_oauth_block_is_replaced_and_the_rest_kept() -> None:
    text = (
        "# head\nservices: []\noauth:\n  issuer: https://a.example\n  clients: []\n"
        "# tail\nrules: {}\n"
    )
    out = replace_section(text, "oauth", "oauth:\n  clients: [x]\n")
    assert out == "# head\nservices: []\noauth:\n  clients: [x]\n# tail\nrules: {}\n"
    assert replace_section("services: []", "oauth", "oauth: {}\n") == "services: []\noauth: {}\n"
    margin = "oauth:\n  clients:\n# app one\n  - client_id: a\n# after\nrules: {}\n"
    assert replace_section(margin, "oauth", "oauth: {}\n") == "oauth: {}\n# after\nrules: {}\n"
    parse_config(config_text())  # the samples stay valid
