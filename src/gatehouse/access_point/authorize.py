"""The access-decision step of a request to a protected resource (mixed into
:class:`~gatehouse.access_point.exchange.ProxyExchange`).

A cached decision is applied at once; otherwise the Policy services are asked (through the
failover client) while the request body, if any, waits in the exchange's buffer.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from time import perf_counter
from typing import TYPE_CHECKING

from gatehouse.access_point import pages
from gatehouse.access_point.decisions import (
    ALLOW,
    AUTHENTICATE,
    CacheKey,
    Decider,
    Decision,
    DecisionMemo,
    DecisionUnavailable,
)
from gatehouse.access_point.headers import client_address, session_cookie
from gatehouse.cookies import TWO_SESSION_COOKIES, TwoSessionCookies
from gatehouse.metrics.access_point import COUNTERS, outcome_name
from gatehouse.policy.calls import DecisionRequest

if TYPE_CHECKING:
    from gatehouse.access_point.connection import ClientConnection
    from gatehouse.access_point.request import RequestHead
    from gatehouse.access_point.runtime import Route, Runtime

log = logging.getLogger("gatehouse.access_point")

POLICY_DOWN = "The policy service cannot be reached right now. Please try again shortly."
FORBIDDEN = "You do not have access to this resource."


class Authorization:
    """Decides whether a request to a protected resource may proceed."""

    # The attributes this step sets; ProxyExchange sets them up and declares the rest.
    body_since: float
    close_after: bool
    connect_task: asyncio.Task[None] | None
    #: The identity header lines of an allowed request (Decision.lines).
    identity: bytes
    route: Route | None
    #: The status answered (for metrics).
    status: int

    conn: ClientConnection
    head: RequestHead
    rt: Runtime
    request_done: bool
    done: bool

    # Defined by ProxyExchange. Declared here for real, not under TYPE_CHECKING: mypyc
    # compiles this class, and a compiled subclass overrides what its base declares.
    @abstractmethod
    def _proceed(self, route: Route) -> None: ...

    @abstractmethod
    def _local(self, status: int, message: str) -> None: ...

    @abstractmethod
    def _fail(self, status: int, message: str) -> None: ...

    @abstractmethod
    def _finish_local(self) -> None: ...

    def _authorize(self, route: Route, decider: Decider) -> None:
        head = self.head
        conn = self.conn
        cache = decider.cache
        memo = conn.decision_memo
        if (
            memo is not None
            and memo.generation == cache.generation
            and memo.route is route
            and memo.cookie == head.cookie
            and memo.method == head.method
            and conn.state.now < memo.expires
        ):
            # The same request as the last one on this connection, and its cache entry is
            # still there: nothing was revoked, expired or evicted since (see DecisionMemo).
            cache.hits += 1
            self._apply(route, memo.decision)
            return
        rt = self.rt
        cookie = head.cookie
        try:
            session = session_cookie(cookie, rt.session_cookie) if cookie else None
        except TwoSessionCookies:
            # Which one would the portal's sign-out end? Refuse rather than guess.
            self._local(400, TWO_SESSION_COOKIES)
            return
        trusted = conn.trusted(rt.policy)
        client_ip = client_address(head.headers, conn.peer_ip, trusted)
        wanted = rt.decision_headers
        selected: tuple[str, ...] = ()
        if wanted:
            found = {n.lower(): v for n, v in head.headers if n.lower() in wanted}
            selected = tuple(found.get(n, b"").decode("latin-1") for n in wanted)
        key = (
            conn.session_hash(session) if session else "",
            route.resource.id,
            head.method,
            client_ip,
            selected,
        )
        generation = cache.generation
        entry = cache.lookup(key, conn.state.now)
        if entry is not None:
            if not trusted and not wanted:
                # The key depends only on the cookie, the route and the method here.
                conn.decision_memo = DecisionMemo(generation, route, cookie, head.method, entry)
            self._apply(route, entry[1])
            return
        self.route = route  # the body limit applies while the decision is pending
        if not self.request_done:
            self.body_since = conn.state.now
        request: DecisionRequest = {
            "session": session,
            "resource": route.resource.id,
            "method": head.method.decode("latin-1"),
            "path": head.path,
            "url": self._original_url(trusted),
            "client_ip": client_ip,
            "headers": dict(zip((n.decode() for n in wanted), selected, strict=True)),
            "ap": decider.access_point,
        }
        self.connect_task = conn.loop.create_task(self._ask(route, decider, key, request))

    def _original_url(self, trusted: bool) -> str:
        head = self.head
        scheme = self.conn.scheme.decode()
        if trusted:
            for name, value in head.headers:
                if name.lower() == b"x-forwarded-proto":
                    proto = value.strip(b" \t").decode("latin-1").lower()
                    if proto in ("http", "https"):
                        scheme = proto
        query = "" if head.query is None else "?" + head.query.decode("latin-1")
        return f"{scheme}://{head.authority.decode('latin-1')}{head.path}{query}"

    async def _ask(
        self, route: Route, decider: Decider, key: CacheKey, request: DecisionRequest
    ) -> None:
        started = perf_counter()
        try:
            decision = await decider.decide(request)
        except asyncio.CancelledError:
            raise
        except DecisionUnavailable as exc:
            COUNTERS.decision("error", perf_counter() - started)
            log.warning("no access decision: %s", exc)
            self.connect_task = None
            self._fail(503, POLICY_DOWN)
            self.conn.flush()
            return
        except Exception:
            COUNTERS.decision("error", perf_counter() - started)
            log.exception("asking for an access decision failed")
            self.connect_task = None
            self._fail(503, POLICY_DOWN)
            self.conn.flush()
            return
        COUNTERS.decision(outcome_name(decision.kind), perf_counter() - started)
        self.connect_task = None
        if self.done:
            return
        decider.cache.put(key, decision, self.conn.state.now)
        self._apply(route, decision)
        self.conn.flush()

    def _apply(self, route: Route, decision: Decision) -> None:
        if decision.kind == ALLOW:
            self.identity = decision.lines
            self._proceed(route)
        elif decision.kind == AUTHENTICATE:
            self.status = 303
            close = self.close_after or not self.request_done
            self.conn.out.append(
                pages.redirect(decision.location, close, self.head.method == b"HEAD")
            )
            self.close_after = close
            self._finish_local()
        else:
            self.status = 403
            close = self.close_after or not self.request_done
            page = pages.forbidden_page(FORBIDDEN, self.rt.reserved, self.head, close)
            self.conn.out.append(page)
            self.close_after = close
            self._finish_local()
