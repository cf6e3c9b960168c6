"""Checkpoints and samples of a job (both upload layouts), per-checkpoint download, the resume
plan, ownership (another member's job answers 404) and automatic resume up to max_attempts."""
from __future__ import annotations

import io
import json
import zipfile

import pytest

from stcloud import db
from stcloud.jobs import logread, resume
from stcloud.jobs import service as jobs_service
from stcloud.models import Job
from stcloud.storage import backend as bk
from stcloud.storage import service as storage_service
from stcloud.trainer.sample import ensure_sample
from tests.accounts.helpers import set_owner, team
from tests.jobs.factories import make_job as _make_job

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


def sample_dataloader(app) -> list:
    info = ensure_sample(app.config["STCLOUD_HOME"])
    return json.loads(open(info["dataloader_path"]).read())


def make_job(app, status, *, config=None, **fields) -> str:
    """A job as a submit left it: the sample dataset, ``config``."""
    jid = _make_job(app, status, **fields)
    with app.app_context(), db.transaction() as s:
        row = s.get(Job, jid)
        row.dataloader_config = sample_dataloader(app)
        if config is not None:
            row.config = dict(config)
    return jid


def put(app, key: str, data: bytes) -> None:
    with app.app_context():
        b = storage_service.backend()
        b.create_bucket("outputs", exist_ok=True)
        b.put("outputs", key, io.BytesIO(data), bk.Expectations(), {"content_type": "application/octet-stream"})


def agent_checkpoint(app, job_id: str, step: int) -> dict[str, bytes]:
    """What the worker agent uploads for the reference trainer."""
    files = {"pytorch_lora_weights.safetensors": f"weights {step}".encode(), "sample.png": PNG + bytes([step % 256]),
             "trainer_state.json": json.dumps({"global_step": step}).encode()}
    for name, data in files.items():
        put(app, f"{job_id}/checkpoints/checkpoint-{step}/{name}", data)
    return files


@pytest.fixture
def job(app):
    jid = make_job(app, "failed", provider="worker", name="ck job", config={"max_train_steps": 100})
    agent_checkpoint(app, jid, 20)
    agent_checkpoint(app, jid, 40)
    return jid


def test_listing_recognises_agent_and_simpletuner_layouts(app, client):
    jid = make_job(app, "failed", provider="replicate", config={"max_train_steps": 100})
    agent_checkpoint(app, jid, 10)
    # SimpleTuner's publishing: a checkpoint folder by its base name, validation images in output_dir
    put(app, f"{jid}/checkpoint-30/pytorch_lora_weights.safetensors", b"w30")
    put(app, f"{jid}/checkpoint-30/optimizer.bin", b"o30")
    put(app, f"{jid}/output/validation_images/step_30_portrait_1024x1024.png", PNG)
    put(app, f"{jid}/output/validation_images/step_50_portrait_1024x1024.png", PNG)
    put(app, f"{jid}/pytorch_lora_weights.safetensors", b"final")
    listing = client.get(f"/api/cloud/jobs/{jid}/checkpoints").json["checkpoints"]
    assert [ck["step"] for ck in listing] == [10, 30, 50]
    ten, thirty, fifty = listing
    assert ten["downloadable"] and {f["name"] for f in ten["files"]} == {
        "pytorch_lora_weights.safetensors", "sample.png", "trainer_state.json"}
    assert [s["source"] for s in ten["samples"]] == ["checkpoint"]
    assert {f["name"] for f in thirty["files"]} == {"pytorch_lora_weights.safetensors", "optimizer.bin"}
    assert [(s["name"], s["source"]) for s in thirty["samples"]] == [("step_30_portrait_1024x1024.png", "validation")]
    assert not fifty["downloadable"] and fifty["download_url"] is None and len(fifty["samples"]) == 1
    # a sample is served inline as an image; the bytes are the stored ones
    r = client.get(thirty["samples"][0]["url"])
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data == PNG
    assert r.headers["Content-Disposition"].startswith("inline")


