"""Submit pipeline through the API, against the fake Replicate API via the official client
over loopback: consent, packaging limits, upload, prediction, polling, cancel, faults."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from tests.providers.fixtures import (  # noqa: F401 - fixtures
    CONFIG,
    TOKEN,
    dataloader_for,
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

SUBMIT = "/api/cloud/jobs/submit"


def files_calls(fake) -> int:
    return len(fake.requests_to("POST", r"^/v1/files$"))


def only_prediction(fake) -> dict:
    assert fake.predictions_created == 1, fake.predictions_created
    return next(iter(fake.predictions.values()))


def job_count(app) -> int:
    from stcloud import db
    from stcloud.models import Job

    with app.app_context(), db.session() as s:
        return s.query(Job).count()


# ---- consent --------------------------------------------------------------------------------

def test_consent_deny_refuses_upload(rapp, rclient, fake, dataset):
    set_consent(rclient, "deny")
    r = rclient.post(SUBMIT, json=submit_body(dataset, data_consent=True))
    assert r.status_code == 403, dump(r)
    assert r.mimetype == "application/problem+json"
    assert "Never Upload" in r.get_json()["detail"]
    assert files_calls(fake) == 0 and fake.create_calls == 0
    assert job_count(rapp) == 0


def test_consent_ask_needs_data_consent_and_returns_summary(rapp, rclient, fake, dataset):
    set_consent(rclient, "ask")
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 409, dump(r)
    body = r.get_json()
    assert body["consent_required"] is True
    summary = body["summary"]
    assert summary["totals"]["files"] == 8  # 4 images + 4 captions
    reasons = {e["path"]: e["reason"] for e in summary["excluded"]}
    assert ".env" in reasons and "id_rsa" in reasons and ".git/" in reasons
    assert reasons["escape.txt"] == "symlink leaves dataset root"
    assert files_calls(fake) == 0 and job_count(rapp) == 0

    r = rclient.post(SUBMIT, json=submit_body(dataset, data_consent=True))
    assert r.status_code == 201, dump(r)
    assert r.get_json()["job"]["status"] == "queued"


def test_consent_allow_uploads_without_asking(rclient, fake, dataset):
    set_consent(rclient, "allow")
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 201, dump(r)
    assert files_calls(fake) == 1


def test_consent_ask_does_not_apply_without_local_data(rclient, fake, dataset):
    set_consent(rclient, "ask")
    remote_only = [{"id": "s3-set", "type": "aws", "aws_bucket_name": "b", "dataset_type": "image"}]
    r = rclient.post(SUBMIT, json=submit_body(dataset, dataloader_config=remote_only))
    assert r.status_code == 201, dump(r)
    assert "images" not in only_prediction(fake)["input"]


def test_never_upload_turns_cloud_training_off_but_not_workers(rapp, rclient, fake, dataset):
    set_consent(rclient, "deny")
    hub_only = [{"id": "hub-set", "type": "huggingface", "dataset_name": "me/pics", "dataset_type": "image"}]
    r = rclient.post(SUBMIT, json=submit_body(dataset, dataloader_config=hub_only))
    assert r.status_code == 403, dump(r)
    assert "Cloud training is off" in r.get_json()["detail"] and "Never Upload" in r.get_json()["detail"]
    assert fake.create_calls == 0 and job_count(rapp) == 0
    preview = rclient.post("/api/cloud/data-preview", json={"dataloader_config": hub_only}).get_json()
    assert preview["upload_blocked"] is True
    r = rclient.post(SUBMIT, json=submit_body(dataset, provider="worker"))
    assert r.status_code == 201, dump(r)


def test_consent_setting_api(rclient):
    assert rclient.get("/api/cloud/settings/consent").get_json()["consent"] == "ask"
    r = rclient.put("/api/cloud/settings/consent", json={"consent": "always"})
    assert r.status_code == 400 and r.get_json()["field"] == "consent"
    r = rclient.put("/api/cloud/settings/consent", json={"consent": "deny"})
    assert r.get_json() == {"consent": "deny", "label": "Never Upload",
                            "choices": {"ask": "Always Ask", "allow": "Always Allow", "deny": "Never Upload"}}


def test_data_preview(rclient, dataset):
    r = rclient.post("/api/cloud/data-preview", json={"dataloader_config": dataloader_for(dataset)})
    assert r.status_code == 200, dump(r)
    body = r.get_json()
    assert body["consent_required"] is True and body["within_limit"] is True
    assert body["summary"]["datasets"][0]["files"] == 8
    assert body["summary"]["not_packaged"][0]["reason"] == "text_embeds cache"
    r = rclient.post("/api/cloud/data-preview",
                     json={"dataloader_config": dataloader_for(dataset.parent / "missing")})
    assert r.status_code == 400 and "does not exist" in r.get_json()["detail"]


# ---- the happy path, end to end --------------------------------------------------------------

def test_submit_runs_to_completion_with_cost(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    r = rclient.post(SUBMIT, json=submit_body(dataset, hardware="gpu-a100-large", max_cost_usd=25))
    assert r.status_code == 201, dump(r)
    out = r.get_json()
    job = out["job"]
    assert out["idempotent"] is False and out["warnings"] == []
    assert job["status"] == "queued" and job["provider"] == "replicate"
    assert job["hardware"] == "gpu-a100-large" and job["max_cost_usd"] == 25
    assert job["rate_usd_per_second"] > 0 and job["estimated_cost_usd"] > 0
    assert {"basis", "seconds", "p50_usd", "p90_usd"} <= set(job["estimate"])
    assert job["dataset_sha256"] and len(job["dataset_sha256"]) == 64
    assert job["progress"]["stage"] == "submitted"
    assert [(e["from"], e["to"]) for e in events_of(rclient, job["id"])] == [
        ("pending", "uploading"), ("uploading", "queued")]

    pred = only_prediction(fake)
    assert job["provider_job_id"] == pred["id"]
    inp = pred["input"]
    assert json.loads(inp["config_json"]) == CONFIG  # JSON-encoded strings, as Cog types them
    dl = json.loads(inp["dataloader_json"])
    assert dl[0]["instance_data_dir"] == "datasets/photos" and dl[1]["type"] == "local"
    file_obj = next(iter(fake.files.values()))
    assert inp["images"] == file_obj["urls"]["get"]
    assert inp["stcloud_job_id"] == job["id"]
    assert file_obj["checksums"]["sha256"] == job["dataset_sha256"]
    assert "webhook" not in fake.requests_to("POST", r"^/v1/predictions$")[0].json()  # no public URL
    assert not any(Path(rapp.config["STCLOUD_HOME"], "uploads").glob("*.zip"))  # archive deleted

    fake.start(pred["id"], logs="stage: training\nstep 20/200 loss=0.25\n")
    assert poll(rapp) == 1
    job = job_of(rclient, job["id"])
    assert job["status"] == "running" and job["progress"]["step"] == 20
    log = rclient.get(f"/api/cloud/jobs/{job['id']}/logs").get_json()
    assert "step 20/200" in log["text"]
    fake.append_logs(pred["id"], "step 200/200 loss=0.05\n")
    poll(rapp, 60)
    log2 = rclient.get(f"/api/cloud/jobs/{job['id']}/logs", query_string={"offset": log["next_offset"]}).get_json()
    assert log2["text"] == "step 200/200 loss=0.05\n"  # only the new tail is stored

    fake.succeed(pred["id"], output=["https://replicate.delivery/x/lora.safetensors"], predict_time=120.5)
    poll(rapp, 90)
    job = job_of(rclient, job["id"])
    assert job["status"] == "completed"
    assert job["billed_seconds"] == 120.5
    assert job["cost_usd"] == pytest.approx(120.5 * job["rate_usd_per_second"], abs=1e-6)
    assert job["outputs"][0]["url"].endswith("lora.safetensors")
    assert poll(rapp, 200) == 0  # terminal: no more polls


def test_public_url_adds_webhook(rclient, fake, dataset):
    set_consent(rclient, "allow")
    r = rclient.put("/api/cloud/providers/replicate", json={"public_url": "https://train.example.com/"})
    assert r.status_code == 200
    assert rclient.post(SUBMIT, json=submit_body(dataset)).status_code == 201
    sent = fake.requests_to("POST", r"^/v1/predictions$")[0].json()
    assert sent["webhook"] == "https://train.example.com/api/webhooks/replicate"
    assert sent["webhook_events_filter"] == ["start", "output", "logs", "completed"]


def test_progress_is_visible_by_idempotency_key(rclient, fake, dataset):
    set_consent(rclient, "allow")
    r = rclient.get("/api/cloud/jobs/submit/progress", query_string={"idempotency_key": "k-prog"})
    assert r.get_json()["job"] is None
    r = rclient.post(SUBMIT, json=submit_body(dataset, idempotency_key="k-prog"))
    job_id = r.get_json()["job"]["id"]
    job = rclient.get("/api/cloud/jobs/submit/progress", query_string={"idempotency_key": "k-prog"}).get_json()["job"]
    assert job["id"] == job_id
    assert job["progress"]["upload_total"] == job["progress"]["upload_bytes"] > 0
    assert job["progress"]["submit_percent"] == 100


def test_pinned_version_is_used(rclient, fake, dataset):
    set_consent(rclient, "allow")
    oldest = fake.versions["simpletuner/advanced-trainer"][0]["id"]
    assert rclient.put("/api/cloud/providers/replicate", json={"version": oldest}).status_code == 200
    assert rclient.post(SUBMIT, json=submit_body(dataset)).status_code == 201
    assert only_prediction(fake)["version"] == oldest


# ---- cancel, failure, refresh ---------------------------------------------------------------

def test_cancel_reaches_replicate(rclient, fake, dataset):
    set_consent(rclient, "allow")
    job = rclient.post(SUBMIT, json=submit_body(dataset)).get_json()["job"]
    r = rclient.post(f"/api/cloud/jobs/{job['id']}/cancel", json={})
    assert r.status_code == 200 and r.get_json()["job"]["status"] == "cancelled"
    assert fake.get_prediction(job["provider_job_id"])["status"] == "canceled"
    assert len(fake.requests_to("POST", r"/cancel$")) == 1


def test_failure_carries_the_provider_error(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    job = rclient.post(SUBMIT, json=submit_body(dataset)).get_json()["job"]
    fake.start(job["provider_job_id"])
    fake.fail(job["provider_job_id"], error="CUDA out of memory (tried to allocate 2 GiB)", predict_time=30)
    poll(rapp)
    job = job_of(rclient, job["id"])
    assert job["status"] == "failed"
    assert job["error"] == "CUDA out of memory (tried to allocate 2 GiB)"
    assert job["cost_usd"] == pytest.approx(30 * job["rate_usd_per_second"], abs=1e-6)


def test_refresh_polls_now(rclient, fake, dataset):
    set_consent(rclient, "allow")
    job = rclient.post(SUBMIT, json=submit_body(dataset)).get_json()["job"]
    fake.start(job["provider_job_id"], logs="step 5/200\n")
    r = rclient.post(f"/api/cloud/jobs/{job['id']}/refresh", json={})
    assert r.status_code == 200, dump(r)
    assert r.get_json()["job"]["status"] == "running" and r.get_json()["moved"] is True
    worker_job = rclient.post(SUBMIT, json=submit_body(dataset, provider="worker")).get_json()["job"]
    r = rclient.post(f"/api/cloud/jobs/{worker_job['id']}/refresh", json={})
    assert r.status_code == 400
    assert rclient.post("/api/cloud/jobs/job_nope/refresh", json={}).status_code == 404


def test_cancel_while_uploading_creates_no_prediction(rapp, rclient, fake, dataset, monkeypatch):
    from stcloud.jobs import service as jobs_service
    from stcloud.providers.replicate import ReplicateService

    set_consent(rclient, "allow")
    real_upload = ReplicateService.upload_file

    def upload_then_cancel(self, path, *, job_id=None, **kw):
        result = real_upload(self, path, job_id=job_id, **kw)
        jobs_service.cancel(job_id, source="test")  # the user presses Cancel mid-submit
        return result

    monkeypatch.setattr(ReplicateService, "upload_file", upload_then_cancel)
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 201, dump(r)
    assert r.get_json()["job"]["status"] == "cancelled"
    assert fake.create_calls == 0
    assert fake.files == {}  # the uploaded archive was deleted again


# ---- faults on create: bounded retry, never two predictions ---------------------------------

def test_429_then_success_creates_exactly_one_prediction(rclient, fake, dataset):
    set_consent(rclient, "allow")
    fake.inject("POST", r"^/v1/predictions$", "429", times=1, retry_after=1)
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 201, dump(r)
    assert fake.create_calls == 2 and fake.predictions_created == 1
    assert r.get_json()["job"]["provider_job_id"] == only_prediction(fake)["id"]


@pytest.mark.parametrize("kind", ["after_create_500", "after_create_drop"])
def test_created_but_answered_500_is_adopted_not_duplicated(rclient, fake, dataset, kind):
    set_consent(rclient, "allow")
    fake.inject("POST", r"^/v1/predictions$", kind, times=1)
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 201, dump(r)
    pred = only_prediction(fake)
    assert fake.create_calls == 1  # found by our job id, so no second create
    assert r.get_json()["job"]["provider_job_id"] == pred["id"]
    assert r.get_json()["job"]["status"] == "queued"


def test_500_before_create_is_retried_once_created(rclient, fake, dataset):
    set_consent(rclient, "allow")
    fake.inject("POST", r"^/v1/predictions$", "500", times=2)
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 201, dump(r)
    assert fake.create_calls == 3 and fake.predictions_created == 1


def test_persistent_500_fails_the_job_without_orphans(rclient, fake, dataset):
    set_consent(rclient, "allow")
    fake.inject("POST", r"^/v1/predictions$", "500", times=None)
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 502, dump(r)
    body = r.get_json()
    assert "Replicate server error (HTTP 500)" in body["detail"]
    job = job_of(rclient, body["job_id"])
    assert job["status"] == "failed" and "HTTP 500" in job["error"]
    assert fake.predictions_created == 0 and fake.create_calls == 4  # bounded
    assert fake.files == {}  # nothing left behind on Replicate


def test_uncertain_create_is_reconciled_by_the_poller(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    fake.inject("POST", r"^/v1/predictions$", "after_create_500", times=1)
    fake.inject("GET", r"^/v1/predictions$", "500", times=None)  # the lookup cannot see it
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 502, dump(r)
    assert "could not tell whether Replicate created a prediction" in r.get_json()["detail"]
    pred = only_prediction(fake)
    job = job_of(rclient, r.get_json()["job_id"])
    assert job["status"] == "failed"
    fake.clear_faults()
    poll(rapp)  # finds it by our job id and cancels it: nothing runs behind our back
    assert fake.get_prediction(pred["id"])["status"] == "canceled"
    assert job_of(rclient, job["id"])["provider_job_id"] == pred["id"]


@pytest.mark.parametrize("kind,status,text", [
    ("402", 402, "insufficient credit"),
    ("413_html", 413, "archive too large"),
])
def test_provider_refusals_fail_the_job_clearly(rclient, fake, dataset, kind, status, text):
    set_consent(rclient, "allow")
    path = r"^/v1/predictions$" if kind == "402" else r"^/v1/files$"
    fake.inject("POST", path, kind, times=None)
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == status, dump(r)
    job = job_of(rclient, r.get_json()["job_id"])
    assert job["status"] == "failed" and text in job["error"]
    assert fake.predictions_created == 0


def test_invalid_token_fails_the_job(rapp, rclient, fake, dataset, monkeypatch):
    set_consent(rclient, "allow")
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_not_a_real_token")
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 502, dump(r)
    job = job_of(rclient, r.get_json()["job_id"])
    assert job["status"] == "failed" and job["error"].startswith("Replicate: invalid token")
    assert "r8_not_a_real_token" not in r.get_data(as_text=True)


def test_unreachable_replicate_fails_the_job(rclient, dataset, monkeypatch):
    set_consent(rclient, "allow")
    monkeypatch.setenv("REPLICATE_BASE_URL", "http://127.0.0.1:9")
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 502, dump(r)
    assert "connection to Replicate at http://127.0.0.1:9 failed" in job_of(rclient, r.get_json()["job_id"])["error"]


def test_missing_token_is_a_clear_400(rapp, rclient, fake, dataset, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    r = rclient.post(SUBMIT, json=submit_body(dataset, data_consent=True))
    assert r.status_code == 400
    assert r.get_json()["detail"].startswith("REPLICATE_API_TOKEN not set")
    assert job_count(rapp) == 0


# ---- size limits ------------------------------------------------------------------------------

def test_150_mib_dataset_refused_before_any_upload(rapp, rclient, fake, tmp_path):
    set_consent(rclient, "allow")
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "huge.png", "wb") as fh:  # sparse: 150 MiB on paper, nothing on disk
        fh.truncate(150 * 1024 * 1024)
    r = rclient.post(SUBMIT, json=submit_body(big))
    assert r.status_code == 413, dump(r)
    detail = r.get_json()["detail"]
    assert "150.0 MiB" in detail and "100 MiB" in detail
    assert files_calls(fake) == 0 and fake.create_calls == 0
    assert job_count(rapp) == 0


def test_archive_over_the_limit_while_packaging_fails_the_job(make_app, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.base_url)
    app = make_app(REPLICATE_MAX_UPLOAD_BYTES=64 * 1024)
    client = app.test_client()
    set_consent(client, "allow")
    data = tmp_path / "noise"
    data.mkdir()
    (data / "noise.tif").write_bytes(os.urandom(200 * 1024))  # deflate cannot shrink it
    r = client.post(SUBMIT, json=submit_body(data))
    assert r.status_code == 413, dump(r)
    job = job_of(client, r.get_json()["job_id"])
    assert job["status"] == "failed" and "Replicate accepts at most" in job["error"]
    assert files_calls(fake) == 0
    assert not any(Path(app.config["STCLOUD_HOME"], "uploads").iterdir())


# ---- idempotency ------------------------------------------------------------------------------

def test_idempotent_resubmit_returns_the_first_job(rclient, fake, dataset):
    set_consent(rclient, "allow")
    first = rclient.post(SUBMIT, json=submit_body(dataset, idempotency_key="k-1"))
    assert first.status_code == 201
    again = rclient.post(SUBMIT, json=submit_body(dataset, idempotency_key="k-1"))
    assert again.status_code == 200, dump(again)
    assert again.get_json()["idempotent"] is True
    assert again.get_json()["job"]["id"] == first.get_json()["job"]["id"]
    assert fake.predictions_created == 1 and files_calls(fake) == 1
    other = submit_body(dataset, idempotency_key="k-1", config={**CONFIG, "learning_rate": 1})
    assert rclient.post(SUBMIT, json=other).status_code == 409


def test_concurrent_identical_keys_make_one_job(rapp, fake, dataset):
    client = rapp.test_client()
    set_consent(client, "allow")
    results = []

    def go():
        results.append(rapp.test_client().post(SUBMIT, json=submit_body(dataset, idempotency_key="same")))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.status_code for r in results) == [200, 200, 200, 201], [dump(r) for r in results]
    assert len({r.get_json()["job"]["id"] for r in results}) == 1
    assert fake.predictions_created == 1


# ---- bad input, workers, re-run ----------------------------------------------------------------

@pytest.mark.parametrize("change,field", [
    ({"provider": None}, "provider"),
    ({"provider": "aws"}, "provider"),
    ({"config": None}, "config"),
    ({"config": "{not json"}, "config"),
    ({"config": [1]}, "config"),
    ({"dataloader_config": {}}, "dataloader_config"),
    ({"dataloader_config": []}, "dataloader_config"),
    ({"dataloader_config": [1]}, "dataloader_config"),
    ({"hardware": "gpu-h9000"}, "hardware"),
    ({"max_cost_usd": "lots"}, "max_cost_usd"),
    ({"max_cost_usd": -1}, "max_cost_usd"),
    ({"data_consent": "maybe"}, "data_consent"),
    ({"name": "a/b"}, "name"),
    ({"delivery": "hub"}, "delivery"),
    ({"requirements": {"min_gpus": 1}}, "requirements"),
    ({"expected_dataset_sha256": "abc"}, "expected_dataset_sha256"),
    ({"rerun_of": "job_missing"}, "rerun_of"),
])
def test_bad_bodies_are_400_naming_the_field(rapp, rclient, fake, dataset, change, field):
    body = submit_body(dataset, data_consent=True)
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    r = rclient.post(SUBMIT, json=body)
    assert r.status_code == 400, dump(r)
    assert r.mimetype == "application/problem+json"
    assert r.get_json()["field"] == field
    assert job_count(rapp) == 0 and fake.create_calls == 0


def test_missing_dataset_directory_is_400(rapp, rclient, dataset):
    r = rclient.post(SUBMIT, json=submit_body(dataset.parent / "nope", data_consent=True))
    assert r.status_code == 400 and "does not exist" in r.get_json()["detail"]
    assert rclient.post(SUBMIT, data="{", content_type="application/json").status_code == 400
    assert job_count(rapp) == 0


def test_worker_job_is_packaged_and_queued(rapp, rclient, fake, dataset):
    set_consent(rclient, "deny")  # data stays on the user's machines: no consent needed
    r = rclient.post(SUBMIT, json=submit_body(
        dataset, provider="worker", requirements={"labels": {"gpu": "a100*"}, "min_gpus": 1}))
    assert r.status_code == 201, dump(r)
    job = r.get_json()["job"]
    assert job["status"] == "queued" and job["requirements"] == {"labels": {"gpu": "a100*"}, "min_gpus": 1}
    assert job["hardware"] is None and job["rate_usd_per_second"] == 0
    from stcloud import db
    from stcloud.models import Job

    with rapp.app_context(), db.session() as s:
        row = s.get(Job, job["id"])
        archive = Path(row.archive_path)
        assert archive == Path(rapp.config["STCLOUD_HOME"], "uploads", f"{job['id']}.zip")
        assert archive.exists()
        assert row.provider_data["archive_dataloader_config"][0]["instance_data_dir"] == "datasets/photos"
    assert fake.requests == []  # Replicate never contacted


def test_exact_rerun_refuses_a_changed_dataset(rapp, rclient, fake, dataset):
    set_consent(rclient, "allow")
    first = rclient.post(SUBMIT, json=submit_body(dataset, provider="local")).get_json()["job"]
    same = rclient.post(SUBMIT, json=submit_body(
        dataset, provider="local", rerun_of=first["id"], expected_dataset_sha256=first["dataset_sha256"]))
    assert same.status_code == 201 and same.get_json()["job"]["dataset_sha256"] == first["dataset_sha256"]
    (dataset / "img_00.txt").write_text("edited caption\n")
    r = rclient.post(SUBMIT, json=submit_body(
        dataset, provider="local", rerun_of=first["id"], expected_dataset_sha256=first["dataset_sha256"]))
    assert r.status_code == 409, dump(r)
    assert "dataset changed since the original run" in r.get_json()["detail"]
    assert r.get_json()["reason"] == "dataset_changed"


def test_exact_rerun_with_changed_data_leaves_nothing_behind(app, client, tmp_path):
    """expected_dataset_sha256 mismatch: 409 before any row, snapshot or archive exists."""
    from pathlib import Path

    data = tmp_path / "ds"
    data.mkdir()
    (data / "a.png").write_bytes(b"\x89PNG one")
    body = {"provider": "worker", "name": "rr", "config": {"max_train_steps": 10},
            "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": str(data)}]}
    first = client.post("/api/cloud/jobs/submit", json=body)
    assert first.status_code == 201, first.get_json()
    sha = first.get_json()["job"]["dataset_sha256"]
    (data / "b.png").write_bytes(b"\x89PNG two")
    total = client.get("/api/cloud/jobs").get_json()["total"]
    uploads = set((Path(app.config["STCLOUD_HOME"]) / "uploads").iterdir())
    r = client.post("/api/cloud/jobs/submit", json={**body, "expected_dataset_sha256": sha})
    assert r.status_code == 409 and r.get_json()["reason"] == "dataset_changed"
    assert client.get("/api/cloud/jobs").get_json()["total"] == total
    assert set((Path(app.config["STCLOUD_HOME"]) / "uploads").iterdir()) == uploads


def test_a_failed_launch_still_records_its_snapshot(rclient, fake, dataset):
    """The config snapshot is committed on a thread beside the packaging and the launch
    (jobs/submit_snapshot.py): a submit that fails after its row exists still has it."""
    set_consent(rclient, "allow")
    fake.inject("POST", r"^/v1/predictions$", "402", times=None)
    r = rclient.post(SUBMIT, json=submit_body(dataset))
    assert r.status_code == 402, dump(r)
    job = job_of(rclient, r.get_json()["job_id"])
    assert job["status"] == "failed"
    assert job["snapshot"] and job["snapshot_error"] is None
