"""A SQLite connection going back to the pool is rolled back only when it still holds a
transaction (``engine._sqlite_reset``): after a commit the pool's rollback was a wasted trip
to aiosqlite's thread, and an open transaction must never stay in the pool (it would keep
SQLite's write lock from every other process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import text

from gatehouse.storage.engine import create_engine


def test_only_an_open_transaction_is_rolled_back_on_return(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'reset.db'}"

    async def go() -> None:
        engine = create_engine(url)
        other = create_engine(url)
        rollbacks: list[int] = []
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE t (v INTEGER)"))
                raw = await conn.get_raw_connection()
                adapter: Any = raw.dbapi_connection
                cls = type(adapter)
                real = cls.rollback

                def counting(self: Any) -> None:
                    rollbacks.append(1)
                    real(self)

                cls.rollback = counting
            try:
                for _ in range(3):
                    async with engine.begin() as conn:
                        await conn.execute(text("INSERT INTO t VALUES (1)"))
                assert rollbacks == []  # committed: nothing to roll back

                def write_behind_the_connection(sync_conn: Any) -> None:
                    # A transaction the Connection does not know of: only the pool sees it.
                    sync_conn.connection.dbapi_connection.cursor().execute(
                        "INSERT INTO t VALUES (2)"
                    )

                async with engine.connect() as conn:
                    await conn.run_sync(write_behind_the_connection)
                assert rollbacks == [1]
            finally:
                cls.rollback = real
            # The lock went with it: another engine writes at once, and the row is gone.
            async with other.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (3)"))
                values = (await conn.execute(text("SELECT v FROM t ORDER BY v"))).scalars()
                assert list(values) == [1, 1, 1, 3]
        finally:
            await engine.dispose()
            await other.dispose()

    asyncio.run(go())
