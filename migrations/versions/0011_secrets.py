"""Secrets out of the job rows: ``jobs.config``, ``jobs.dataloader_config`` and
``provider_data.archive_dataloader_config`` keep ``[redacted]`` where a secret was; the values
go to the encrypted secret store (``STCLOUD_HOME/secrets.enc``).

The encryption is the application's, handed in by ``stcloud db upgrade`` as
``config.attributes["seal_job_secrets"]`` (migrations import only Alembic and SQLAlchemy).
Without it (a bare ``alembic upgrade``) the migration stops when a row holds a secret, rather
than leave them in clear or lose them.

Revision ID: 0011_secrets
Revises: 0010_notify
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_secrets"
down_revision = "0010_notify"
branch_labels = None
depends_on = None

jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("config", sa.JSON),
                sa.column("dataloader_config", sa.JSON), sa.column("provider_data", sa.JSON))


def _hook(name: str):
    cfg = op.get_context().config
    return (cfg.attributes.get(name) if cfg is not None else None)


def _rows(conn, batch: int = 500):
    """Every job row, in pages by id (a big table is never loaded at once)."""
    last = ""
    while True:
        page = conn.execute(sa.select(jobs.c.id, jobs.c.config, jobs.c.dataloader_config, jobs.c.provider_data)
                            .where(jobs.c.id > last).order_by(jobs.c.id).limit(batch)).all()
        if not page:
            return
        yield from page
        last = page[-1][0]


def _move(hook_name: str) -> None:
    hook = _hook(hook_name)
    conn = op.get_bind()
    for job_id, config, dataloader, provider_data in _rows(conn):
        packaged = (provider_data or {}).get("archive_dataloader_config") if isinstance(provider_data, dict) else None
        if hook is None:
            if hook_name == "unseal_job_secrets":
                return  # downgrade without the application: the secrets stay in the store
            if _has_secret(config) or _has_secret(dataloader) or _has_secret(packaged):
                raise RuntimeError("jobs hold secrets that must be encrypted: run `stcloud db upgrade` "
                                   "(it hands this migration the secret store)")
            continue
        values = {}
        new_config = hook(job_id, "config", config) if config is not None else None
        if new_config != config:
            values["config"] = new_config
        new_dl = hook(job_id, "dataloader", dataloader) if dataloader is not None else None
        if new_dl != dataloader:
            values["dataloader_config"] = new_dl
        if packaged is not None:
            new_packaged = hook(job_id, "archive_dataloader", packaged)
            if new_packaged != packaged:
                values["provider_data"] = {**provider_data, "archive_dataloader_config": new_packaged}
        if values:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))


_MARKERS = ("secret", "token", "password", "passwd", "apikey", "api_key", "access_key", "credential",
            "r8_", "hf_", "whsec_")


def _has_secret(value) -> bool:
    """A broad test (any key or value that looks like a secret): only used to refuse to go on."""
    text = str(value or "").lower()
    return any(m in text for m in _MARKERS)


def upgrade() -> None:
    _move("seal_job_secrets")


def downgrade() -> None:
    _move("unseal_job_secrets")
