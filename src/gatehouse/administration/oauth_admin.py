"""What the Administration service does for the OpenID Provider: the clients in the published
configuration, and the signing keys (made, rotated, handed to Authentication services only).

Clients live in ``oauth.clients`` of the configuration. Adding, removing or re-keying one
edits the newest published text (only its top-level ``oauth:`` block is rewritten, the rest
keeps its comments) and publishes it as the next version; a draft with pending edits gets the
same change, so publishing it later does not undo it. A confidential client's secret is made
here (:func:`gatehouse.oauth2.clients.new_secret`), answered once, and only its hash is kept.

Signing keys: :class:`SigningKeyKeeper` makes the keys that are due, forgets those no view
names any more, and republishes when the key set the views name changed
(:mod:`.oauth_keys`). It runs once before the API answers and then at every change.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gatehouse.administration.admins import actor_name
from gatehouse.administration.errors import AdminError, VersionNotFound
from gatehouse.administration.oauth_keys import (
    KeyRecord,
    Timeline,
    current,
    drop_at,
    dropped,
    due,
    key_view,
    make_key,
    next_change,
    open_key,
    published,
)
from gatehouse.administration.views import all_views
from gatehouse.config.oauth import ClientSettings, OAuthSettings
from gatehouse.internal.errors import Code
from gatehouse.oath.errors import KeyringError
from gatehouse.oath.seeds import Keyring
from gatehouse.oauth2.clients import new_secret
from gatehouse.storage.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from gatehouse.administration.service import AdministrationService

log = logging.getLogger("gatehouse.administration.oauth")

#: The longest the keeper sleeps between checks (a clock jump is noticed within this).
CHECK_INTERVAL = 60.0


class ClientExists(AdminError):
    code = Code.CONFLICT
    status = 409


class UnknownClient(AdminError):
    code = Code.NOT_FOUND
    status = 404


class NotConfidential(AdminError):
    code = Code.BAD_REQUEST
    status = 400


class CannotEdit(AdminError):
    code = Code.CONFLICT
    status = 409


class KeysUnreadable(AdminError):
    """The sealed keys do not open under the key file (a database restored without it)."""

    code = Code.UNAVAILABLE
    status = 503


# --- editing the oauth block of a configuration text -----------------------------------------

_TOP_KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*:")


def replace_section(text: str, name: str, rendered: str) -> str:
    """``text`` with its top-level ``name:`` block replaced by ``rendered`` (YAML text of
    ``{name: ...}``), or ``rendered`` appended when there is none. Other lines stay as they
    are; comment lines right after the block stay with what follows."""
    lines = text.splitlines(keepends=True)
    start = next(
        (i for i, line in enumerate(lines) if (m := _TOP_KEY.match(line)) and m["key"] == name),
        None,
    )
    if not rendered.endswith("\n"):
        rendered += "\n"
    if start is None:
        body = text if not text or text.endswith("\n") else text + "\n"
        return body + rendered
    end = start + 1
    while end < len(lines):
        line = lines[end]
        if line.startswith("#"):
            # A comment at the margin belongs to the block only if the block goes on after it.
            following = next(
                (x for x in lines[end + 1 :] if x.strip() and not x.startswith("#")), ""
            )
            if not following[:1].isspace():
                break
        elif line.strip() and not line[0].isspace():
            break
        end += 1
    return "".join(lines[:start]) + rendered + "".join(lines[end:])


def oauth_document(content: dict[str, Any], clients: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``oauth`` mapping as written in ``content``, with ``clients`` instead."""
    written = dict(content.get("oauth") or {})
    written["clients"] = clients
    return written


def client_document(client: ClientSettings) -> dict[str, Any]:
    """A client as it is written in the configuration (defaults left out, id first)."""
    data = client.model_dump(mode="json", exclude_defaults=True)
    data.pop("client_id", None)
    return {"client_id": client.client_id, **data}


# --- the clients ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientChange:
    """A published change of ``oauth.clients``: the version, and a new secret (shown once)."""

    version: int
    client: ClientSettings | None
    secret: str | None = None


async def list_clients(service: AdministrationService) -> list[ClientSettings]:
    latest = service.latest
    return [] if latest is None else list(latest.config().oauth.clients)


def new_client(data: dict[str, Any]) -> tuple[ClientSettings, str | None]:
    """A client from the API's fields; a confidential one gets a new secret (and its hash).

    Raises:
        pydantic.ValidationError: a field is not valid (its name in the error).
    """
    public = bool(data.get("public", False))
    data = dict(data)
    secret = None
    if public:
        data.setdefault("token_endpoint_auth_method", "none")
    else:
        secret, data["secret_hash"] = new_secret()
    return ClientSettings.model_validate(data), secret


