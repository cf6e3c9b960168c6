"""A dataset over Replicate's 100 MiB limit for a job that delivers to an S3 bucket (moto's
server, the reference S3 implementation): the archive goes to that bucket under its sha256,
the fake Replicate receives a presigned link signed with the delivery's key and downloads it
through it, a re-run reuses the object, and it is deleted once no unfinished job uses it."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from stcloud import db, secrets
from stcloud.jobs import dataset_bucket, dataset_url
from stcloud.models import Job
from stcloud.storage import service as storage_service
from tests.conftest import serve_in_thread
from tests.jobs.test_dataset_url import SUBMIT, MiB, _files_calls, big_dataset  # noqa: F401 - fixture
from tests.providers.fixtures import (  # noqa: F401 - fixtures
    dump,
    fake,
    job_of,
    poll,
    rapp,
    rclient,
    set_consent,
    submit_body,
)
from tests.storage.conftest import moto_server  # noqa: F401 - the session's moto S3 server

pytestmark = pytest.mark.timeout(600)

BUCKET, PREFIX, ACCESS = "team-data", "runs/7", "AKIATEAMDATA"


@pytest.fixture
def bucket(moto_server):
    c = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id=ACCESS,
                     aws_secret_access_key="team-secret")
    c.create_bucket(Bucket=BUCKET)
    yield c
    for obj in c.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        c.delete_object(Bucket=BUCKET, Key=obj["Key"])
    c.delete_bucket(Bucket=BUCKET)


def _delivery(endpoint: str) -> dict:
    return {"type": "s3", "endpoint_url": endpoint, "bucket": BUCKET, "prefix": PREFIX, "access_key": ACCESS,
            "secret_key": "team-secret"}


def test_over_the_limit_goes_through_the_delivery_bucket(rapp, rclient, fake, big_dataset, bucket,  # noqa: F811
                                                         moto_server):
    body = submit_body(big_dataset, delivery=_delivery(moto_server))
    with serve_in_thread(rapp) as url:
        rapp.config["STCLOUD_PUBLIC_URL"] = url
        set_consent(rclient, "ask")
        r = rclient.post(SUBMIT, json=body)
        assert r.status_code == 409, dump(r)
        dest = r.get_json()["summary"]["destination"]
        assert f"your delivery bucket s3://{BUCKET}/{PREFIX}/stcloud-datasets/ at {moto_server}" in dest
        assert "presigned link" in dest and "/api/cloud/storage" not in dest

        r = rclient.post(SUBMIT, json={**body, "data_consent": True})
        assert r.status_code == 201, dump(r)
        job = r.get_json()["job"]
        key = f"{PREFIX}/stcloud-datasets/{job['dataset_sha256']}.zip"
        assert _files_calls(fake) == 0  # no file upload
        [pred] = fake.predictions.values()
        link = pred["input"]["images"]
        assert link.startswith(f"{moto_server}/{BUCKET}/{key}?")
        query = parse_qs(urlsplit(link).query)
        assert query["X-Amz-Credential"][0].startswith(ACCESS + "/") and query["X-Amz-Expires"] == ["86400"]
        got = fake.fetch_input(pred["id"])  # what the trainer's container does
        assert got["status"] == 200 and got["sha256"] == job["dataset_sha256"] and got["size"] > 150 * MiB
        stored = bucket.head_object(Bucket=BUCKET, Key=key)
        with rapp.app_context():
            assert not storage_service.backend().bucket_exists(dataset_url.BUCKET)  # nothing kept here
            with db.session() as s:
                link_record = s.get(Job, job["id"]).provider_data["dataset_url"]
        assert link_record["delivery_bucket"] and link_record["key"] == key and link_record["bucket"] == BUCKET

        # a re-run of the same data reuses the object (not written again)
        r = rclient.post(SUBMIT, json={**body, "data_consent": True, "name": "again"})
        assert r.status_code == 201, dump(r)
        second = r.get_json()["job"]
        assert bucket.head_object(Bucket=BUCKET, Key=key)["LastModified"] == stored["LastModified"]
        [pred2] = [p for p in fake.predictions.values() if p["id"] != pred["id"]]
        assert pred2["input"]["images"].startswith(f"{moto_server}/{BUCKET}/{key}?")

        fake.start_prediction(pred["id"], logs="step 1/10\n")
        fake.succeed(pred["id"], output=[], predict_time=12.0)
        poll(rapp)
        assert job_of(rclient, job["id"])["status"] == "completed"
        with rapp.app_context():
            assert dataset_url.cleanup() == 0  # the re-run still uses it
        assert bucket.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == got["size"]

        fake.fail(pred2["id"], error="boom")
        poll(rapp, minutes=90)  # past the next poll the first round scheduled for it
        assert job_of(rclient, second["id"])["status"] == "failed"
        with rapp.app_context():
            assert dataset_url.cleanup() == 1  # no unfinished job left: deleted from the bucket
            assert dataset_url.cleanup() == 0
            assert not secrets.get_many(rapp.config["STCLOUD_HOME"], dataset_bucket.SECRET_PREFIX)
            with db.session() as s:
                assert s.get(Job, job["id"]).provider_data["dataset_url"]["deleted"] is True
        assert bucket.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_bucket_that_refuses_the_dataset_fails_the_job_with_the_reason(rapp, rclient, fake, big_dataset,  # noqa: F811
                                                                         moto_server):
    delivery = {**_delivery(moto_server), "bucket": "no-such-bucket"}
    with serve_in_thread(rapp) as url:
        rapp.config["STCLOUD_PUBLIC_URL"] = url
        set_consent(rclient, "allow")
        r = rclient.post(SUBMIT, json=submit_body(big_dataset, delivery=delivery))
        assert r.status_code == 400, dump(r)
        problem = r.get_json()
        assert "could not be put in the delivery bucket" in problem["detail"] and "no-such-bucket" in problem["detail"]
        assert problem["field"] == "delivery"
        assert not fake.predictions and _files_calls(fake) == 0
        job_id = problem["job_id"]
        failed = job_of(rclient, job_id)
        assert failed["status"] == "failed" and "delivery bucket" in failed["error"]
        with rapp.app_context():
            assert dataset_url.cleanup() == 0  # nothing was stored; its record goes
            assert not secrets.get_many(rapp.config["STCLOUD_HOME"], dataset_bucket.SECRET_PREFIX)
