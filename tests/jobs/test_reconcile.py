"""The reconciler (``jobs.reconcile``) in-process, against the fake Replicate API: interrupted
submits adopted or cancelled, failed with the stage they died in, uploads deleted when jobs end
(or kept), leftover archives swept, live submits left alone. The kill -9 tests of a real server
are in ``test_crash_submit.py``."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.providers.fixtures import (  # noqa: F401 - fixtures
    TOKEN,
    dataset,
    dump,
    events_of,
    fake,
    job_of,
    poll,
    rapp,
    rclient,
    set_consent,
    submit_body,
)

pytestmark = pytest.mark.timeout(60)

RATE = 0.001  # $/s recorded on the crafted jobs


def dead_owner() -> dict:
    """A submit owner whose process has exited (same host and boot as this test)."""
    from stcloud.jobs import reconcile

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return {**reconcile.submit_owner(), "pid": proc.pid, "start": 1}


def crafted_job(app, *, stage: str = "submit", owner: dict | None = None, packaged: bool = True,
                status: str = "uploading") -> str:
    """A job row as a submit leaves it when its process dies at ``stage``."""
    from stcloud import db
    from stcloud.jobs import service as jobs_service
    from stcloud.models import Job, new_id

    job_id = new_id("job")
    with app.app_context(), db.transaction() as s:
        job = Job(id=job_id, name="crashed", provider="replicate", status="pending", config={"max_train_steps": 10},
                  dataloader_config=[], hardware="gpu-l40s", rate_usd_per_second=RATE, estimated_cost_usd=0.5,
                  dataset_sha256=("ab" * 32) if packaged else None, progress={"stage": stage},
                  provider_data={"submit_owner": owner if owner is not None else dead_owner()})
        s.add(job)
        s.flush()
        if status != "pending":
            jobs_service.transition(s, job, status, source="api", detail="submitted (api)")
    return job_id


def upload_for(fake, job_id: str) -> dict:
    f = fake.client().files.create(io.BytesIO(b"PK\x05\x06" + b"\0" * 18), filename=f"{job_id}.zip",
                                   content_type="application/zip", metadata={"stcloud_job_id": job_id})
    return {"id": f.id, "url": f.urls["get"]}


def prediction_for(fake, job_id: str, file_url: str | None = None) -> str:
    inp = {"stcloud_job_id": job_id, **({"images": file_url} if file_url else {})}
    return fake.client().predictions.create(version=fake.latest_version_id(), input=inp).id


def run(app, minutes: float = 0) -> dict:
    from stcloud.jobs import reconcile
    from tests.providers.fixtures import later

    with app.app_context():
        return reconcile.run(now=later(minutes) if minutes else None)


def spend(client) -> dict:
    r = client.get("/api/cloud/cost-limit/status?provider=replicate")
    assert r.status_code == 200, dump(r)
    return r.get_json()


def spent(client) -> float:
    return spend(client)["spent_usd"]


# ---- who runs a submit --------------------------------------------------------------------------

def test_owner_liveness():
    from stcloud.jobs import reconcile

    me = reconcile.submit_owner()
    assert me["pid"] == os.getpid() and me["host"] == socket.gethostname()
    assert reconcile.owner_alive(me) is True
    assert reconcile.owner_alive(dead_owner()) is False
    assert reconcile.owner_alive({**me, "start": me["start"] + 1}) is False  # the pid was reused
    assert reconcile.owner_alive({**me, "host": "elsewhere"}) is None
    assert reconcile.owner_alive(None) is None
    if me["boot"]:
        assert reconcile.owner_alive({**me, "boot": "another-boot"}) is False


def test_a_live_submit_is_left_alone_and_a_silent_one_is_not(rapp, fake):
    from stcloud.jobs import reconcile

    with rapp.app_context():
        live = crafted_job(rapp, owner=reconcile.submit_owner())
        elsewhere = crafted_job(rapp, owner={**reconcile.submit_owner(), "host": "elsewhere"})
    assert run(rapp)["reconciled"] == 0
    c = rapp.test_client()
    assert job_of(c, live)["status"] == job_of(c, elsewhere)["status"] == "uploading"
    assert run(rapp, minutes=16)["reconciled"] == 2  # silent past SILENT_AFTER: settled
    assert job_of(c, elsewhere)["status"] == "failed"


# ---- interrupted submits --------------------------------------------------------------------------

def test_created_remote_job_is_adopted_billed_once_and_its_upload_deleted_when_it_ends(rapp, rclient, fake):
    job_id = crafted_job(rapp, stage="submit")
    upload = upload_for(fake, job_id)
    pred = prediction_for(fake, job_id, upload["url"])
    out = run(rapp)
    assert out["reconciled"] == 1 and out["uploads_deleted"] == 0
    job = job_of(rclient, job_id)
    assert job["status"] == "queued" and job["provider_job_id"] == pred
    ev = events_of(rclient, job_id)[-1]
    assert ev["source"] == "reconciler" and "adopted Replicate job" in ev["detail"] and "interrupted" in ev["detail"]
    assert upload["id"] in fake.files  # the running prediction still reads it
    assert spend(rclient)["committed_usd"] == pytest.approx(0.5)  # its reservation counts against the limits

    fake.start(pred, logs="step 1/10\n")
    fake.succeed(pred, predict_time=100)
    poll(rapp)
    job = job_of(rclient, job_id)
    assert job["status"] == "completed" and job["cost_usd"] == pytest.approx(100 * RATE)
    assert run(rapp)["uploads_deleted"] == 1
    assert upload["id"] not in fake.files and fake.requests_to("DELETE", rf"^/v1/files/{upload['id']}$")
    status = spend(rclient)
    assert status["spent_usd"] == status["committed_usd"] == pytest.approx(100 * RATE)  # counted once
    assert run(rapp) == {"reconciled": 0, "uploads_deleted": 0, "archives_removed": 0}  # nothing twice


def test_cancel_policy_cancels_the_remote_job(rapp, rclient, fake):
    r = rclient.put("/api/cloud/settings/recovery", json={"orphan_policy": "cancel"})
    assert r.status_code == 200 and r.get_json()["orphan_policy"] == "cancel", dump(r)
    job_id = crafted_job(rapp, stage="submit")
    upload = upload_for(fake, job_id)
    pred = prediction_for(fake, job_id, upload["url"])
    out = run(rapp)
    assert out["reconciled"] == 1 and out["uploads_deleted"] == 1
    assert fake.get_prediction(pred)["status"] == "canceled"
    job = job_of(rclient, job_id)
    assert job["status"] == "cancelled" and job["provider_job_id"] == pred
    assert "orphan_policy cancel" in events_of(rclient, job_id)[-1]["detail"]
    assert fake.files == {}


def test_no_remote_job_fails_with_the_stage_and_deletes_the_orphan_upload_even_when_keeping(rapp, rclient, fake):
    assert rclient.put("/api/cloud/settings/recovery", json={"keep_uploads": True}).status_code == 200
    job_id = crafted_job(rapp, stage="upload")
    upload_for(fake, job_id)
    other = upload_for(fake, "job_someone_else")
    out = run(rapp)
    assert out == {"reconciled": 1, "uploads_deleted": 1, "archives_removed": 0}
    job = job_of(rclient, job_id)
    assert job["status"] == "failed"
    assert "interrupted while uploading the dataset" in job["error"] and "Replicate has no job" in job["error"]
    assert list(fake.files) == [other["id"]]  # only ours
    # a create still in flight when it died would land later: the poller keeps looking and cancels it
    late = prediction_for(fake, job_id)
    poll(rapp, minutes=2)
    assert fake.get_prediction(late)["status"] == "canceled"
    assert spent(rclient) == 0


def test_death_while_packaging_fails_without_asking_about_uploads(rapp, rclient, fake):
    job_id = crafted_job(rapp, stage="package", packaged=False)
    assert run(rapp)["reconciled"] == 1
    job = job_of(rclient, job_id)
    assert job["status"] == "failed" and "while packaging the datasets" in job["error"]
    assert not fake.requests_to("GET", r"^/v1/files$")


def test_provider_down_fails_the_job_and_leaves_the_search_to_the_poller(rapp, rclient, fake):
    job_id = crafted_job(rapp, stage="submit")
    fake.inject("GET", r"^/v1/predictions$", "500", times=None)
    assert run(rapp)["reconciled"] == 1
    job = job_of(rclient, job_id)
    assert job["status"] == "failed" and "keeps looking" in job["error"]
    fake.clear_faults()
    pred = prediction_for(fake, job_id)
    poll(rapp, minutes=2)
    assert fake.get_prediction(pred)["status"] == "canceled"


# ---- uploads of ended jobs ------------------------------------------------------------------------

def test_a_submitted_job_loses_its_upload_when_it_ends(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    r = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset))
    assert r.status_code == 201, dump(r)
    job = r.get_json()["job"]
    (fid,) = list(fake.files)
    assert run(rapp)["uploads_deleted"] == 0  # still running: the trainer reads it
    fake.fail(job["provider_job_id"], error="CUDA out of memory")
    poll(rapp)
    path = fake.file_path(fid)
    assert run(rapp)["uploads_deleted"] == 1 and fake.files == {}
    assert not os.path.exists(path)  # the fake deleted the bytes too
    assert not fake.requests_to("GET", r"^/v1/files$")  # the recorded id was used: no listing
    assert f"deleted the uploaded dataset from Replicate ({fid})" in rclient.get(
        f"/api/cloud/jobs/{job['id']}/logs").get_json()["text"]


def test_keep_uploads_keeps_the_data_of_jobs_that_ran(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    assert rclient.put("/api/cloud/settings/recovery", json={"keep_uploads": True}).status_code == 200
    job = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset)).get_json()["job"]
    assert rclient.post(f"/api/cloud/jobs/{job['id']}/cancel", json={}).status_code == 200
    assert run(rapp)["uploads_deleted"] == 0 and len(fake.files) == 1


def test_cleanup_retries_with_backoff_when_the_provider_fails(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    job = rclient.post("/api/cloud/jobs/submit", json=submit_body(dataset)).get_json()["job"]
    assert rclient.post(f"/api/cloud/jobs/{job['id']}/cancel", json={}).status_code == 200
    fake.inject("DELETE", r"^/v1/files/", "500", times=1)
    assert run(rapp)["uploads_deleted"] == 0 and len(fake.files) == 1
    assert run(rapp)["uploads_deleted"] == 0  # not due yet
    assert run(rapp, minutes=5)["uploads_deleted"] == 1 and fake.files == {}


# ---- archives on disk ------------------------------------------------------------------------------

def test_leftover_archives_are_swept_but_live_and_worker_archives_kept(rapp, fake):
    from stcloud import db
    from stcloud.jobs import reconcile
    from stcloud.models import Job

    uploads = Path(rapp.config["STCLOUD_HOME"]) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    with rapp.app_context():
        dead = crafted_job(rapp, stage="package", packaged=False)
        live = crafted_job(rapp, stage="package", packaged=False, owner=reconcile.submit_owner())
        worker = crafted_job(rapp, stage="package", packaged=False, owner=reconcile.submit_owner())
        with db.transaction() as s:
            s.get(Job, worker).archive_path = str(uploads / f"{worker}.zip")
            s.get(Job, worker).status = "queued"
    names = [f".stcloud-archive-{dead}.zip.x1y2.partial", f"{dead}.zip", f".stcloud-archive-{live}.zip.z9.partial",
             f"{worker}.zip", "job_NOSUCHJOB.zip", "unrelated.txt"]
    for n in names:
        (uploads / n).write_bytes(b"PK partial")
    out = run(rapp)
    assert out["archives_removed"] == 2  # the dead submit's two; the unknown job's file is left alone
    left = sorted(p.name for p in uploads.iterdir())
    assert left == sorted([f".stcloud-archive-{live}.zip.z9.partial", f"{worker}.zip", "job_NOSUCHJOB.zip",
                           "unrelated.txt"])


def test_archives_are_written_atomically(tmp_path, dataset):
    from stcloud import packaging
    from tests.providers.fixtures import dataloader_for

    arc = packaging.build_archive(dataloader_for(dataset), tmp_path / "up", archive_name="job_X.zip")
    assert [p.name for p in (tmp_path / "up").iterdir()] == ["job_X.zip"] and arc.size > 0


# ---- settings ---------------------------------------------------------------------------------------

def test_recovery_settings_api_and_page(rclient):
    r = rclient.get("/api/cloud/settings/recovery")
    assert r.get_json()["orphan_policy"] == "adopt" and r.get_json()["keep_uploads"] is False
    for body, field in (({"orphan_policy": "ignore"}, "orphan_policy"), ({"keep_uploads": "yes"}, "keep_uploads"),
                        ({}, "orphan_policy")):
        r = rclient.put("/api/cloud/settings/recovery", json=body)
        assert r.status_code == 400 and r.get_json()["field"] == field, dump(r)
    page = rclient.get("/settings/recovery").get_data(as_text=True)
    assert 'value="adopt" checked' in page and "every 30 s" in page


def test_recovery_settings_form(rclient):
    from tests.conftest import csrf_of

    token = csrf_of(rclient)
    r = rclient.post("/settings/recovery", data={"orphan_policy": "cancel", "keep_uploads": "1", "csrf_token": token},
                     headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Saved." in r.get_data(as_text=True)
    assert rclient.get("/api/cloud/settings/recovery").get_json()["orphan_policy"] == "cancel"
    assert rclient.get("/api/cloud/settings/recovery").get_json()["keep_uploads"] is True
    r = rclient.post("/settings/recovery", data={"orphan_policy": "ignore", "csrf_token": token})
    assert r.status_code == 422 and "orphan_policy must be one of adopt, cancel" in r.get_data(as_text=True)
    assert "Interrupted submits and uploaded data" in rclient.get("/settings").get_data(as_text=True)