async def add_client(
    service: AdministrationService, client: ClientSettings, secret: str | None
) -> ClientChange:
    def change(clients: list[dict[str, Any]], oauth: OAuthSettings) -> str:
        if oauth.client(client.client_id) is not None:
            raise ClientExists(f"client_id: {client.client_id!r} is registered already")
        clients.append(client_document(client))
        return f"OAuth client {client.client_id!r} added"

    version = await _edit_clients(service, change)
    return ClientChange(version, client, secret)


async def remove_client(service: AdministrationService, client_id: str) -> ClientChange:
    def change(clients: list[dict[str, Any]], oauth: OAuthSettings) -> str:
        _require(oauth, client_id)
        clients[:] = [c for c in clients if c.get("client_id") != client_id]
        return f"OAuth client {client_id!r} removed"

    return ClientChange(await _edit_clients(service, change), None)


async def rotate_secret(service: AdministrationService, client_id: str) -> ClientChange:
    secret, secret_hash = new_secret()

    def change(clients: list[dict[str, Any]], oauth: OAuthSettings) -> str:
        if _require(oauth, client_id).public:
            raise NotConfidential(f"{client_id!r} is a public client: it has no secret")
        for entry in clients:
            if entry.get("client_id") == client_id:
                entry["secret_hash"] = secret_hash
        return f"OAuth client {client_id!r}: new secret"

    version = await _edit_clients(service, change)
    client = await list_clients(service)
    found = next((c for c in client if c.client_id == client_id), None)
    return ClientChange(version, found, secret)


def _require(oauth: OAuthSettings, client_id: str) -> ClientSettings:
    client = oauth.client(client_id)
    if client is None:
        raise UnknownClient(f"no OAuth client {client_id!r}")
    return client


Change = Callable[[list[dict[str, Any]], OAuthSettings], str]


async def _edit_clients(service: AdministrationService, change: Change) -> int:
    """Apply ``change`` to the newest version's clients and publish; the same to a draft
    with pending edits. Returns the new version's number."""
    from gatehouse.administration.document import parse_config, parse_text, render_yaml

    latest = service.latest
    if latest is None:
        raise VersionNotFound("nothing is published yet: publish a configuration first")
    config = latest.config()
    # The section as written (durations as the operator wrote them, "1h" not 3600.0).
    raw = parse_text(latest.source, f"version {latest.number}")
    written = raw if isinstance(raw, dict) else latest.content
    if not isinstance(written.get("oauth") or {}, dict):
        written = latest.content
    clients = [dict(c) for c in (written.get("oauth") or {}).get("clients") or []]
    comment = change(clients, config.oauth)
    rendered = render_yaml({"oauth": oauth_document(written, clients)})
    text = replace_section(latest.source, "oauth", rendered)
    parse_config(text, "the changed configuration")  # ConfigError: 422 with the field paths
    changed = parse_text(text, "the changed configuration")
    meant = {"oauth": oauth_document(written, clients)}
    if not isinstance(changed, dict) or changed.get("oauth") != meant["oauth"]:
        raise CannotEdit(
            "cannot rewrite the oauth section of the newest version's text (its layout is "
            "unusual): change it with 'gatehouse config export', edit, 'config apply'"
        )
    draft = await service.store.get_draft()
    number = await service.publish_text(text, comment)
    if draft is not None and draft.source != latest.source:
        pending = replace_section(draft.source, "oauth", rendered)
        await service.store.save_draft(pending, actor_name(), draft.allow_removal)
    else:
        await service.store.save_draft(text, actor_name())
    return number


# --- the signing keys ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyState:
    """A key as ``gatehouse oauth keys list`` shows it."""

    kid: str
    alg: str
    state: str  # upcoming | current | retired
    created_at: datetime
    signs_from: datetime
    drop_at: datetime | None


def key_states(records: list[KeyRecord], now: datetime, timeline: Timeline) -> list[KeyState]:
    states = []
    shown = published(records, now, timeline)
    for record in shown:
        signing = current(shown, record.alg, now)
        if record.signs_from > now:
            state = "upcoming"
        elif signing is not None and signing.kid == record.kid:
            state = "current"
        else:
            state = "retired"
        gone = drop_at(record, records, timeline)
        states.append(
            KeyState(record.kid, record.alg, state, record.created_at, record.signs_from, gone)
        )
    return states


