"""``gatehouse outbox list|show ID|retry ID``: the outbox of the installation in ``--home``
(``HOME/outbox.db`` or databases.yaml's ``outbox_db``), read directly, never a message's text.

``retry`` makes a message that is still to be delivered (accepted, or failed and waiting for
its next round) due now, its backoff reset. A sent message is not sent again, and an expired
one cannot be: its expiry is the caller's (a code is useless after it) and its body was
erased when it expired; the caller sends a new message instead.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from gatehouse.cli_support import add_home
from gatehouse.errors import GatehouseError

if TYPE_CHECKING:  # the commands import the database stack only when they run
    from gatehouse.distribution.outbox import MessageRow, Outbox

T = TypeVar("T")
STATUSES = ("accepted", "sent", "failed", "expired")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    outbox = sub.add_parser("outbox", help="the Distribution service's outbox (never the text)")
    actions = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list messages, newest first")
    listing.add_argument("--status", choices=STATUSES, help="only messages with this status")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="default: 50")
    add_home(listing)
    listing.set_defaults(handler=run_list)
    show = actions.add_parser("show", help="one message's delivery status")
    show.add_argument("id", metavar="ID")
    add_home(show)
    show.set_defaults(handler=run_show)
    retry = actions.add_parser(
        "retry", help="deliver a pending message now (before its expiry only)"
    )
    retry.add_argument("id", metavar="ID")
    add_home(retry)
    retry.set_defaults(handler=run_retry)


def _with_outbox(home: Path, work: Callable[[Outbox], Awaitable[T]]) -> T:
    from gatehouse.distribution.outbox import Outbox
    from gatehouse.storage.engine import create_engine
    from gatehouse.storage.home import database_urls, prepare_home
    from gatehouse.storage.migrate import upgrade

    async def go() -> T:
        url = database_urls(prepare_home(home)).outbox_db
        await upgrade(url, "outbox")
        engine = create_engine(url)
        try:
            return await work(Outbox(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    from gatehouse.authentication.users_commands import table

    return table(headers, rows)


def run_list(args: argparse.Namespace) -> int:
    from gatehouse.distribution.calls import recipient_hint

    if not 1 <= args.limit <= 10_000:
        raise GatehouseError("--limit: 1-10000")

    async def work(outbox: Outbox) -> list[list[str]]:
        rows = await outbox.list_messages(status=args.status, limit=args.limit)
        return [
            [
                row.id,
                row.status + (f" via {row.sent_channel}" if row.sent_channel else ""),
                row.purpose,
                row.username or "-",
                recipient_hint(row.email, row.phone),
                str(row.attempts),
                _when(row.created_at),
                _when(row.expires_at),
            ]
            for row in rows
        ]

    rows = _with_outbox(args.home, work)
    headers = ["ID", "STATUS", "PURPOSE", "USER", "TO", "ATTEMPTS", "ACCEPTED", "EXPIRES"]
    print(_table(headers, rows), end="")
    return 0


def _show_lines(row: MessageRow) -> str:
    from gatehouse.distribution.calls import recipient_hint

    lines = [
        ("id", row.id),
        ("status", row.status),
        ("channel", row.sent_channel or "-"),
        ("purpose", row.purpose),
        ("user", row.username or "-"),
        ("to", recipient_hint(row.email, row.phone)),
        ("channels", ", ".join(row.channels) if row.channels else "configured order"),
        ("attempts", str(row.attempts)),
        ("accepted", _when(row.created_at)),
        ("sent", _when(row.sent_at)),
        (
            "next attempt",
            _when(row.next_attempt_at) if row.status in ("accepted", "failed") else "-",
        ),
        ("expires", _when(row.expires_at)),
        (
            "leased by",
            f"{row.lease_owner} until {_when(row.lease_until)}" if row.lease_owner else "-",
        ),
        ("last error", row.last_error or "-"),
        ("body", "erased" if row.body_ciphertext is None else "encrypted"),
    ]
    return "".join(f"{name + ':':<14}{value}\n" for name, value in lines)


def run_show(args: argparse.Namespace) -> int:
    async def work(outbox: Outbox) -> MessageRow | None:
        return await outbox.get(args.id)

    row = _with_outbox(args.home, work)
    if row is None:
        raise GatehouseError(f"no message {args.id!r} in the outbox")
    print(_show_lines(row), end="")
    return 0


def run_retry(args: argparse.Namespace) -> int:
    from gatehouse.storage.types import utcnow

    async def work(outbox: Outbox) -> tuple[MessageRow | None, MessageRow | None]:
        return await outbox.retry(args.id, utcnow()), await outbox.get(args.id)

    retried, row = _with_outbox(args.home, work)
    if retried is not None:
        print(f"message {args.id} is due now; a Distribution service delivers it shortly")
        return 0
    if row is None:
        raise GatehouseError(f"no message {args.id!r} in the outbox")
    status = row.status
    if status == "sent":
        raise GatehouseError(f"message {args.id} was sent already; it is not sent again")
    raise GatehouseError(
        f"message {args.id} has expired (status {status}): it is never sent after its expiry "
        "and its text was erased; have the caller send a new one"
    )
