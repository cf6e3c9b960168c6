"""Migration 0008_storage: job outputs stored before the S3 endpoint stopped answering
unsigned reads link to the dashboard's download route instead (and back on downgrade)."""
from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from stcloud.cli import alembic_config
from stcloud.models import Job

OLD = "/api/cloud/storage/outputs/job_1/lora.safetensors"
NEW = "/storage/download/outputs/job_1/lora.safetensors"
HUB = {"name": "lora.safetensors", "download_url": "https://hub.example/api/cloud/storage/x", "destination": "hf"}


def test_builtin_download_urls_move_to_the_dashboard_route(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0007_accounts")
    command.upgrade(cfg, "head")
    eng = create_engine(url)
    with Session(eng) as s:
        s.add(Job(id="job_1", name="lora", provider="worker", status="completed", outputs=[
            {"name": "lora.safetensors", "download_url": OLD, "destination": "builtin"}, HUB]))
        s.commit()
    command.downgrade(cfg, "0007_accounts")
    command.upgrade(cfg, "head")
    with Session(eng) as s:
        assert s.get(Job, "job_1").outputs == [
            {"name": "lora.safetensors", "download_url": NEW, "destination": "builtin"}, HUB]
    command.downgrade(cfg, "0007_accounts")
    with Session(eng) as s:
        # only the outputs column: columns added to jobs after 0007 are gone at this revision
        outputs = s.execute(select(Job.outputs).where(Job.id == "job_1")).scalar_one()
        assert outputs[0]["download_url"] == OLD
    eng.dispose()
