"""``stcloud backup FILE`` and ``stcloud restore FILE [--force]`` (see ``stcloud.ops.backup``)."""
from __future__ import annotations

from pathlib import Path

import click

from stcloud import __version__
from stcloud import config as config_mod
from stcloud.cli_options import fail
from stcloud.ops import backup


def _home_and_url() -> tuple[Path, str]:
    home = config_mod.home_dir()
    return home, config_mod.load(home)["STCLOUD_DATABASE_URL"]


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def backup_command(file: Path):
    """Save STCLOUD_HOME and an online snapshot of its SQLite database to FILE (.tar.gz).

    Safe while the server runs. A PostgreSQL database is not included: use pg_dump for it."""
    home, url = _home_and_url()
    try:
        manifest = backup.create(home, url, file, __version__)
    except backup.BackupError as exc:
        fail(str(exc))
    for note in manifest.notes:
        click.echo(f"note: {note}", err=True)
    db_part = (f"database at revision {manifest.alembic_revision}" if manifest.database == "sqlite"
               else "no database (see the note)")
    click.echo(f"backed up {home}: {manifest.files} files ({manifest.bytes / 1024 / 1024:.1f} MiB) and {db_part} "
               f"to {file}")


@click.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="replace whatever STCLOUD_HOME holds now")
def restore_command(file: Path, force: bool):
    """Restore a backup made by `stcloud backup` into STCLOUD_HOME (stop the server first).

    Refuses a STCLOUD_HOME that already holds files unless --force."""
    home, url = _home_and_url()
    try:
        manifest = backup.restore(file, home, url, force=force)
    except backup.BackupError as exc:
        fail(str(exc))
    for note in manifest.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"restored {manifest.files} files into {home} from a backup of {manifest.created_at} "
               f"(stcloud {manifest.stcloud_version}, database revision {manifest.alembic_revision}); "
               "run `stcloud db upgrade` before starting a newer stcloud")