def test_download_one_checkpoint_as_a_zip(app, client, job):
    r = client.get(f"/api/cloud/jobs/{job}/checkpoints/20/download")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert f"{job}-checkpoint-20.zip" in r.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(r.data)) as zf:
        assert sorted(zf.namelist()) == ["checkpoint-20/pytorch_lora_weights.safetensors",
                                         "checkpoint-20/sample.png", "checkpoint-20/trainer_state.json"]
        assert zf.read("checkpoint-20/pytorch_lora_weights.safetensors") == b"weights 20"
    one = client.get(f"/api/cloud/jobs/{job}/checkpoints/40/files/pytorch_lora_weights.safetensors")
    assert one.status_code == 200 and one.data == b"weights 40"
    assert "attachment" in one.headers["Content-Disposition"]
    for path in (f"/api/cloud/jobs/{job}/checkpoints/30/download",
                 f"/api/cloud/jobs/{job}/checkpoints/40/files/nope.bin",
                 f"/api/cloud/jobs/{job}/checkpoints/40/files/../../checkpoint-20/sample.png",
                 "/api/cloud/jobs/job_missing/checkpoints"):
        r = client.get(path)
        assert r.status_code == 404 and r.mimetype == "application/problem+json", path


def test_another_members_checkpoints_answer_404(make_app):
    app = make_app(STCLOUD_AUTH="on")
    crew = team(app)
    mine = make_job(app, "failed", provider="worker", config={"max_train_steps": 100})
    theirs = make_job(app, "failed", provider="worker", config={"max_train_steps": 100})
    set_owner(app, mine, crew["member"].user_id)
    set_owner(app, theirs, crew["member2"].user_id)
    for jid in (mine, theirs):
        agent_checkpoint(app, jid, 20)
    c = app.test_client()
    mia = crew["member"].headers
    assert c.get(f"/api/cloud/jobs/{mine}/checkpoints", headers=mia).json["checkpoints"][0]["step"] == 20
    assert c.get(f"/api/cloud/jobs/{mine}/checkpoints/20/download", headers=mia).status_code == 200
    for path in (f"/api/cloud/jobs/{theirs}/checkpoints", f"/api/cloud/jobs/{theirs}/checkpoints/20/download",
                 f"/api/cloud/jobs/{theirs}/checkpoints/20/files/sample.png", f"/api/cloud/jobs/{theirs}/resume",
                 f"/api/cloud/jobs/{theirs}/chain", f"/jobs/{theirs}/checkpoints", f"/jobs/{theirs}/resume"):
        assert c.get(path, headers=mia).status_code == 404, path
    assert c.post(f"/api/cloud/jobs/{theirs}/resume", json={}, headers=mia).status_code == 404
    assert c.post(f"/api/cloud/jobs/{theirs}/checkpoints/20/continue", json={}, headers=mia).status_code == 404
    # the admin sees both
    assert c.get(f"/api/cloud/jobs/{theirs}/checkpoints", headers=crew["admin"].headers).status_code == 200


def test_resume_plan_shows_steps_and_cost_left(app, client, job):
    plan = client.get(f"/api/cloud/jobs/{job}/resume").json["plan"]
    assert plan["step"] == 40 and plan["total_steps"] == 100 and plan["remaining_steps"] == 60
    assert plan["provider"] == "worker" and plan["checkpoints"] == [20, 40] and plan["attempt"] == 2
    with app.app_context(), db.session() as s:
        from stcloud.costs import service as costs

        est = costs.estimate(s, "worker", None, {"max_train_steps": 60})
    assert plan["estimated_cost_usd"] == est.estimated_cost_usd
    older = client.get(f"/api/cloud/jobs/{job}/resume?checkpoint=20&provider=local").json["plan"]
    assert older["step"] == 20 and older["remaining_steps"] == 80 and older["provider"] == "local"
    bad = client.get(f"/api/cloud/jobs/{job}/resume?checkpoint=30")
    assert bad.status_code == 409 and "stored: 20, 40" in bad.json["detail"]
    assert client.get(f"/api/cloud/jobs/{job}/resume?provider=nope").status_code == 400
    r = client.post(f"/api/cloud/jobs/{job}/resume", json={"checkpoint": "x"})
    assert r.status_code == 400 and r.json["field"] == "checkpoint"
    assert client.post(f"/api/cloud/jobs/{job}/resume", json={"steps": 3}).status_code == 400


def test_only_failed_or_cancelled_jobs_with_a_checkpoint_resume(app, client):
    done = make_job(app, "completed", provider="worker", config={"max_train_steps": 100})
    agent_checkpoint(app, done, 50)
    r = client.post(f"/api/cloud/jobs/{done}/resume", json={})
    assert r.status_code == 409 and "completed" in r.json["detail"]
    empty = make_job(app, "cancelled", provider="worker", config={"max_train_steps": 100})
    r = client.post(f"/api/cloud/jobs/{empty}/resume", json={})
    assert r.status_code == 409 and r.json["reason"] == "no_checkpoint"
    last = make_job(app, "failed", provider="worker", config={"max_train_steps": 50})
    agent_checkpoint(app, last, 50)
    assert client.post(f"/api/cloud/jobs/{last}/resume", json={}).json["reason"] == "nothing_left"


