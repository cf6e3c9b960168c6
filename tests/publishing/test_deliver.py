"""``deliver_pending``: provider output URLs are downloaded and delivered to this machine,
to an external S3 bucket (moto's server) or to the Hub (the fake); a failure is a delivery
error, never a failed job."""
from __future__ import annotations

import hashlib
import os
from datetime import timedelta

import boto3
import pytest

from stcloud import db, secrets
from stcloud.models import Job, utcnow
from stcloud.publishing import service
from stcloud.storage import service as storage_service

WEIGHTS = os.urandom(300_000)
SAMPLE = b"\x89PNG fake image"


def completed_job(app, filehost, delivery, names=("lora.safetensors", "sample.png"), status="completed") -> str:
    filehost.files.update({"lora.safetensors": WEIGHTS, "sample.png": SAMPLE})
    with app.app_context(), db.transaction() as s:
        job = Job(name="remote", provider="replicate", status=status, completed_at=utcnow(), delivery=delivery,
                  outputs=[{"name": n, "url": f"{filehost.url}/{n}", "destination": "replicate"} for n in names])
        s.add(job)
        s.flush()
        return job.id


def job_row(app, job_id) -> Job:
    with app.app_context(), db.session() as s:
        return s.get(Job, job_id)


def test_deliver_to_this_machine(app, filehost):
    job_id = completed_job(app, filehost, {"type": "builtin", "state": "pending"})
    with app.app_context():
        service.deliver_pending()
    job = job_row(app, job_id)
    assert job.status == "completed" and job.delivery["state"] == "delivered" and job.delivery_error is None
    by_name = {o["name"]: o for o in job.outputs}
    assert set(by_name) == {"lora.safetensors", "sample.png"}
    lora = by_name["lora.safetensors"]
    assert lora["destination"] == "builtin" and lora["size"] == len(WEIGHTS)
    assert lora["sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert lora["download_url"] == f"/storage/download/outputs/{job_id}/lora.safetensors"
    with app.app_context():
        info, fh = storage_service.backend().open("outputs", f"{job_id}/lora.safetensors")
        with fh:
            assert fh.read() == WEIGHTS
        service.deliver_pending()  # nothing left to do: no second delivery
    assert job_row(app, job_id).delivery["state"] == "delivered"


def test_deliver_to_external_s3(app, filehost, moto_server, home):
    moto = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")
    moto.create_bucket(Bucket="team-models")
    delivery = {"type": "s3", "endpoint_url": moto_server, "bucket": "team-models", "prefix": "runs/42",
                "access_key": "testing", "secret_key": "testing"}
    with app.app_context():
        _cfg, _extra, record = service.prepare_for_submit("job_pending", "replicate", delivery, {})
    job_id = completed_job(app, filehost, record)
    with app.app_context():
        secrets.put(home, f"delivery_s3_secret:{job_id}", "testing")
        service.deliver_pending()
    job = job_row(app, job_id)
    assert job.delivery["state"] == "delivered", job.delivery_error
    assert moto.get_object(Bucket="team-models", Key="runs/42/lora.safetensors")["Body"].read() == WEIGHTS
    assert {o["destination"] for o in job.outputs} == {"s3"}
    assert {o["key"] for o in job.outputs} == {"runs/42/lora.safetensors", "runs/42/sample.png"}
    assert secrets.get(home, f"delivery_s3_secret:{job_id}") is None  # secret dropped once delivered


def test_deliver_to_the_hub(app, filehost, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with app.app_context():
        _cfg, extra, record = service.prepare_for_submit("job_x", "replicate",
                                                         {"type": "hf", "hub_model_id": "me/my-lora"}, {})
    assert extra["hf_token"] == hub.token
    job_id = completed_job(app, filehost, record)
    with app.app_context():
        service.deliver_pending()
    job = job_row(app, job_id)
    assert job.delivery["state"] == "delivered", job.delivery_error
    assert hub.repos["me/my-lora"]["files"] == {"lora.safetensors": WEIGHTS, "sample.png": SAMPLE}
    lora = next(o for o in job.outputs if o["name"] == "lora.safetensors")
    assert lora["destination"] == "hf" and lora["download_url"] == f"{hub.url}/me/my-lora/resolve/main/lora.safetensors"


def test_failed_delivery_is_an_error_not_a_failed_job(app, filehost):
    job_id = completed_job(app, filehost, {"type": "builtin", "state": "pending"})
    filehost.broken.add("sample.png")
    for attempt in (1, 2, 3):
        with app.app_context():
            service.deliver_pending()
        job = job_row(app, job_id)
        assert job.status == "completed"
        assert job.delivery["attempts"] == attempt and "500" in job.delivery_error
        assert {o["destination"] for o in job.outputs} == {"replicate"}  # provider URLs kept
        if attempt < 3:
            assert job.delivery["state"] == "retry"
            with app.app_context():
                service.deliver_pending()  # not due yet: backing off
            assert job_row(app, job_id).delivery["attempts"] == attempt
            with app.app_context(), db.transaction() as s:
                row = s.get(Job, job_id)
                row.delivery = {**row.delivery, "next_attempt_at": (utcnow() - timedelta(seconds=1)).isoformat()}
    assert job.delivery["state"] == "failed" and "retrying" not in job.delivery_error


def test_size_cap(app, filehost):
    app.config["STCLOUD_DELIVERY_MAX_BYTES"] = 1000
    job_id = completed_job(app, filehost, {"type": "builtin", "state": "pending"}, names=("lora.safetensors",))
    with app.app_context():
        service.deliver_pending()
    job = job_row(app, job_id)
    assert "limit" in job.delivery_error and job.status == "completed"
    with app.app_context():
        assert storage_service.outputs_for_job(job_id) == []


def test_jobs_that_need_no_transfer(app, filehost, home):
    failed = completed_job(app, filehost, {"type": "s3", "bucket": "b", "state": "pending"}, status="failed")
    secrets.put(home, f"delivery_s3_secret:{failed}", "s")
    done = completed_job(app, filehost, {"type": "builtin", "state": "pending"}, names=())
    with app.app_context():
        import io

        from stcloud.storage import backend as bk

        b = storage_service.backend()
        b.create_bucket("outputs", exist_ok=True)
        b.put("outputs", f"{done}/pytorch_lora_weights.safetensors", io.BytesIO(b"w"), bk.Expectations(), {})
        service.deliver_pending()
    assert job_row(app, failed).delivery["state"] == "skipped"
    assert secrets.get(home, f"delivery_s3_secret:{failed}") is None
    job = job_row(app, done)
    assert job.delivery["state"] == "done"
    assert [o["name"] for o in job.outputs] == ["pytorch_lora_weights.safetensors"]


@pytest.mark.parametrize("name,expected", [("../../etc/passwd", "passwd"), ("", "output"), ("a b?.bin", "a_b_.bin")])
def test_delivered_names_are_safe(name, expected):
    assert service._safe_name(name, set()) == expected
