"""Schema migrations of inferprune's tables, run by a command, never on import."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from service.errors import ServiceError

__all__ = [
    "SchemaOutdatedError",
    "check_schema",
    "current_revision",
    "head_revision",
    "upgrade_schema",
]

_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "inferprune_alembic_version"


class SchemaOutdatedError(ServiceError):
    """The database schema is older (or newer) than this code expects."""

    code = "schema_outdated"
    status = 503


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """Return the newest revision this code knows."""
    head = ScriptDirectory.from_config(_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at (None: no inferprune tables yet)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade_schema(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest schema; return (revision before, revision after)."""
    before = current_revision(engine)
    config = _config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return before, head_revision()


def check_schema(engine: Engine, *, hint: str) -> None:
    """Raise :class:`SchemaOutdatedError` unless the database is at the newest revision.

    Args:
        engine: the store's engine.
        hint: the command that fixes it, quoted in the message.
    """
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutdatedError(f"the database has no inferprune tables yet; run `{hint}` first")
    raise SchemaOutdatedError(
        f"the database schema is at revision {current}, this version needs {head}; "
        f"run `{hint}` to migrate it"
    )
