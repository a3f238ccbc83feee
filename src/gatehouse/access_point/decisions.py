"""Access decisions for protected resources: asking the Policy service, caching the answers,
and dropping cached answers when a session ends.

The cache key holds every input a rule may depend on (session, resource, method, client IP,
the configured decision headers); the Policy service bounds each answer's lifetime (``ttl``)
by the session's expiry and the next time-window edge. Revocations arrive on the Policy
service's event stream; while that stream is down the cache is not used at all, because a
revocation could be missed.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from mypy_extensions import mypyc_attr

from gatehouse.access_point.headers import field_line
from gatehouse.config.failover import FailoverSettings
from gatehouse.errors import GatehouseError
from gatehouse.internal.calls import CallRefused
from gatehouse.internal.client import FailoverClient
from gatehouse.policy.calls import DECIDE, EVENTS, HEALTH, DecisionRequest
from gatehouse.trust.tls import ClientTLS

if TYPE_CHECKING:
    from gatehouse.access_point.runtime import Route

log = logging.getLogger("gatehouse.access_point")

ALLOW, DENY, AUTHENTICATE = 1, 2, 3
_KINDS = {"allow": ALLOW, "deny": DENY, "authenticate": AUTHENTICATE}
_FORBIDDEN_IN_VALUES = str.maketrans("", "", "\r\n\x00")


#: What the failover client probes on a down Policy service.
POLICY_HEALTH_PATH = HEALTH.path


class DecisionUnavailable(GatehouseError):
    """No Policy service answered usefully."""


@dataclass(frozen=True, slots=True)
class Decision:
    kind: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    ttl: float = 0.0
    location: bytes = b""
    #: ``headers`` as lines of a request head (no final line break), made once per decision
    #: rather than once per request served from the cache.
    lines: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", b"\r\n".join(map(field_line, self.headers)))


def session_hash(session_id: str) -> str:
    """The id APs and events use for a session: never the session id itself."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def parse_decision(data: object, allowed_headers: frozenset[str]) -> Decision:
    """Turn the Policy service's JSON answer into a :class:`Decision`; refuse anything odd."""
    if not isinstance(data, dict):
        raise DecisionUnavailable("decision is not an object")
    kind = _KINDS.get(str(data.get("decision")))
    if kind is None:
        raise DecisionUnavailable(f"unknown decision {data.get('decision')!r}")
    ttl = data.get("ttl", 0)
    ttl = float(ttl) if isinstance(ttl, int | float) and ttl > 0 else 0.0
    if kind == ALLOW:
        raw = data.get("headers")
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise DecisionUnavailable("headers is not an object")
        headers = tuple(
            (str(name).encode("latin-1"), str(value).translate(_FORBIDDEN_IN_VALUES).encode())
            for name, value in raw.items()
            # Only identity headers: a Policy service cannot make the AP inject anything else.
            if str(name).lower() in allowed_headers
        )
        return Decision(ALLOW, headers, ttl)
    if kind == AUTHENTICATE:
        url = str(data.get("login_url") or "")
        if not url.startswith("/") or url.startswith("//") or "\r" in url or "\n" in url:
            raise DecisionUnavailable("login_url must be a local path")
        return Decision(AUTHENTICATE, (), 0.0, url.encode())
    return Decision(DENY, (), ttl)


CacheKey = tuple[str, str, bytes, str, tuple[str, ...]]
CacheEntry = tuple[float, Decision]  # (expires, decision)

#: Generations are unique across caches, so one number names a cache and its contents.
_generations = itertools.count(1)


