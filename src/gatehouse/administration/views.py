"""Cut the installation's configuration into what each service loads.

A view is the document the service reads today from its ``--config`` file (an
``AccessPointConfig``, ``PolicyConfig``, ``AuthenticationConfig`` or ``DistributionConfig``),
as plain JSON data.
Each view is built through the service's own model, so it is valid by construction.

An Access Point's view holds no secrets, user data or database URLs: its own settings, its
Policy services' URLs and the resources (``public`` when the effective rule is ``public``).
Rules, sessions, users and databases are the Policy and Authentication services' business.
Only a Distribution service's view holds the channels and delivery settings (credentials in
them are file names on its node); an Authentication service's view gets the Distribution
services' URLs, preferred first.

OAuth: an Authentication service's view has ``oauth`` with the clients' secret hashes and the
signing keys' public JWKS and ``current`` kid per algorithm (``oauth.keys``), never a private
key (those it fetches from Admin over mutual TLS); a Policy service's view has ``oauth``
without any secret hash (issuer, the clients' ids, names and redirect URIs, the public JWKS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatehouse.administration.errors import UnknownService
from gatehouse.administration.model import (
    AccessPointEntry,
    InstallationConfig,
    PolicyEntry,
    distribution_of,
    listen_from_endpoint,
    outbox_db_of,
)
from gatehouse.authentication.config import (
    AuthenticationConfig,
    AuthenticationSettings,
    InvitationSettings,
)
from gatehouse.config.access_point import AccessPointConfig, AccessPointSettings, Resource
from gatehouse.config.oauth import AuthenticationOAuth, SigningKeyView, policy_oauth
from gatehouse.config.policy import PolicyConfig, PolicySettings
from gatehouse.distribution.config import DistributionConfig, DistributionSettings
from gatehouse.metrics.settings import MetricsSettings

View = dict[str, Any]


def view_for(
    config: InstallationConfig, service_id: str, keys: SigningKeyView | None = None
) -> View:
    """The configuration document of one service; ``keys``: the OAuth signing keys the
    views name (:func:`gatehouse.administration.oauth_keys.key_view`; None: none yet).

    Raises:
        UnknownService: no service with that id.
    """
    service = config.service(service_id)
    if service is None:
        raise UnknownService(f"no service {service_id!r} in the configuration")
    if service.role == "access_point":
        return _access_point_view(config, service_id, _ApShared.of(config))
    if service.role == "policy":
        return _policy_view(config, service_id, keys)
    if service.role == "distribution":
        return _distribution_view(config, service_id)
    return _authentication_view(config, service_id, keys)


def all_views(config: InstallationConfig, keys: SigningKeyView | None = None) -> dict[str, View]:
    """Every service's view, keyed by service id, in the order of ``services``.

    What every Access Point's view shares (the rules' header names, the resources through
    their model) is made once: per view it cost 40 x the resources' validation at 100
    services."""
    shared: _ApShared | None = None
    views = {}
    for service in config.services:
        if service.role == "access_point":
            shared = shared or _ApShared.of(config)
            views[service.id] = _access_point_view(config, service.id, shared)
        else:
            views[service.id] = view_for(config, service.id, keys)
    return views


def _listen(config: InstallationConfig, service_id: str, listen: str) -> str:
    return listen or listen_from_endpoint(config.endpoint(service_id))


def _entry_settings(entry: AccessPointEntry | PolicyEntry, fields: set[str]) -> dict[str, Any]:
    """The entry's values of ``fields`` (those its service's own settings model has)."""
    return {name: getattr(entry, name) for name in fields}


@dataclass(frozen=True, slots=True)
class _ApShared:
    """The parts of an Access Point's view that are the same for every Access Point."""

    decision_headers: list[str]
    resources: list[Resource]

    @classmethod
    def of(cls, config: InstallationConfig) -> _ApShared:
        public = config.public_resources()
        return cls(
            sorted(config.rule_set().header_names),
            [
                Resource.model_validate(
                    res.model_dump(exclude={"identity_assertion"}) | {"public": res.id in public}
                )
                for res in config.resources
            ],
        )


