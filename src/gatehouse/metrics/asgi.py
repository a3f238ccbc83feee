"""Request counts and durations of a Starlette service, by route template."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gatehouse.metrics.names import method_label
from gatehouse.metrics.service import HTTP_DURATION, HTTP_REQUESTS

#: The route label of a request no route matched.
UNMATCHED = "unmatched"


class RequestMetrics:
    """ASGI middleware: ``gatehouse_http_requests_total`` and
    ``gatehouse_http_request_duration_seconds``. The route label is the matched route's
    template (``/api/v1/config/{service_id}/ack``), never the request's path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            HTTP_REQUESTS.labels(template, method_label(scope["method"]), str(status)).inc()
            HTTP_DURATION.labels(template).observe(time.perf_counter() - started)