class SigningKeyKeeper:
    """Makes, drops and publishes the signing keys of one Administration service."""

    def __init__(self, service: AdministrationService, keyring: Keyring) -> None:
        self.service = service
        self.keyring = keyring
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def _oauth(self) -> OAuthSettings:
        latest = self.service.latest
        return OAuthSettings() if latest is None else latest.config().oauth

    def timeline(self) -> Timeline:
        return Timeline.of(self._oauth())

    def wake(self) -> None:
        self._wake.set()

    async def _make(
        self, algs: dict[str, datetime], now: datetime, what: str, audit: bool = False
    ) -> list[KeyRecord]:
        sealed = [
            await asyncio.to_thread(make_key, alg, self.keyring, now, signs_from)
            for alg, signs_from in algs.items()
        ]
        if sealed:
            kids = ", ".join(f"{s.record.alg} {s.record.kid}" for s in sealed)
            await self.service.store.add_oauth_keys(
                sealed, actor_name(), f"{what}: {kids}" if audit else None
            )
            log.info("%s: %s", what, kids)
        return [s.record for s in sealed]

    async def step(self) -> int | None:
        """Make the keys that are due, drop the ones gone, and publish a new version when
        the key set the views name changed. Returns that version's number, if any."""
        async with self._lock:
            now = self.service.clock()
            timeline = self.timeline()
            records = await self.service.store.oauth_keys()
            made = await self._make(due(records, now, timeline), now, "made OAuth signing keys")
            records += made
            gone = dropped(records, now, timeline)
            await self.service.store.delete_oauth_keys(gone)
            if gone:
                log.info("dropped OAuth signing keys no longer published: %s", ", ".join(gone))
            records = [r for r in records if r.kid not in gone]
            latest = self.service.latest
            if latest is None:
                return None
            view = key_view(records, now, timeline) if records else None
            if latest.keys_of_views == (view,):
                # This process cut its views with this very key set (the keeper wakes after
                # every publish: cutting them all again cost 20 ms at 100 services).
                return None
            # Publish when a service's view would change: the key set it names (also after
            # an upgrade that changed what views hold).
            views = all_views(latest.config(), view)
            if views == {sid: env.get("view") for sid, env in latest.envelopes.items()}:
                return None
            reason = "OAuth signing keys changed"
            if made:
                reason = "new OAuth signing keys: " + ", ".join(r.kid for r in made)
            return await self.service.republish(reason)

    async def rotate(self) -> tuple[list[KeyRecord], int | None]:
        """A new key per algorithm, signing after ``publish_before`` (unless one is on its
        way already); published at once."""
        async with self._lock:
            now = self.service.clock()
            timeline = self.timeline()
            records = await self.service.store.oauth_keys()
            upcoming = {r.alg for r in records if r.signs_from > now}
            algs = {
                alg: now + timeline.publish_before
                for alg in timeline.algorithms
                if alg not in upcoming
            }
            made = await self._make(algs, now, "rotated OAuth signing keys", audit=True)
        number = await self.step()
        return made, number

    async def states(self) -> list[KeyState]:
        records = await self.service.store.oauth_keys()
        return key_states(records, self.service.clock(), self.timeline())

    async def private_keys(self, kids: Collection[str]) -> list[dict[str, Any]]:
        """The private JWKs of ``kids`` still kept (empty ``kids``: the current and upcoming
        keys), for an Authentication service."""
        if not kids:
            now = self.service.clock()
            timeline = self.timeline()
            records = published(await self.service.store.oauth_keys(), now, timeline)
            kids = [
                r.kid for r in records if r.signs_from > now or current(records, r.alg, now) == r
            ]
        sealed = await self.service.store.sealed_oauth_keys(kids)
        try:
            return [open_key(kid, self.keyring, *sealed[kid]) for kid in sorted(sealed)]
        except KeyringError as exc:
            raise KeysUnreadable(
                f"the OAuth signing keys do not open under {self.keyring.path}: {exc} (restore "
                "the key file that sealed them, or 'gatehouse oauth keys rotate')"
            ) from None

    async def run(self) -> None:
        """Step at every change of the key set, at least every CHECK_INTERVAL."""
        while True:
            delay = CHECK_INTERVAL
            try:
                await self.step()
                records = await self.service.store.oauth_keys()
                now = self.service.clock()
                moment = next_change(records, now, self.timeline())
                if moment is not None:
                    delay = min(delay, max(0.05, (moment - now).total_seconds()))
            except DatabaseUnavailable as exc:
                log.warning("OAuth signing keys: %s", exc)
            except Exception:
                log.exception("OAuth signing keys: the check failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass


__all__ = [
    "CHECK_INTERVAL",
    "ClientChange",
    "ClientExists",
    "KeyState",
    "NotConfidential",
    "SigningKeyKeeper",
    "UnknownClient",
    "add_client",
    "client_document",
    "key_states",
    "list_clients",
    "new_client",
    "remove_client",
    "replace_section",
    "rotate_secret",
]
