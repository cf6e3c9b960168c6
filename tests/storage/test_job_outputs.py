"""Files a job uploads to ``outputs/<job_id>/`` with its own key show up on the job (API and
page) with size, sha256 and a download link."""
from __future__ import annotations

import hashlib
import os

import boto3
from botocore.config import Config

from stcloud import db
from stcloud.models import Job
from stcloud.storage import credentials, service


def test_uploads_under_a_job_prefix_become_its_outputs(app, client, live_server, tmp_path):
    with app.app_context(), db.transaction() as s:
        job = Job(name="lora", provider="worker", status="running", outputs=[
            {"name": "sample.png", "url": "https://example.invalid/sample.png", "destination": "replicate"}])
        s.add(job)
        s.flush()
        job_id = job.id
    with app.app_context():
        key = credentials.credentials_for_job(job_id)
    c = boto3.client("s3", endpoint_url=key["endpoint_url"], region_name=key["region"],
                     aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
                     config=Config(retries={"max_attempts": 1}))
    weights = os.urandom(9 * 1024 * 1024 + 3)  # multipart with upload_file
    src = tmp_path / "w.safetensors"
    src.write_bytes(weights)
    c.upload_file(str(src), "outputs", f"{job_id}/pytorch_lora_weights.safetensors")
    c.put_object(Bucket="outputs", Key=f"{job_id}/samples/step 100/optimizer.bin", Body=b"opt")
    # checkpoints are resume state, not deliverables: stored, but not listed on the job
    c.put_object(Bucket="outputs", Key=f"{job_id}/checkpoints/checkpoint-100/state.json", Body=b"{}")

    outputs = client.get(f"/api/cloud/jobs/{job_id}").json["job"]["outputs"]
    builtin = [o for o in outputs if o["destination"] == "builtin"]
    assert [o["name"] for o in builtin] == ["pytorch_lora_weights.safetensors", "samples/step 100/optimizer.bin"]
    w = builtin[0]
    assert w["size"] == len(weights) and w["sha256"] == hashlib.sha256(weights).hexdigest()
    assert w["download_url"] == f"/storage/download/outputs/{job_id}/pytorch_lora_weights.safetensors"
    assert any(o["destination"] == "replicate" for o in outputs)  # other entries are kept

    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "pytorch_lora_weights.safetensors" in page and w["sha256"][:16] in page
    assert f'href="/storage/download/outputs/{job_id}/samples/step%20100/optimizer.bin"' in page
    assert "checkpoint-100" not in page
    got = client.get(w["download_url"])
    assert got.status_code == 200 and got.data == weights

    c.delete_object(Bucket="outputs", Key=f"{job_id}/samples/step 100/optimizer.bin")
    names = [o["name"] for o in client.get(f"/api/cloud/jobs/{job_id}").json["job"]["outputs"]
             if o["destination"] == "builtin"]
    assert names == ["pytorch_lora_weights.safetensors"]
    with app.app_context():
        assert [o["name"] for o in service.outputs_for_job(job_id)] == names
        assert service.outputs_for_job("job_unknown") == []
