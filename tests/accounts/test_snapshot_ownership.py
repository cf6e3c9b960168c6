"""Config snapshots belong to the owner of the job they were taken for: the commit records it
(``Owner-Id``), members see only their own snapshots — others' configs, histories, versions
and the diffs against them answer 404 or are left out, API and pages alike — while admins and
viewers see every one. Snapshots made before owners were recorded belong to their job's owner.
S3 credentials and worker registrations show their recorded owner too."""
import json

import pytest

from stcloud.snapshots import git
from stcloud.snapshots import service as snapshots
from stcloud.storage import credentials
from stcloud.trainer.sample import ensure_sample
from tests.accounts.helpers import set_owner, team
from tests.jobs.factories import make_job

needs_git = pytest.mark.skipif(git.git_path() is None, reason="git is not installed")


@pytest.fixture
def crew(secure_app):
    return team(secure_app)


def _submit(app, member, config_name: str, lr: float) -> str:
    sample = ensure_sample(app.config["STCLOUD_HOME"])
    cfg = json.loads(open(sample["config_path"]).read())
    cfg["--learning_rate"] = lr
    body = {"provider": "local", "name": f"{config_name} by {member.username}", "config_name": config_name,
            "config": cfg, "dataloader_config": json.loads(open(sample["dataloader_path"]).read())}
    r = app.test_client().post("/api/cloud/jobs/submit", json=body, headers=member.headers)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert r.json["job"]["snapshot"], r.json["job"]
    return r.json["job"]["id"]


def _commits(app) -> dict[str, git.Commit]:
    """{job id: its snapshot commit}, read straight from the repository."""
    return {c.job_id: c for c in git.log_commits(snapshots.repo_root(app.config["STCLOUD_HOME"]))}


@pytest.fixture
def runs(secure_app, crew):
    """mia and max both use config "shared-lora" (mia, max, mia, then max again); max also has
    "max-only"; mia's "mia-copy" is byte-identical to her latest "shared-lora"."""
    mia, max_ = crew["member"], crew["member2"]
    ids = {
        "mia1": _submit(secure_app, mia, "shared-lora", 0.001),
        "max1": _submit(secure_app, max_, "shared-lora", 0.002),
        "mia2": _submit(secure_app, mia, "shared-lora", 0.003),
        "max2": _submit(secure_app, max_, "shared-lora", 0.004),
        "max_only": _submit(secure_app, max_, "max-only", 0.005),
        "mia_copy": _submit(secure_app, mia, "mia-copy", 0.003),
    }
    commits = _commits(secure_app)
    return {k: commits[v].sha for k, v in ids.items()} | {f"job:{k}": v for k, v in ids.items()}


@needs_git
def test_the_commit_records_the_jobs_owner(secure_app, crew, runs):
    commits = _commits(secure_app)
    assert commits[runs["job:mia1"]].owner_id == crew["member"].user_id
    assert commits[runs["job:max_only"]].owner_id == crew["member2"].user_id
    body = git.run(snapshots.repo_root(secure_app.config["STCLOUD_HOME"]), "log", "-1", "--format=%B",
                   runs["mia2"])
    assert f"Owner-Id: {crew['member'].user_id}" in body.splitlines()


