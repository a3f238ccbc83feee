"""Alembic environment: runs on the connection handed over by ``gatehouse.storage.migrate``.

Run from the ``alembic`` command line (e.g. to write a new revision) it connects on its own
with ``sqlalchemy.url`` from the Alembic config.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from gatehouse.distribution.models import OutboxBase
from gatehouse.oath.models import OathBase
from gatehouse.oauth2.models import OAuth2Base
from gatehouse.storage.engine import create_engine
from gatehouse.storage.models import SessionBase, UserBase

config = context.config
target_metadata = [
    UserBase.metadata,
    SessionBase.metadata,
    OathBase.metadata,
    OutboxBase.metadata,
    OAuth2Base.metadata,
]


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_standalone() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_on)
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


shared = config.attributes.get("connection")
if shared is not None:
    run_on(shared)
elif context.is_offline_mode():
    run_offline()
else:
    asyncio.run(run_standalone())