def test_resume_on_a_worker_copies_the_checkpoint_and_links_the_chain(app, client, job):
    r = client.post(f"/api/cloud/jobs/{job}/resume", json={"provider": "local"})
    assert r.status_code == 201, r.get_data(as_text=True)
    new = r.json["job"]
    assert new["provider"] == "local" and new["status"] == "queued" and r.json["plan"]["step"] == 40
    assert new["checkpoint"]["step"] == 40 and new["checkpoint"]["key"] == f"{new['id']}/checkpoints/checkpoint-40"
    with app.app_context():
        b = storage_service.backend()
        _info, fh = b.open("outputs", f"{new['id']}/checkpoints/checkpoint-40/pytorch_lora_weights.safetensors")
        with fh:
            assert fh.read() == b"weights 40"
        with db.session() as s:
            row = s.get(Job, new["id"])
            assert row.resumed_from == job and row.resume_step == 40 and row.chain_root == job
            assert "resume_from_checkpoint" not in row.config  # the agent sets it to the unpacked folder
            assert row.estimated_cost_usd == r.json["plan"]["estimated_cost_usd"]
    chain = client.get(f"/api/cloud/jobs/{new['id']}/chain").json
    assert [a["job_id"] for a in chain["attempts"]] == [job, new["id"]]
    assert chain["attempts"][1]["resume_step"] == 40 and chain["root"] == job


def test_auto_resume_stops_at_max_attempts(app, client):
    jid = make_job(app, "failed", provider="worker", config={"max_train_steps": 100},
                   auto_resume={"max_attempts": 2, "provider": "local"})
    agent_checkpoint(app, jid, 30)
    with app.app_context():
        started = resume.auto_resume_due()
        assert len(started) == 1
        second = started[0]
        assert resume.auto_resume_due() == []  # already resumed: never twice
        with db.transaction() as s:
            row = s.get(Job, second)
            assert row.provider == "local" and row.resumed_from == jid and row.auto_resume["max_attempts"] == 2
            jobs_service.transition(s, row, "failed", source="test", detail="lost again")
        agent_checkpoint(app, second, 60)
        assert resume.auto_resume_due() == []  # the chain holds 2 attempts: max_attempts reached
        with db.session() as s:
            assert s.scalar(db_count_resumed(second)) == 0
            log = logread.read_log(second, 0)["text"]
    assert "automatic resume stopped: the chain has 2 attempt(s), max_attempts is 2" in log
    assert client.get(f"/api/cloud/jobs/{second}/chain").json["attempts"][0]["job_id"] == jid


def db_count_resumed(job_id):
    from sqlalchemy import func, select

    return select(func.count()).select_from(Job).where(Job.resumed_from == job_id)


def test_submit_validates_auto_resume(app, client):
    body = {"provider": "local", "config": {"max_train_steps": 5}, "dataloader_config": sample_dataloader(app),
            "auto_resume": {"max_attempts": 0}}
    r = client.post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 400 and r.json["field"] == "auto_resume.max_attempts"
    body["auto_resume"] = {"max_attempts": 3, "provider": "nowhere"}
    assert client.post("/api/cloud/jobs/submit", json=body).json["field"] == "auto_resume.provider"
    body["auto_resume"] = {"max_attempts": 3}
    r = client.post("/api/cloud/jobs/submit", json=body)
    assert r.status_code == 201, r.get_data(as_text=True)
    with app.app_context(), db.session() as s:
        assert s.get(Job, r.json["job"]["id"]).auto_resume == {"max_attempts": 3}


def test_continue_from_a_completed_jobs_checkpoint(app, client):
    done = make_job(app, "completed", provider="worker", config={"max_train_steps": 100})
    agent_checkpoint(app, done, 50)
    agent_checkpoint(app, done, 100)
    r = client.post(f"/api/cloud/jobs/{done}/checkpoints/50/continue", json={"provider": "local"})
    assert r.status_code == 201, r.get_data(as_text=True)
    assert r.json["plan"]["remaining_steps"] == 50 and r.json["job"]["checkpoint"]["step"] == 50
    assert r.json["job"]["resumed_from"] == done and r.json["job"]["resume_step"] == 50
    r = client.post(f"/api/cloud/jobs/{done}/checkpoints/100/continue", json={})
    assert r.status_code == 409 and r.json["reason"] == "nothing_left"
    assert client.post(f"/api/cloud/jobs/{done}/checkpoints/70/continue", json={}).status_code == 409
