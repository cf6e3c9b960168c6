"""Fixtures shared by the Replicate provider and submit tests: the fake Replicate API on
loopback, an app wired to it (token + ``REPLICATE_BASE_URL`` in the environment, short
backoffs) and small datasets. Import the fixtures into a test module to use them."""
from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from tests.fakes.replicate_fake import FakeReplicate

TOKEN = "r8_test_token"
CONFIG = {"model_type": "lora", "max_train_steps": 200, "learning_rate": 1e-4,
          "tracker_run_name": "unit-lora"}


@pytest.fixture
def fake():
    f = FakeReplicate(tokens=(TOKEN,))
    f.start()
    yield f
    f.stop()


@pytest.fixture
def rapp(make_app, fake, monkeypatch):
    """An app whose Replicate provider is the fake (official client over loopback)."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.base_url)
    return make_app(REPLICATE_BACKOFF=0.05, REPLICATE_RETRY_AFTER_CAP=0, REPLICATE_TIMEOUT=10,
                    REPLICATE_CONNECT_TIMEOUT=2, REPLICATE_UPLOAD_TIMEOUT=20,
                    REPLICATE_STATUS_URL="http://127.0.0.1:9/api/v2/status.json")


@pytest.fixture
def rclient(rapp):
    return rapp.test_client()


def make_dataset(root: Path, n: int = 4, size: int = 2048) -> Path:
    """Images + captions, plus files the packager must leave out."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"img_{i:02d}.png").write_bytes(os.urandom(size))
        (root / f"img_{i:02d}.txt").write_text(f"a photo number {i}\n")
    (root / ".env").write_text("SECRET=1\n")
    (root / "id_rsa").write_text("-----BEGIN KEY-----\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    outside = root.parent / "outside.txt"
    outside.write_text("not yours\n")
    (root / "escape.txt").symlink_to(outside)
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


def dataloader_for(path: Path, ds_id: str = "photos") -> list:
    return [{"id": ds_id, "type": "local", "dataset_type": "image", "instance_data_dir": str(path),
             "caption_strategy": "textfile", "resolution": 512},
            {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
             "cache_dir": "cache/text"}]


def submit_body(dataset: Path, **extra) -> dict:
    body = {"provider": "replicate", "name": "unit-job", "config": dict(CONFIG),
            "dataloader_config": dataloader_for(dataset)}
    body.update(extra)
    return body


def set_consent(client, value: str) -> None:
    r = client.put("/api/cloud/settings/consent", json={"consent": value})
    assert r.status_code == 200, r.get_data(as_text=True)


def later(minutes: int = 30):
    from stcloud.models import utcnow

    return utcnow() + timedelta(minutes=minutes)


def poll(app, minutes: int = 30) -> int:
    """Run the scheduler's poller once, as if ``minutes`` had passed."""
    from stcloud.jobs.poller import poll_due

    with app.app_context():
        return poll_due(now=later(minutes))


def job_of(client, job_id: str) -> dict:
    r = client.get(f"/api/cloud/jobs/{job_id}")
    assert r.status_code == 200
    return r.get_json()["job"]


def events_of(client, job_id: str) -> list:
    return client.get(f"/api/cloud/jobs/{job_id}/events").get_json()["events"]


def dump(resp) -> str:
    try:
        return json.dumps(resp.get_json(), indent=1)
    except Exception:  # noqa: BLE001
        return resp.get_data(as_text=True)