@needs_git
def test_members_see_only_their_own_configs(secure_app, crew, runs):
    c = secure_app.test_client()
    mia = crew["member"].headers
    configs = {e["name"]: e for e in c.get("/api/cloud/configs", headers=mia).json["configs"]}
    assert set(configs) == {"shared-lora", "mia-copy"}
    assert configs["shared-lora"]["snapshots"] == 2 and configs["shared-lora"]["last_commit"] == runs["mia2"]
    # her latest shared-lora (not max's newer one in the same directory) equals mia-copy
    assert configs["shared-lora"]["same_as"] == ["mia-copy"] and configs["mia-copy"]["same_as"] == ["shared-lora"]

    history = c.get("/api/cloud/configs/shared-lora/history", headers=mia).json["history"]
    assert [h["commit"] for h in history] == [runs["mia2"], runs["mia1"]]
    assert [h["message"] for h in history] == [None, None]  # the Owner-Id trailer is not the user's message
    assert c.get("/api/cloud/configs/max-only/history", headers=mia).status_code == 404

    for sha in (runs["max1"], runs["max2"]):
        r = c.get(f"/api/cloud/configs/shared-lora/at/{sha}", headers=mia)
        assert r.status_code == 404 and r.mimetype == "application/problem+json"
    assert c.get(f"/api/cloud/configs/max-only/at/{runs['max_only']}", headers=mia).status_code == 404
    # one of her own commits asked under another config's name shows nothing of that config
    assert c.get(f"/api/cloud/configs/max-only/at/{runs['mia2']}", headers=mia).status_code == 404
    mine = c.get(f"/api/cloud/configs/shared-lora/at/{runs['mia2']}", headers=mia).json
    assert mine["config"]["--learning_rate"] == 0.003
    assert mine["previous"]["commit"] == runs["mia1"]  # not max's run in between
    assert "0.002" not in mine["diff"] and "0.001" in mine["diff"]

    snap = c.get(f"/api/cloud/jobs/{runs['job:mia2']}/snapshot", headers=mia).json
    assert snap["previous"]["commit"] == runs["mia1"] and "0.002" not in snap["diff"]
    assert c.get(f"/api/cloud/jobs/{runs['job:max1']}/snapshot", headers=mia).status_code == 404


@needs_git
def test_member_pages_show_only_their_own_configs(secure_app, crew, runs):
    c = secure_app.test_client()
    mia = crew["member"].headers
    page = c.get("/configs", headers=mia).get_data(as_text=True)
    assert "shared-lora" in page and "mia-copy" in page and "max-only" not in page
    assert c.get("/configs/max-only", headers=mia).status_code == 404
    page = c.get("/configs/shared-lora", headers=mia).get_data(as_text=True)
    assert runs["mia1"][:10] in page and runs["max1"][:10] not in page
    assert c.get(f"/configs/shared-lora/at/{runs['max1']}", headers=mia).status_code == 404
    assert c.get(f"/configs/shared-lora/at/{runs['mia1']}", headers=mia).status_code == 200
    # "use this version" on the Submit page loads only her own snapshots
    page = c.get(f"/submit?config_name=max-only&commit={runs['max_only']}", headers=mia).get_data(as_text=True)
    assert "Could not load config" in page and "0.005" not in page
    page = c.get(f"/submit?config_name=shared-lora&commit={runs['mia1']}", headers=mia).get_data(as_text=True)
    assert "Could not load config" not in page and "0.001" in page


@needs_git
def test_admins_and_viewers_see_every_snapshot(secure_app, crew, runs):
    c = secure_app.test_client()
    for who in ("admin", "viewer"):
        h = crew[who].headers
        names = {e["name"] for e in c.get("/api/cloud/configs", headers=h).json["configs"]}
        assert names == {"shared-lora", "max-only", "mia-copy"}, who
        history = c.get("/api/cloud/configs/shared-lora/history", headers=h).json["history"]
        assert [x["commit"] for x in history] == [runs["max2"], runs["mia2"], runs["max1"], runs["mia1"]], who
        assert c.get(f"/api/cloud/configs/shared-lora/at/{runs['max1']}", headers=h).status_code == 200
        snap = c.get(f"/api/cloud/jobs/{runs['job:mia2']}/snapshot", headers=h).json
        assert snap["previous"]["commit"] == runs["max1"], who  # the run just before, whoever made it


@needs_git
def test_snapshots_from_before_owners_belong_to_their_jobs_owner(secure_app, crew):
    home = secure_app.config["STCLOUD_HOME"]
    old_mia, old_max, old_nobody = (make_job(secure_app, "completed") for _ in range(3))
    set_owner(secure_app, old_mia, crew["member"].user_id)
    set_owner(secure_app, old_max, crew["member2"].user_id)
    with secure_app.app_context():
        for job_id in (old_mia, old_max, old_nobody):  # committed the old way: no Owner-Id trailer
            sha, err = snapshots.snapshot_for_submit(home, "legacy", {"job": job_id}, [], job_id)
            assert sha and err is None
    assert all(c.owner_id is None for c in _commits(secure_app).values())
    c = secure_app.test_client()
    history = c.get("/api/cloud/configs/legacy/history", headers=crew["member"].headers).json["history"]
    assert [h["job_id"] for h in history] == [old_mia]
    history = c.get("/api/cloud/configs/legacy/history", headers=crew["member2"].headers).json["history"]
    assert [h["job_id"] for h in history] == [old_max]
    history = c.get("/api/cloud/configs/legacy/history", headers=crew["admin"].headers).json["history"]
    assert [h["job_id"] for h in history] == [old_nobody, old_max, old_mia]


