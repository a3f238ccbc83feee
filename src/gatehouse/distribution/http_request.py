"""One HTTP/1.1 request (RFC 9112) to an outside server, on a connection of its own
(``Connection: close``), the response parsed by llhttp (httptools): what the SMS gateway
channel needs and nothing more. The internal client (gatehouse.internal.http1) is made for
the internal mutual TLS calls and their failover; an SMS gateway is neither.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

__all__ = ["HttpFailure", "HttpResult", "request"]

#: Response bytes kept (the success pattern sees the first 64 KiB; the rest is not needed).
MAX_KEPT = 64 * 1024
#: Response bytes read at most before giving up on the rest.
MAX_READ = 1024 * 1024


class HttpFailure(Exception):
    """No usable response; ``str()`` is short and names no credential."""


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    #: The first :data:`MAX_KEPT` bytes of the body.
    body: bytes


class _Parser:
    def __init__(self) -> None:
        self.body = bytearray()
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)

    def on_body(self, data: bytes) -> None:
        room = MAX_KEPT - len(self.body)
        if room > 0:
            self.body += data[:room]

    def on_message_complete(self) -> None:
        self.complete = True


async def request(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    timeout: float,
    context: ssl.SSLContext | None,
) -> HttpResult:
    """Send one request and read its response within ``timeout`` seconds in all."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    authority = parts.netloc.rpartition("@")[2]
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    parsed = _Parser()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context if https else None
                )
            except ssl.SSLError as error:
                raise HttpFailure(f"TLS failed: {error.reason or error}") from None
            except OSError as error:
                raise HttpFailure(
                    f"cannot connect: {error.strerror or type(error).__name__}"
                ) from None
            writer.write(head + body)
            read = 0
            while not parsed.complete:
                data = await reader.read(65536)
                if not data:
                    parsed.parser.feed_data(b"")  # a body delimited by the close
                    break
                read += len(data)
                parsed.parser.feed_data(data)
                if read > MAX_READ:
                    break
    except TimeoutError:
        raise HttpFailure(f"no response within {timeout:g} s") from None
    except httptools.HttpParserError:
        raise HttpFailure("invalid HTTP response") from None
    except (OSError, ssl.SSLError) as error:
        raise HttpFailure(
            f"connection failed: {getattr(error, 'strerror', None) or error}"
        ) from None
    finally:
        if writer is not None:
            writer.close()
    try:
        status = parsed.parser.get_status_code()
    except httptools.HttpParserError:
        status = 0
    if not status:
        raise HttpFailure("no HTTP response")
    return HttpResult(int(status), bytes(parsed.body))