class DecisionCache:
    """A bounded LRU of decisions with per-entry expiry and revocation by session.

    ``generation`` changes whenever an entry may have been removed or replaced (revocation,
    expiry, eviction, clearing, the revocation stream going up or down): whoever keeps a
    cache entry aside (a connection's :class:`DecisionMemo`) may use it only while the
    generation it was read at is still current.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self._by_session: dict[str, set[CacheKey]] = {}
        self._usable = False
        self.generation = next(_generations)
        self.hits = 0
        self.misses = 0
        #: Entries dropped to stay within ``max_entries`` (read by metrics).
        self.evictions = 0

    @property
    def usable(self) -> bool:
        """False while the revocation stream is down: nothing is served from the cache then."""
        return self._usable

    @usable.setter
    def usable(self, value: bool) -> None:
        self._usable = value
        self.generation = next(_generations)

    def lookup(self, key: CacheKey, now: float) -> CacheEntry | None:
        """The live entry for ``key``: (expires, decision)."""
        if not self._usable:
            return None
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if now >= entry[0]:
            self._drop(key)
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def get(self, key: CacheKey, now: float) -> Decision | None:
        entry = self.lookup(key, now)
        return None if entry is None else entry[1]

    def put(self, key: CacheKey, decision: Decision, now: float) -> None:
        if decision.ttl <= 0 or not self._usable or self.max_entries <= 0:
            return
        if key in self._entries:
            self._entries.move_to_end(key)
            self.generation = next(_generations)
        self._entries[key] = (now + decision.ttl, decision)
        self._by_session.setdefault(key[0], set()).add(key)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1

    def revoke(self, session: str) -> None:
        self.generation = next(_generations)
        for key in self._by_session.pop(session, ()):
            self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation = next(_generations)
        self._entries.clear()
        self._by_session.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: CacheKey) -> None:
        self.generation = next(_generations)
        self._entries.pop(key, None)
        keys = self._by_session.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_session[key[0]]


class DecisionMemo:
    """A connection's last cache hit, so that the next request sending the same Cookie, method
    and resource skips cookie parsing, hashing and the cache lookup (a keep-alive connection
    sends the same ones again and again).

    Valid only while the cache's generation is unchanged (no revocation, expiry, eviction or
    stream interruption since) and the entry has not expired; kept only for requests whose
    cache key depends on nothing else (an untrusted peer, whose client IP is the connection's,
    and no decision headers configured).
    """

    def __init__(
        self,
        generation: int,
        route: Route,
        cookie: bytes | None,
        method: bytes,
        entry: CacheEntry,
    ) -> None:
        self.generation = generation
        #: The route (so the resource and the configuration version) it was made for.
        self.route = route
        self.cookie = cookie
        self.method = method
        self.expires, self.decision = entry


# Tests stand in for the Policy service by overriding decide() in a subclass.
@mypyc_attr(allow_interpreted_subclasses=True)
class Decider:
    """Asks the Policy services (ordered, with failover) and follows their event stream."""

    def __init__(
        self,
        endpoints: Sequence[str],
        access_point: str,
        identity_headers: Sequence[str],
        timeout: float,
        cache_entries: int,
        failover: FailoverSettings | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        settings = (failover or FailoverSettings()).model_copy(update={"timeout": timeout})
        self.client = FailoverClient.from_settings(
            list(endpoints), settings, name="policy", health_path=POLICY_HEALTH_PATH, tls=tls
        )
        self.access_point = access_point
        self.allowed_headers = frozenset(h.lower() for h in identity_headers)
        self.cache = DecisionCache(cache_entries)
        self._events: asyncio.Task[None] | None = None
        #: What it was built from; the worker reuses it across reloads while this is equal.
        self.key: object = None
        #: Times the event stream broke (read by metrics).
        self.reconnects = 0

    def start(self) -> None:
        if self._events is None:
            self._events = asyncio.get_running_loop().create_task(self._follow_events())
            # Down Policy services are probed; decisions fail back after `rise` passes.
            self.client.start_probing()

    async def aclose(self) -> None:
        if self._events is not None:
            self._events.cancel()
            try:
                await self._events
            except (asyncio.CancelledError, Exception):
                pass
            self._events = None
        await self.client.aclose()

    async def decide(self, request: DecisionRequest) -> Decision:
        """Ask for the decision on ``request`` (``DECIDE``; its ``ap`` is this AP's id)."""
        try:
            data = await DECIDE.invoke(self.client, request)
        except GatehouseError as exc:
            raise DecisionUnavailable(str(exc)) from exc
        except CallRefused as exc:
            raise DecisionUnavailable(f"policy service answered {exc.status}: {exc}") from None
        except ValueError:
            raise DecisionUnavailable("policy service sent invalid JSON") from None
        return parse_decision(data, self.allowed_headers)

    async def _follow_events(self) -> None:
        """Keep the revocation stream open; the cache is usable only while it is."""
        delay = 0.2
        while True:
            try:
                async for line in EVENTS.stream_lines(self.client):
                    event = orjson.loads(line) if line.strip() else {}
                    kind = event.get("type") if isinstance(event, dict) else None
                    if kind == "hello":
                        # Events may have been missed while disconnected.
                        self.cache.clear()
                        self.cache.usable = True
                        delay = 0.2
                    elif kind == "revoke":
                        self.cache.revoke(str(event.get("session", "")))
                    elif kind == "policy":
                        # The Policy service runs a new configuration: other rules.
                        self.cache.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the stream broke: stop trusting the cache
                self.reconnects += 1
                log.info("policy event stream interrupted: %s", exc)
            self.cache.usable = False
            self.cache.clear()
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
