"""``metrics:`` in every service's settings: where its metrics listener listens."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from gatehouse.config.base import Strict


def _listen(value: str | None) -> str | None:
    if value is not None:
        # Imported here: config.access_point imports this module's model.
        from gatehouse.config.access_point import parse_listen

        parse_listen(value)
    return value


class MetricsSettings(Strict):
    """The metrics listener: plain HTTP ``GET /metrics`` on ``listen`` (``HOST:PORT``);
    ``None`` (the default): no listener. The answer holds no secret and no personal data
    (no user names, no paths), but names the installation's services and endpoints: keep it
    on loopback or an internal network. Read at start; a change applies at the next start."""

    listen: Annotated[str | None, AfterValidator(_listen)] = None
