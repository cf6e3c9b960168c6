"""``stcloud jobs submit`` against a live app (loopback) whose Replicate is the fake."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stcloud.jobs.cli_submit import ProgressBar, submit_command
from tests.providers.fixtures import (  # noqa: F401 - fixtures
    CONFIG,
    dataloader_for,
    dataset,
    fake,
    rapp,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(rapp):
    return rapp


@pytest.fixture
def files(tmp_path, dataset):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    dl = tmp_path / "dataloader.json"
    dl.write_text(json.dumps(dataloader_for(dataset)))
    return cfg, dl


def run(live_server, files, *args, input=None):
    cfg, dl = files
    return CliRunner().invoke(submit_command, ["--server", live_server, "--provider", "replicate",
                                               "--config", str(cfg), "--dataloader", str(dl), *args], input=input)


def test_submit_with_yes_prints_the_job_id(live_server, files, fake, monkeypatch):
    import time

    from stcloud.providers.replicate import ReplicateService

    real_upload = ReplicateService.upload_file

    def slow_upload(self, *a, **kw):  # long enough for the CLI to see the stage
        time.sleep(1.0)
        return real_upload(self, *a, **kw)

    monkeypatch.setattr(ReplicateService, "upload_file", slow_upload)
    r = run(live_server, files, "--yes", "--name", "cli-job", "--hardware", "gpu-a100-large", "--max-cost", "5")
    assert r.exit_code == 0, r.output
    job_id = r.stdout.strip()
    assert job_id.startswith("job_") and "\n" not in job_id
    assert "% uploading" in r.stderr  # the bar followed the job's stages
    assert "100.0% submitted (queued)" in r.stderr
    assert f"submitted {job_id} to replicate: queued" in r.stderr
    assert fake.predictions_created == 1


def test_asks_for_consent_and_shows_the_summary(live_server, files, fake):
    r = run(live_server, files, input="y\n")
    assert r.exit_code == 0, r.output
    assert "Data to upload: 8 files" in r.stderr and "symlink leaves dataset root" in r.stderr
    assert "Upload this data to replicate?" in r.stderr
    assert fake.predictions_created == 1


def test_declined_consent_submits_nothing(live_server, files, fake):
    r = run(live_server, files, input="n\n")
    assert r.exit_code == 2 and "consent declined" in r.stderr
    assert fake.requests == []


def test_idempotency_key_replays(live_server, files, fake):
    first = run(live_server, files, "--yes", "--idempotency-key", "cli-k")
    again = run(live_server, files, "--yes", "--idempotency-key", "cli-k")
    assert first.exit_code == again.exit_code == 0
    assert first.stdout == again.stdout and "already submitted" in again.stderr
    assert fake.predictions_created == 1


def test_errors_are_one_line_and_non_zero(live_server, files, tmp_path, monkeypatch):
    r = CliRunner().invoke(submit_command, ["--server", live_server, "--provider", "replicate",
                                            "--config", str(tmp_path / "missing.json"), "--dataloader", "x"])
    assert r.exit_code == 1 and r.stderr.startswith("error: cannot read config file")
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    r = run(live_server, files, "--yes")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: 400 REPLICATE_API_TOKEN not set")
    r = CliRunner().invoke(submit_command, ["--server", "http://127.0.0.1:9", "--provider", "local",
                                            "--config", str(files[0]), "--dataloader", str(files[1])])
    assert r.exit_code == 1 and "cannot reach stcloud" in r.stderr


def test_progress_bar_rendering():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    s = Tty()
    bar = ProgressBar(s)
    bar.show({"stage": "upload", "submit_percent": 67.5, "upload_bytes": 1024 * 1024, "upload_total": 2 * 1024 * 1024})
    bar.done()
    text = s.getvalue()
    assert text.startswith("\r[") and "67.5% uploading 1.0 MiB/2.0 MiB" in text and text.endswith("\n")
