"""The rules an online migration keeps, checked on the SQL it emits (docs/migrations.md).

During a rolling upgrade the previous release's services run on the new schema until each
is replaced, so a migration may only *expand* it: add tables, add nullable columns or
columns with a default, add indexes. What the previous release still uses is dropped,
renamed or tightened only by a *contract* migration, a release after the code stopped using
it; such a migration names what it removes in a module-level ``contract`` tuple
(``("table", "table.column", ...)``), and each name must be gone from the current models.

:func:`check_revision` renders one migration step as PostgreSQL SQL with Alembic's offline
mode (nothing is connected to) and returns the rules it breaks, as sentences.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData

MIGRATIONS = Path(__file__).parent / "migrations"
_URL = "postgresql+asyncpg://check@localhost/check"

_STATEMENT = re.compile(r";\s*$", re.MULTILINE)
_CREATE_TABLE = re.compile(r"^CREATE TABLE (\w+)", re.IGNORECASE)
_DROP_TABLE = re.compile(r"^DROP TABLE (?:IF EXISTS )?(\w+)", re.IGNORECASE)
_ALTER = re.compile(r"^ALTER TABLE (?:ONLY )?(\w+) (.*)$", re.IGNORECASE | re.DOTALL)
_DROP_COLUMN = re.compile(r"DROP COLUMN (?:IF EXISTS )?(\w+)", re.IGNORECASE)
_ADD_COLUMN = re.compile(r"ADD (?:COLUMN )?(\w+) (.*)", re.IGNORECASE | re.DOTALL)
_SET_NOT_NULL = re.compile(r"ALTER COLUMN (\w+) SET NOT NULL", re.IGNORECASE)
_TYPE = re.compile(r"ALTER COLUMN (\w+) (?:SET DATA )?TYPE", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Step:
    revision: str
    down_revision: str | None
    path: Path
    contract: tuple[str, ...]


def _config(locations: tuple[Path, ...]) -> Config:
    config = Config(output_buffer=io.StringIO())
    config.set_main_option("script_location", str(MIGRATIONS))
    paths = [MIGRATIONS / "versions", *locations]
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join(str(p) for p in paths))
    config.set_main_option("sqlalchemy.url", _URL)
    return config


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def steps(locations: tuple[Path, ...] = ()) -> list[Step]:
    """Every migration of every branch (and of ``locations``, extra version directories)."""
    script = ScriptDirectory.from_config(_config(locations))
    found = []
    for rev in script.walk_revisions():
        down = rev.down_revision
        if isinstance(down, tuple | list):
            down = down[0] if down else None
        path = Path(rev.path)
        contract = tuple(getattr(_module(path), "contract", ()))
        found.append(Step(rev.revision, down, path, contract))
    return found


def offline_sql(step: Step, locations: tuple[Path, ...] = ()) -> str:
    """The PostgreSQL statements of one step, as ``alembic upgrade --sql`` writes them."""
    config = _config(locations)
    target = f"{step.down_revision}:{step.revision}" if step.down_revision else step.revision
    command.upgrade(config, target, sql=True)
    buffer = config.output_buffer
    assert isinstance(buffer, io.StringIO)
    return buffer.getvalue()


def statements(sql: str) -> list[str]:
    """Statements without comments, each on one line."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    text = "\n".join(lines)
    return [" ".join(s.split()) for s in _STATEMENT.split(text) if s.strip()]


def problems(sql: str, contract: tuple[str, ...] = ()) -> list[str]:
    """The rules ``sql`` breaks (see the module docstring). Tables it creates itself may be
    shaped freely; ``contract`` names the tables and ``table.column`` it may remove."""
    found: list[str] = []
    created: set[str] = set()
    allowed = {name.lower() for name in contract}
    for statement in statements(sql):
        if "alembic_version" in statement.lower():
            continue
        if match := _CREATE_TABLE.match(statement):
            created.add(match.group(1).lower())
            continue
        if match := _DROP_TABLE.match(statement):
            table = match.group(1).lower()
            if table not in allowed and table not in created:
                found.append(f"drops table {table}: the previous release still uses it")
            continue
        match = _ALTER.match(statement)
        if match is None:
            continue
        table, rest = match.group(1).lower(), match.group(2)
        if table in created:
            continue
        if re.search(r"\bRENAME\b", rest, re.IGNORECASE):
            found.append(f"renames in {table} ({rest}): the previous release uses the old name")
        for column in _DROP_COLUMN.findall(rest):
            if f"{table}.{column.lower()}" not in allowed:
                found.append(f"drops column {table}.{column}: the previous release still uses it")
        for column in _SET_NOT_NULL.findall(rest):
            found.append(
                f"makes {table}.{column} NOT NULL: the previous release may write rows without it"
            )
        for column in _TYPE.findall(rest):
            found.append(
                f"changes the type of {table}.{column}: the previous release reads and writes "
                "the old type (and the table is rewritten under a lock)"
            )
        if add := _ADD_COLUMN.match(rest):
            column, spec = add.group(1), add.group(2).upper()
            if "NOT NULL" in spec and "DEFAULT" not in spec:
                found.append(
                    f"adds {table}.{column} NOT NULL without a default: the previous release "
                    "inserts rows without it"
                )
    return found


def models() -> list[MetaData]:
    """The current release's tables (what its code reads and writes)."""
    from gatehouse.distribution.models import OutboxBase
    from gatehouse.oath.models import OathBase
    from gatehouse.oauth2.models import OAuth2Base
    from gatehouse.storage.models import SessionBase, UserBase

    bases = (UserBase, SessionBase, OathBase, OutboxBase, OAuth2Base)
    return [base.metadata for base in bases]


def unused_by_models(contract: tuple[str, ...], metadata: list[MetaData]) -> list[str]:
    """The names of a contract migration that the current models still use."""
    still = []
    for name in contract:
        table, _, column = name.partition(".")
        for meta in metadata:
            if table in meta.tables and (not column or column in meta.tables[table].c):
                still.append(name)
    return still


def check_revision(step: Step, locations: tuple[Path, ...] = ()) -> list[str]:
    """Every rule ``step`` breaks, as sentences naming its revision."""
    broken = problems(offline_sql(step, locations), step.contract)
    broken += [
        f"contract names {name}, which the current models still use"
        for name in unused_by_models(step.contract, models())
    ]
    return [f"{step.revision} ({step.path.name}): {problem}" for problem in broken]
