"""Alembic: one head; upgrade -> downgrade -> upgrade on an empty database."""
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from stcloud.cli import alembic_config
from stcloud.models import Base


def test_single_head():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_upgrade_downgrade_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    eng = create_engine(url)
    assert set(inspect(eng).get_table_names()) <= {"alembic_version"}
    command.upgrade(cfg, "head")
    tables = set(inspect(eng).get_table_names())
    assert set(Base.metadata.tables) <= tables
    eng.dispose()


def test_migrations_match_models(tmp_path):
    """The migrated schema has every column the models declare."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    command.upgrade(alembic_config(url), "head")
    eng = create_engine(url)
    insp = inspect(eng)
    for name, table in Base.metadata.tables.items():
        cols = {c["name"] for c in insp.get_columns(name)}
        assert {c.name for c in table.columns} <= cols, name
    eng.dispose()


def test_migrations_do_not_import_stcloud():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "migrations"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import stcloud" not in text and "from stcloud" not in text, path