def _access_point_view(config: InstallationConfig, service_id: str, shared: _ApShared) -> View:
    entry = next(e for e in config.access_points if e.id == service_id)
    own_headers = [h for h in config.identity_headers.model_dump().values() if h is not None]
    identity = list(entry.identity_headers)
    identity += [h for h in own_headers if h.lower() not in {x.lower() for x in identity}]
    settings = _entry_settings(entry, set(AccessPointSettings.model_fields))
    settings.update(
        listen=_listen(config, service_id, entry.listen),
        policy_services=[config.endpoint(ps) for ps in entry.policy_services],
        session_cookie=config.sessions.cookie_name,
        reserved_prefix=config.login.portal_prefix,
        decision_headers=list(shared.decision_headers),
        identity_headers=identity,
    )
    document = AccessPointConfig(
        access_point=AccessPointSettings.model_validate(settings),
        resources=list(shared.resources),  # valid instances: the model checks them across
    )
    return document.model_dump(mode="json")


def _policy_view(config: InstallationConfig, service_id: str, keys: SigningKeyView | None) -> View:
    entry = next(e for e in config.policy_services if e.id == service_id)
    settings = _entry_settings(entry, set(PolicySettings.model_fields))
    settings.update(
        listen=_listen(config, service_id, entry.listen),
        authentication=[config.endpoint(auth) for auth in entry.authentication],
        session_db=config.database_of(service_id),
    )
    document = PolicyConfig(
        policy=PolicySettings.model_validate(settings),
        sessions=config.sessions,
        login=config.login,
        identity_headers=config.identity_headers,
        rules=config.rules,
        global_rule=config.global_rule,
        resources=config.resource_rules_of_all(),
        identity_assertion=[res.id for res in config.resources if res.identity_assertion],
        oauth=policy_oauth(config.oauth, keys.jwks if keys else {"keys": []}),
        database=config.database,
    )
    return document.model_dump(mode="json")


def _authentication_view(
    config: InstallationConfig, service_id: str, keys: SigningKeyView | None
) -> View:
    entry = next((e for e in config.authentication_services if e.id == service_id), None)
    settings = AuthenticationSettings(
        id=service_id,
        listen=_listen(config, service_id, entry.listen if entry else ""),
        metrics=entry.metrics if entry else MetricsSettings(),
        user_db=config.database_of(service_id),
        lockout=config.authentication.lockout,
        password_hash=config.authentication.password_hash,
        oath_db=(entry.oath_db if entry else None)
        or (config.databases.oath_db if config.databases else None),
        oath_keyring=entry.oath_keyring if entry else None,
        otp=config.authentication.otp,
        codes=config.authentication.codes,
        invitations=InvitationSettings(
            base_url=config.authentication.invitations.base_url,
            portal_prefix=config.login.portal_prefix,
        ),
        distribution=[config.endpoint(d) for d in distribution_of(config, service_id)],
        oauth2_db=config.databases.oauth2_db if config.databases else None,
        oauth=AuthenticationOAuth.model_validate(
            config.oauth.model_dump() | {"keys": keys.model_dump() if keys else None}
        ),
    )
    if entry is not None and entry.verify_queue is not None:
        settings = settings.model_copy(update={"verify_queue": entry.verify_queue})
    return AuthenticationConfig(authentication=settings, database=config.database).model_dump(
        mode="json"
    )


def _distribution_view(config: InstallationConfig, service_id: str) -> View:
    entry = next((e for e in config.distribution_services if e.id == service_id), None)
    settings = DistributionSettings(
        id=service_id,
        listen=_listen(config, service_id, entry.listen if entry else ""),
        metrics=entry.metrics if entry else MetricsSettings(),
        outbox_db=outbox_db_of(config, service_id)[1],
        outbox_keyring=entry.outbox_keyring if entry else None,
        channels=config.distribution.channels,
        delivery=config.distribution.delivery,
        database=config.database,
    )
    return DistributionConfig(distribution=settings).model_dump(mode="json")
