"""Through the submit service (provider ``worker``: no cloud; the job stays queued): a snapshot
per submit, no-git and broken-repo submits, exact re-run, changed dataset."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from stcloud.snapshots import git as gitmod
from tests.snapshots.helpers import (
    ALL_SECRETS,
    config,
    everything_ever_committed,
    get_job,
    git,
    needs_submit,
    repo,
)

pytestmark = needs_submit


@pytest.fixture
def dataset(tmp_path):
    ds = tmp_path / "photos"
    ds.mkdir()
    for i, color in enumerate(("red", "green", "blue")):
        Image.new("RGB", (8, 8), color).save(ds / f"img{i}.png")
        (ds / f"img{i}.txt").write_text(f"a {color} square")
    return ds


def submit_body(ds, **extra) -> dict:
    body = {"provider": "worker", "name": "my-lora", "config": config(),
            "dataloader_config": [{"id": "photos", "type": "local", "instance_data_dir": str(ds),
                                   "caption_strategy": "textfile"}],
            "data_consent": True, "hardware": None, "max_cost_usd": 7.5}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def submit(client, ds, **extra) -> dict:
    resp = client.post("/api/cloud/jobs/submit", json=submit_body(ds, **extra))
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.get_json()["job"]


def blob(home, sha, name="my-lora"):
    return git(repo(home), "rev-parse", f"{sha}:{name}/config.json").strip()


def test_each_submit_commits_a_snapshot_without_secrets(app, client, home, dataset):
    first = submit(client, dataset, snapshot_message="baseline run")
    second = submit(client, dataset, config=config(lr=3e-4))
    for job in (first, second):
        assert job["snapshot"] and job["snapshot_error"] is None
        assert get_job(app, job["id"]).snapshot == job["snapshot"]
    root = repo(home)
    assert git(root, "rev-parse", "HEAD").strip() == second["snapshot"]
    msg = git(root, "log", "-1", "--format=%B", first["snapshot"])
    assert first["id"] in msg and "my-lora" in msg and "baseline run" in msg
    everything = everything_ever_committed(root)
    assert not any(secret in everything for secret in ALL_SECRETS)
    snap = client.get(f"/api/cloud/jobs/{second['id']}/snapshot").get_json()
    assert snap["previous"]["job_id"] == first["id"]
    assert '+  "--learning_rate": 0.0003,' in snap["diff"]


def test_submit_without_git_still_works(app, client, dataset, monkeypatch):
    monkeypatch.setattr(gitmod, "GIT_BINARY", "git-is-not-installed")
    job = submit(client, dataset)
    assert job["snapshot"] is None and job["snapshot_error"] == "git not installed: snapshot skipped"
    assert job["status"] in ("queued", "pending")


def test_submit_with_broken_repository_still_works(app, client, home, dataset):
    submit(client, dataset)
    (repo(home) / ".git" / "HEAD").write_text("not a ref at all\n")
    job = submit(client, dataset, config=config(lr=9e-4))
    assert job["snapshot"] is None and "broken" in job["snapshot_error"]
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "broken" in page


def test_exact_rerun_reproduces_config_and_dataset(app, client, home, dataset):
    orig = submit(client, dataset, hardware="gpu-l40s")
    resp = client.post(f"/api/cloud/jobs/{orig['id']}/rerun", json={"exact": True, "data_consent": True})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    data = resp.get_json()
    new = data["job"]
    assert data["exact"] is True and data["rerun_of"] == orig["id"] and new["rerun_of"] == orig["id"]
    assert new["id"] != orig["id"]
    assert (new["provider"], new["hardware"], new["max_cost_usd"]) == \
        (orig["provider"], orig["hardware"], orig["max_cost_usd"])
    assert new["dataset_sha256"] == orig["dataset_sha256"] and orig["dataset_sha256"]
    assert new["snapshot"] and new["snapshot"] != orig["snapshot"]
    assert blob(home, new["snapshot"]) == blob(home, orig["snapshot"])  # the same config.json
    assert git(repo(home), "rev-parse", f"{new['snapshot']}:my-lora").strip() == \
        git(repo(home), "rev-parse", f"{orig['snapshot']}:my-lora").strip()  # and the same tree
    # the secrets stripped from the snapshot came back for the run itself: in the encrypted
    # secret store (the job row and the API keep only their places)
    from stcloud import db as _db
    from stcloud.jobs import job_secrets
    from stcloud.models import Job as _Job

    with client.application.app_context(), _db.session() as _s:
        stored = _s.get(_Job, new["id"]).config
        assert stored["--hub_token"] == "[redacted]"
        assert job_secrets.unseal(new["id"], stored)["--hub_token"] == config()["--hub_token"]
    assert client.get(f"/api/cloud/jobs/{new['id']}").get_json()["job"]["config"]["--hub_token"] == "[redacted]"
    snap = client.get(f"/api/cloud/jobs/{new['id']}/snapshot").get_json()
    assert snap["previous"]["job_id"] == orig["id"] and snap["diff"] == ""


def test_changed_dataset_is_refused_with_an_offer(app, client, home, dataset):
    orig = submit(client, dataset)
    Image.new("RGB", (8, 8), "white").save(dataset / "img0.png")  # the data changed
    resp = client.post(f"/api/cloud/jobs/{orig['id']}/rerun", json={"exact": True, "data_consent": True})
    assert resp.status_code == 409 and resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert "dataset changed" in body["detail"].lower()
    assert body["offer"]["exact"] is False and body["offer"]["url"] == f"/api/cloud/jobs/{orig['id']}/rerun"
    assert body["expected_dataset_sha256"] == orig["dataset_sha256"]
    resp = client.post(f"/api/cloud/jobs/{orig['id']}/rerun", json={"exact": False, "data_consent": True})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    new = resp.get_json()["job"]
    assert new["rerun_of"] == orig["id"] and new["dataset_sha256"] != orig["dataset_sha256"]


def test_rerun_page_answers_the_changed_dataset_with_the_offer(app, client, dataset):
    from tests.conftest import csrf_of

    orig = submit(client, dataset)
    Image.new("RGB", (8, 8), "black").save(dataset / "img1.png")
    token = csrf_of(client)
    resp = client.post(f"/jobs/{orig['id']}/rerun", data={"exact": "1", "data_consent": "1", "csrf_token": token},
                       headers={"HX-Request": "true"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Exact re-run refused" in html and "Re-run with current data" in html
    resp = client.post(f"/jobs/{orig['id']}/rerun", data={"exact": "0", "data_consent": "1", "csrf_token": token},
                       headers={"HX-Request": "true"})
    assert resp.headers["HX-Redirect"].startswith("/jobs/job_")
    resp = client.post(f"/jobs/{orig['id']}/rerun", data={"exact": "0", "data_consent": "1", "csrf_token": token})
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/jobs/job_")


def test_cli_rerun(live_server, app, client, dataset):
    from click.testing import CliRunner

    from stcloud.snapshots.cli import configs_group

    orig = submit(client, dataset)
    out = CliRunner().invoke(configs_group, ["rerun", orig["id"], "--yes", "--server", live_server, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["job"]["rerun_of"] == orig["id"]
