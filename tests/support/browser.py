"""Waiting for a page in Chromium (Playwright) with a failure that says what happened.

A browser test that times out waiting for a URL says, by default, only that it waited. On a
loaded CI machine that is not enough to tell a slow service from a lost request, so
:func:`wait_for_url` fails with where the page is and what it shows, the requests the page
made and what each got (:class:`Traffic`), and the last lines of the services' logs."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: How long a browser test waits for a page: a sign-in is an argon2 check, and a loaded CI
#: machine runs three test workers on two cores.
WAIT_MS = 60_000


class Traffic:
    """The requests a page sent and what each got (an answer's status or the network error),
    with the seconds since the recording began."""

    def __init__(self, page: Any) -> None:
        self._t0 = time.monotonic()
        self.events: list[str] = []
        page.on("request", lambda r: self._add(f"→ {r.method} {r.url}"))
        page.on("response", lambda r: self._add(f"← {r.status} {r.url}"))
        page.on("requestfailed", lambda r: self._add(f"✗ {r.url}: {r.failure}"))
        page.on(
            "framenavigated",
            lambda f: self._add(f"navigated: {f.url}") if f.parent_frame is None else None,
        )

    def _add(self, line: str) -> None:
        self.events.append(f"{time.monotonic() - self._t0:7.2f}s {line}")


def log_tails(logs: Sequence[Path], lines: int = 20) -> str:
    """The last ``lines`` lines of each log that exists, under its name."""
    parts = []
    for path in logs:
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
    return "\n".join(parts)


def wait_for_url(
    page: Any,
    url: str | re.Pattern[str],
    *,
    traffic: Traffic | None = None,
    logs: Sequence[Path] = (),
    timeout: float = WAIT_MS,
) -> None:
    """``page.wait_for_url(url)``; on a timeout, an AssertionError naming the page's URL, the
    text it shows, the page's last requests (``traffic``) and the last lines of ``logs``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # the fixture has it

    try:
        page.wait_for_url(url, timeout=timeout)
    except PlaywrightTimeout:
        try:
            shown = page.locator("body").inner_text(timeout=5_000)
        except PlaywrightTimeout:
            shown = "(no body within 5 s)"
        requests = "\n".join(traffic.events[-20:]) if traffic is not None else "(not recorded)"
        wanted = url if isinstance(url, str) else url.pattern
        raise AssertionError(
            f"not sent to {wanted} within {timeout / 1000:.0f} s: at {page.url}, showing "
            f"{shown[:500]!r}\nthe page's last requests:\n{requests}\n{log_tails(logs)}"
        ) from None
