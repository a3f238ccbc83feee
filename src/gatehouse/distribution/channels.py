"""The channels a message can go over, built from the configuration, and which of them one
message tries, in which order (a pure function).

A channel is tried with :meth:`Sender.send`; it returns when the message was handed over, or
raises :class:`ChannelFailure` with a short, channel-level reason (never the text, never a
credential) and the message moves on to the next channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = ["ChannelFailure", "Outgoing", "Sender", "kind_of", "plan"]

Kind = Literal["email", "sms"]


class ChannelFailure(Exception):
    """One channel could not deliver one message; ``str()`` is safe to store and log."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One delivery attempt: the message id (its idempotency key), the recipient for this
    channel's kind, and the body."""

    id: str
    to: str
    subject: str
    text: str = field(repr=False)


class Sender(Protocol):
    """A configured channel, ready to send."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> Kind: ...

    @property
    def timeout(self) -> float: ...

    async def send(self, message: Outgoing) -> None: ...

    async def aclose(self) -> None: ...


def kind_of(channel_type: str) -> Kind:
    """The recipient kind a channel type delivers to."""
    return "email" if channel_type == "smtp" else "sms"


def plan(
    senders: Sequence[Sender],
    kinds: Sequence[str] | None,
    email: str | None,
    phone: str | None,
) -> list[tuple[Sender, str]]:
    """The channels to try for one message and the recipient of each, in order.

    ``kinds``: the caller's order of kinds (channels of the first kind in their configured
    order, then the next kind's; kinds not named are not tried); None: the configured order.
    Channels of a kind whose recipient is missing are skipped.
    """
    recipients: dict[str, str | None] = {"email": email, "sms": phone}
    if kinds is None:
        ordered = list(senders)
    else:
        ordered = [s for kind in kinds for s in senders if s.kind == kind]
    return [(s, to) for s in ordered if (to := recipients.get(s.kind))]
