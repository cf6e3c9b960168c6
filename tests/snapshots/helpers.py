"""Helpers for the snapshot tests: seeded jobs with snapshots, reading the repository."""
from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from stcloud import db
from stcloud.models import Job
from stcloud.snapshots import service

HF = "hf_" + "A1b2C3d4E5f6G7h8I9j0KLMNOPQRSTUV"
R8 = "r8_" + "Z9y8X7w6V5u4T3s2R1q0PONMLKJIHGFE"
S3_SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
S3_ACCESS = "AKIAIOSFODNN7EXAMPLE"
PASSWORD = "correct horse battery staple"
ALL_SECRETS = (HF, R8, S3_SECRET, S3_ACCESS, PASSWORD)

HAVE_SUBMIT = importlib.util.find_spec("stcloud.jobs.submit") is not None
needs_submit = pytest.mark.skipif(
    not HAVE_SUBMIT,
    reason="stcloud.jobs.submit (the submit service of the Replicate submit issue) is not in this tree yet")


def config(lr=1e-4, **extra) -> dict:
    cfg = {
        "--model_family": "flux",
        "--learning_rate": lr,
        "--max_train_steps": 20,
        "--tokenizer_max_length": 77,
        "--hub_model_id": "me/my-lora",
        "--hub_token": HF,
        "replicate_api_token": R8,
        "webhook": {"url": "https://example.org/hook", "password": PASSWORD},
        "publishing_config": [{"provider": "s3", "bucket": "models", "region": "us-east-1",
                               "access_key": S3_ACCESS, "secret_key": S3_SECRET,
                               "base_path": "runs", "endpoint_url": "http://127.0.0.1:9/api/cloud/storage"}],
    }
    cfg.update(extra)
    return cfg


def dataloader(path="/data/set", **extra) -> list:
    return [{"id": "photos", "type": "local", "instance_data_dir": str(path), "caption_strategy": "filename",
             "aws_secret_access_key": S3_SECRET, **extra}]


def seed_job(app, name="my-lora", *, cfg=None, dl=None, message=None, provider="worker",
             take_snapshot=True, **fields) -> str:
    """A job row plus its snapshot, as the submit service would leave them."""
    cfg = config() if cfg is None else cfg
    dl = dataloader() if dl is None else dl
    with app.app_context():
        with db.transaction() as s:
            job = Job(name=name, provider=provider, status="queued", config=cfg, dataloader_config=dl,
                      config_name=name, **fields)
            s.add(job)
            s.flush()
            job_id = job.id
        if take_snapshot:
            sha, err = service.snapshot_for_submit(app.config["STCLOUD_HOME"], name, cfg, dl, job_id, message)
            with db.transaction() as s:
                job = s.get(Job, job_id)
                job.snapshot, job.snapshot_error = sha, err
    return job_id


def get_job(app, job_id) -> Job:
    with app.app_context():
        with db.session() as s:
            return s.get(Job, job_id)


def repo(home) -> Path:
    return Path(home) / "configs"


def git(root: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, HOME=str(root))
    return subprocess.run(["git", f"--git-dir={root / '.git'}", f"--work-tree={root}", *args],
                          env=env, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", check=True).stdout


def everything_ever_committed(root: Path) -> str:
    """``git log -p --all`` (every patch and message) plus the content of every object in the
    object database, reachable or not (a blob staged by a failed commit would show here)."""
    return (git(root, "log", "-p", "--all", "--format=%H%n%B")
            + git(root, "cat-file", "--batch-all-objects", "--batch"))
