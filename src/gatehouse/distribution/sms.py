"""The HTTP SMS gateway channel: one request per message, made from the configured method,
URL, headers and body template; success decided by the status (and the response pattern, when
configured). Every request carries ``Idempotency-Key: ID`` (the message id) so a gateway that
knows the header, or its operator, can recognise a message delivered twice.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from gatehouse.distribution.channels import ChannelFailure, Kind, Outgoing
from gatehouse.distribution.config import HttpSmsChannel
from gatehouse.distribution.http_request import HttpFailure, request
from gatehouse.distribution.secrets import read_secret
from gatehouse.distribution.smtp import tls_context
from gatehouse.distribution.templates import render_sms_body

__all__ = ["HttpSmsSender"]


class HttpSmsSender:
    """One configured HTTP SMS gateway."""

    kind: Kind = "sms"

    def __init__(self, config: HttpSmsChannel, home: Path) -> None:
        self.config = config
        self.name = config.name
        self.timeout = config.timeout
        where = f"channels.{config.name}"
        self._authorization: str | None = None
        if config.auth == "basic":
            assert config.username is not None
            assert config.password_file is not None
            password = read_secret(config.password_file, home, f"{where}.password_file")
            pair = f"{config.username}:{password}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        elif config.auth == "bearer":
            assert config.token_file is not None
            token = read_secret(config.token_file, home, f"{where}.token_file")
            self._authorization = f"Bearer {token}"
        self.context = (
            tls_context(True, config.ca_file, home) if config.url.startswith("https:") else None
        )
        self.pattern = re.compile(config.success_pattern) if config.success_pattern else None

    def request_parts(self, message: Outgoing) -> tuple[str, dict[str, str], bytes]:
        """The URL, headers and body of the request for ``message``."""
        config = self.config
        query = config.method == "GET"
        rendered = render_sms_body(
            config.body_template,
            config.content_type,
            to=message.to,
            text=message.text,
            message_id=message.id,
            query=query,
        )
        headers = dict(config.headers)
        headers["Idempotency-Key"] = message.id
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        if query:
            separator = "&" if "?" in config.url else "?"
            return f"{config.url}{separator}{rendered}", headers, b""
        headers["Content-Type"] = config.content_type
        return config.url, headers, rendered.encode("utf-8")

    async def send(self, message: Outgoing) -> None:
        url, headers, body = self.request_parts(message)
        try:
            result = await request(
                self.config.method, url, headers, body, self.config.timeout, self.context
            )
        except HttpFailure as failure:
            raise ChannelFailure(f"{self.name}: {failure}") from None
        if result.status not in self.config.success_status:
            raise ChannelFailure(f"{self.name}: gateway answered HTTP {result.status}")
        if self.pattern is not None:
            text = result.body.decode("utf-8", "replace")
            if not self.pattern.search(text):
                raise ChannelFailure(
                    f"{self.name}: gateway answered HTTP {result.status} without the "
                    "success pattern"
                )

    async def aclose(self) -> None:
        return None
