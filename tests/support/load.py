"""Steady load for chaos tests: logged-in users requesting a protected page at a fixed total
rate, every request's outcome recorded.

Each user is one task with one keep-alive connection, like a browser tab. As browsers do, a
request on a *reused* connection that the server closed before sending a byte of an answer
is sent again once on a new connection (the server never saw it, or saw an idempotent GET);
anything else that is not the expected status is a failure: a 5xx, a 303 to the login page
(a forced re-login), a reset in the middle of an answer, a timeout.

A 303 to the portal's wait page is followed, as a browser follows it: while the session
database fails over, a Policy service that has not read a session lately cannot check it, so
it sends the browser to the wait page, which answers (a 303 back) once the database is back;
the request counts by the status of the page it finally gets, and as ``waited``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from gatehouse.cluster.drill import LOGIN, Connection, DrillError, get_request, login

__all__ = ["Outcome", "Record", "login", "login_loop", "steady_load"]


@dataclass(frozen=True, slots=True)
class Outcome:
    at: float  # monotonic seconds when the request was sent
    user: int
    status: int  # 0: no answer
    latency: float
    error: str = ""
    #: Sent to the portal's wait page during a database failover, then back.
    waited: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


@dataclass
class Record:
    outcomes: list[Outcome] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.at < end]

    def failures(self, start: float = 0.0, end: float = float("inf")) -> list[Outcome]:
        return [o for o in self.between(start, end) if not o.ok]

    def summary(self, start: float = 0.0, end: float = float("inf")) -> str:
        window = self.between(start, end)
        failed = [o for o in window if not o.ok]
        kinds: dict[str, int] = {}
        for o in failed:
            key = o.error or f"HTTP {o.status}"
            kinds[key] = kinds.get(key, 0) + 1
        waited = sum(o.waited for o in window)
        return f"{len(window)} requests, {len(failed)} failed {kinds}, {waited} via the wait page"


#: The portal's wait page (``gatehouse.policy.portal.wait_url``).
WAIT_PAGE = LOGIN.removesuffix("login") + "wait?"
#: Longer than the wait page waits for the database (``WAIT_PAGE_LIMIT``, 45 s).
WAIT_TIMEOUT = 50.0


def _wait_page(status: int, headers: dict[str, str]) -> str | None:
    """The wait page's path and query if this answer sends the browser there."""
    if status != 303:
        return None
    url = urllib.parse.urlsplit(headers.get("location", ""))
    target = f"{url.path}?{url.query}"
    return target if target.startswith(WAIT_PAGE) else None


async def _via_wait_page(
    conn: Connection, wait: str, authority: str, cookie: str, raw: bytes, timeout: float
) -> int:
    """Follow a 303 to the wait page like a browser: the wait page, its 303 back, the page
    again; the last status."""
    status, _, _ = await asyncio.wait_for(
        conn.request(get_request(wait, authority, cookie)), WAIT_TIMEOUT
    )
    if status != 303:
        return status
    status, _, _ = await asyncio.wait_for(conn.request(raw), timeout)
    return status


async def _user(
    index: int,
    host: str,
    port: int,
    path: str,
    cookie: str,
    interval: float,
    until: float,
    record: Record,
    timeout: float,
    stop: threading.Event | None = None,
) -> None:
    conn = Connection(host, port)
    authority = f"{host}:{port}"
    raw = get_request(path, authority, cookie)
    loop = asyncio.get_running_loop()
    next_at = loop.time() + interval * (index / 50.0)  # spread the first requests
    try:
        while True:
            now = loop.time()
            if now >= until or (stop is not None and stop.is_set()):
                return
            if next_at > now:
                await asyncio.sleep(next_at - now)
            next_at += interval
            sent = time.monotonic()
            status, error, waited = 0, "", False
            for attempt in (1, 2):
                reused = conn.used and conn.writer is not None
                try:
                    status, headers, _ = await asyncio.wait_for(conn.request(raw), timeout)
                    error = ""
                    wait = _wait_page(status, headers)
                    if wait is not None:
                        waited = True
                        status = await _via_wait_page(conn, wait, authority, cookie, raw, timeout)
                    break
                except (OSError, asyncio.IncompleteReadError, EOFError) as exc:
                    conn.close()
                    partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                    error = f"{type(exc).__name__}"
                    if attempt == 1 and reused and not partial:
                        continue  # a closed keep-alive connection: send again, once
                    break
                except TimeoutError:
                    conn.close()
                    error = "timeout"
                    break
            record.outcomes.append(
                Outcome(sent, index, status, time.monotonic() - sent, error, waited)
            )
    finally:
        conn.close()


async def steady_load(
    host: str,
    port: int,
    cookies: Sequence[str],
    rate: float,
    duration: float,
    record: Record,
    path: str = "/hello",
    timeout: float = 5.0,
    stop: threading.Event | None = None,
) -> None:
    """``rate`` requests/s in total from ``len(cookies)`` users for ``duration`` seconds
    (or until ``stop`` is set)."""
    interval = len(cookies) / rate
    until = asyncio.get_running_loop().time() + duration
    await asyncio.gather(
        *(
            _user(i, host, port, path, cookie, interval, until, record, timeout, stop)
            for i, cookie in enumerate(cookies)
        )
    )


async def login_loop(
    host: str,
    port: int,
    username: str,
    password: str,
    duration: float,
    record: Record,
    concurrency: int = 2,
    timeout: float = 10.0,
    stop: threading.Event | None = None,
) -> None:
    """Sign in again and again for ``duration`` seconds; a login that does not end in a
    session cookie within ``timeout`` is a failure (status 0 with the error)."""
    until = asyncio.get_running_loop().time() + duration

    async def one(worker: int) -> None:
        while asyncio.get_running_loop().time() < until and not (stop and stop.is_set()):
            sent = time.monotonic()
            try:
                await asyncio.wait_for(login(host, port, username, password), timeout)
            except (DrillError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
                record.outcomes.append(Outcome(sent, worker, 0, time.monotonic() - sent, error))
            else:
                record.outcomes.append(Outcome(sent, worker, 200, time.monotonic() - sent))

    await asyncio.gather(*(one(i) for i in range(concurrency)))
