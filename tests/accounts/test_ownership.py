"""Jobs belong to who submitted them: members see and touch only their own (others' answer
404 everywhere: list, get, logs, events, cancel, delete, pages, output downloads); admins
and viewers see every job; viewers change nothing."""
import json

import boto3
import pytest

from stcloud import db
from stcloud.accounts import scope
from stcloud.jobs import listing
from stcloud.jobs import service as jobs
from stcloud.models import Job
from stcloud.storage import credentials
from stcloud.storage import service as storage
from stcloud.trainer.sample import ensure_sample
from tests.accounts.helpers import set_owner, team
from tests.conftest import serve_in_thread
from tests.jobs.factories import make_job


@pytest.fixture
def crew(secure_app):
    return team(secure_app)


def _submit_local(app, member) -> str:
    sample = ensure_sample(app.config["STCLOUD_HOME"])
    body = {"provider": "local", "name": f"{member.username} lora",
            "config": json.loads(open(sample["config_path"]).read()),
            "dataloader_config": json.loads(open(sample["dataloader_path"]).read())}
    r = app.test_client().post("/api/cloud/jobs/submit", json=body, headers=member.headers)
    assert r.status_code in (200, 201, 202), r.get_data(as_text=True)
    return r.json["job"]["id"]


def test_submit_records_the_owner(secure_app, crew):
    job_id = _submit_local(secure_app, crew["member"])
    with secure_app.app_context(), db.session() as s:
        assert s.get(Job, job_id).owner_id == crew["member"].user_id


def test_members_see_only_their_own_jobs(secure_app, crew):
    mine = make_job(secure_app, "running", name="mia's job")
    theirs = make_job(secure_app, "running", name="max's job")
    ownerless = make_job(secure_app, "completed", name="from before accounts")
    set_owner(secure_app, mine, crew["member"].user_id)
    set_owner(secure_app, theirs, crew["member2"].user_id)
    c = secure_app.test_client()
    mia = crew["member"].headers

    listed = c.get("/api/cloud/jobs", headers=mia).json
    assert [j["id"] for j in listed["jobs"]] == [mine] and listed["total"] == 1
    for path in (f"/api/cloud/jobs/{theirs}", f"/api/cloud/jobs/{theirs}/logs", f"/api/cloud/jobs/{theirs}/events",
                 f"/api/cloud/jobs/{ownerless}", f"/jobs/{theirs}", f"/jobs/{theirs}/row", f"/jobs/{theirs}/log",
                 f"/api/cloud/jobs/{theirs}/snapshot"):
        assert c.get(path, headers=mia).status_code == 404, path
    assert c.post(f"/api/cloud/jobs/{theirs}/cancel", json={}, headers=mia).status_code == 404
    assert c.delete(f"/api/cloud/jobs/{ownerless}", headers=mia).status_code == 404
    assert c.post(f"/api/cloud/jobs/{theirs}/rerun", json={}, headers=mia).status_code == 404
    with secure_app.app_context(), db.session() as s:
        assert s.get(Job, theirs).status == "running"
        assert s.get(Job, ownerless) is not None
    page = c.get("/jobs", headers=mia).get_data(as_text=True)
    assert "mia&#39;s job" in page and "max&#39;s job" not in page and "from before accounts" not in page

    # their own: everything works
    assert c.get(f"/api/cloud/jobs/{mine}", headers=mia).status_code == 200
    assert c.post(f"/api/cloud/jobs/{mine}/cancel", json={}, headers=mia).json["job"]["status"] == "cancelled"
    assert c.delete(f"/api/cloud/jobs/{mine}", headers=mia).status_code == 204

    # admins and viewers see every job; viewers cannot cancel any
    for who in ("admin", "viewer"):
        total = c.get("/api/cloud/jobs", headers=crew[who].headers).json["total"]
        assert total == 2, who
        assert c.get(f"/api/cloud/jobs/{theirs}", headers=crew[who].headers).status_code == 200
    assert c.post(f"/api/cloud/jobs/{theirs}/cancel", json={}, headers=crew["viewer"].headers).status_code == 403
    assert c.post(f"/api/cloud/jobs/{theirs}/cancel", json={}, headers=crew["admin"].headers).status_code == 200


def test_members_download_only_their_own_outputs(secure_app, crew):
    mine, theirs = make_job(secure_app, "completed"), make_job(secure_app, "completed")
    set_owner(secure_app, mine, crew["member"].user_id)
    set_owner(secure_app, theirs, crew["member2"].user_id)
    with serve_in_thread(secure_app):
        for job_id in (mine, theirs):
            with secure_app.app_context():
                key = credentials.credentials_for_job(job_id)
            s3 = boto3.client("s3", endpoint_url=key["endpoint_url"], region_name=key["region"],
                              aws_access_key_id=key["access_key_id"],
                              aws_secret_access_key=key["secret_access_key"])
            s3.put_object(Bucket=storage.JOB_BUCKET, Key=f"{job_id}/weights.safetensors", Body=b"w-" + job_id.encode())
    c = secure_app.test_client()
    mine_url = storage.object_url(storage.JOB_BUCKET, f"{mine}/weights.safetensors")
    theirs_url = storage.object_url(storage.JOB_BUCKET, f"{theirs}/weights.safetensors")
    r = c.get(mine_url, headers=crew["member"].headers)
    assert r.status_code == 200 and r.data == b"w-" + mine.encode()
    r = c.get(theirs_url, headers=crew["member"].headers)
    assert r.status_code == 404  # another member's job: its files do not exist for this member
    assert c.get(theirs_url, headers=crew["viewer"].headers).status_code == 200
    assert c.get(theirs_url, headers=crew["admin"].headers).status_code == 200
    assert c.get(theirs_url).status_code in (302, 401)  # anonymous: to the sign-in page
    assert c.get(f"/api/cloud/storage/{storage.JOB_BUCKET}?list-type=2", headers=crew["member"].headers).status_code == 403


def test_no_actor_sees_everything(secure_app, crew):
    """Background code (scheduler, workers) binds no actor: no filter."""
    job_id = make_job(secure_app, "running")
    set_owner(secure_app, job_id, crew["member2"].user_id)
    with secure_app.app_context(), db.session() as s:
        assert jobs.get_job(s, job_id).id == job_id
        assert listing.list_jobs(s, listing.Filters(), owner_id=scope.owner_filter()).total == 1


def test_idempotency_keys_do_not_reveal_others_jobs(secure_app, crew):
    data = ensure_sample(secure_app.config["STCLOUD_HOME"])
    body = {"provider": "local", "name": "keyed", "idempotency_key": "shared-key",
            "config": json.loads(open(data["config_path"]).read()),
            "dataloader_config": json.loads(open(data["dataloader_path"]).read())}
    c = secure_app.test_client()
    first = c.post("/api/cloud/jobs/submit", json=body, headers=crew["member"].headers)
    assert first.status_code == 201
    again = c.post("/api/cloud/jobs/submit", json=body, headers=crew["member"].headers)
    assert again.status_code == 200 and again.json["job"]["id"] == first.json["job"]["id"]  # a replay
    other = c.post("/api/cloud/jobs/submit", json=body, headers=crew["member2"].headers)
    assert other.status_code == 409 and first.json["job"]["id"] not in other.get_data(as_text=True)
    r = c.get("/api/cloud/jobs/submit/progress?idempotency_key=shared-key", headers=crew["member2"].headers)
    assert r.status_code == 200 and r.json["job"] is None
    r = c.get("/api/cloud/jobs/submit/progress?idempotency_key=shared-key", headers=crew["member"].headers)
    assert r.json["job"]["id"] == first.json["job"]["id"]