def test_s3_credentials_and_workers_show_their_owner(secure_app, crew):
    c = secure_app.test_client()
    ada = crew["admin"]
    minted = c.post("/api/cloud/storage/credentials", json={"bucket": "team-b"}, headers=ada.headers)
    assert minted.status_code == 201 and minted.json["owner_id"] == ada.user_id
    listed = c.get("/api/cloud/storage/credentials", headers=crew["viewer"].headers).json["credentials"]
    assert [k["owner_id"] for k in listed if k["access_key_id"] == minted.json["access_key_id"]] == [ada.user_id]

    created = c.post("/api/cloud/workers", json={"name": "gpu-team"}, headers=ada.headers)
    assert created.status_code == 201 and created.json["worker"]["owner_id"] == ada.user_id
    wid = created.json["worker_id"]
    assert c.get(f"/api/cloud/workers/{wid}", headers=crew["viewer"].headers).json["worker"]["owner_id"] == ada.user_id
    workers = c.get("/api/cloud/workers", headers=ada.headers).json["workers"]
    assert [w["owner_id"] for w in workers if w["id"] == wid] == [ada.user_id]
    assert c.post(f"/api/cloud/workers/{wid}/rotate-token", json={}, headers=ada.headers).json["worker"]["owner_id"] \
        == ada.user_id

    # a job's own key belongs to the job's owner, even when a worker (no user) has it minted
    job_id = make_job(secure_app, "running")
    set_owner(secure_app, job_id, crew["member"].user_id)
    with secure_app.app_context():
        key = credentials.credentials_for_job(job_id)
    listed = c.get("/api/cloud/storage/credentials", headers=ada.headers).json["credentials"]
    assert [k["owner_id"] for k in listed if k["access_key_id"] == key["access_key_id"]] == [crew["member"].user_id]


def test_pages_name_the_owner_of_jobs_workers_and_keys(secure_app, crew):
    c = secure_app.test_client()
    ada, mia = crew["admin"], crew["member"]
    job_id = make_job(secure_app, "running", name="mia's run")
    set_owner(secure_app, job_id, mia.user_id)
    ownerless = make_job(secure_app, "completed", name="from before accounts")
    page = c.get(f"/jobs/{job_id}", headers=ada.headers).get_data(as_text=True)
    assert '<dd id="job-owner">mia</dd>' in page
    assert c.get(f"/jobs/{job_id}", headers=crew["viewer"].headers).get_data(as_text=True).count(
        '<dd id="job-owner">mia</dd>') == 1
    assert 'id="job-owner"' not in c.get(f"/jobs/{ownerless}", headers=ada.headers).get_data(as_text=True)

    created = c.post("/api/cloud/workers", json={"name": "gpu-team"}, headers=ada.headers)
    assert created.status_code == 201
    minted = c.post("/api/cloud/storage/credentials", json={"bucket": "team-b"}, headers=ada.headers)
    assert minted.status_code == 201
    assert 'registered by ada</span>' in c.get("/workers", headers=ada.headers).get_data(as_text=True)
    storage_page = c.get("/storage", headers=ada.headers).get_data(as_text=True)
    assert '<div class="muted small key-owner">owner ada</div>' in storage_page
    # a deleted user's id is shown as it is (the record keeps its owner)
    assert c.delete(f"/api/cloud/users/{mia.username}", headers=ada.headers).status_code in (200, 204)
    page = c.get(f"/jobs/{job_id}", headers=ada.headers).get_data(as_text=True)
    assert f'<dd id="job-owner">{mia.user_id}</dd>' in page
