"""``prepare_for_submit``: SimpleTuner publishing settings in the config, secrets only where
they must go, clear errors for every bad delivery setting."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stcloud import secrets
from stcloud.errors import BadRequest
from stcloud.publishing import service
from stcloud.storage import credentials


def test_no_delivery_changes_nothing(app):
    with app.app_context():
        cfg, extra, record = service.prepare_for_submit("job_1", "replicate", None, {"lr": 1})
    assert (cfg, extra, record) == ({"lr": 1}, {}, None)


@pytest.mark.parametrize("delivery,field", [
    ("builtin", "delivery"), ({"type": "ftp"}, "delivery.type"), ({}, None),
    ({"type": "s3", "bucket": "b-1", "access_key": "A"}, "delivery.secret_key"),
    ({"type": "s3", "bucket": "b-1", "access_key": "A", "secret_key": "S", "endpoint_url": "ftp://x"},
     "delivery.endpoint_url"),
    ({"type": "s3", "bucket": "", "access_key": "A", "secret_key": "S"}, "delivery.bucket"),
    ({"type": "s3", "bucket": "b-1", "access_key": "A", "secret_key": "S", "colour": "red"}, "delivery.colour"),
    ({"type": "hf", "hub_model_id": "no-slash"}, "delivery.hub_model_id"),
    ({"type": "hf", "hub_model_id": "me/m", "private": "yes"}, "delivery.private"),
])
def test_bad_delivery_settings(app, delivery, field, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    with app.app_context():
        if field is None:
            assert service.prepare_for_submit("job_1", "worker", delivery, {})[2] is None
            return
        with pytest.raises(BadRequest) as e:
            service.prepare_for_submit("job_1", "worker", delivery, {})
    assert e.value.extra["field"] == field


def test_builtin_for_replicate_needs_a_public_url(make_app):
    app = make_app()
    with app.app_context():
        with pytest.raises(BadRequest) as e:
            service.prepare_for_submit("job_1", "replicate", {"type": "builtin"}, {})
    assert "public URL" in e.value.detail


def test_builtin_for_replicate(make_app):
    app = make_app(STCLOUD_PUBLIC_URL="https://tunnel.example.com")
    with app.app_context():
        cfg, extra, record = service.prepare_for_submit(
            "job_abc", "replicate", {"type": "builtin"},
            {"publishing_config": [{"provider": "s3", "bucket": "mine", "access_key": "K", "secret_key": "S"}]})
        key = credentials.credentials_for_job("job_abc")
    entries = cfg["publishing_config"]
    assert entries[0]["bucket"] == "mine"  # the user's own entries are kept
    entry = entries[1]
    assert entry == {"provider": "s3", "stcloud_builtin": True, "bucket": "outputs", "region": "us-east-1",
                     "access_key": key["access_key_id"], "secret_key": key["secret_access_key"],
                     "base_path": "job_abc/", "endpoint_url": "https://tunnel.example.com/api/cloud/storage",
                     "publish_checkpoints": True}
    assert extra == {}
    assert record["type"] == "builtin" and record["access_key_id"] == key["access_key_id"]
    assert key["secret_access_key"] not in json.dumps(record)
    redacted = service.redact_config(cfg)
    assert key["secret_access_key"] not in json.dumps(redacted) and redacted["publishing_config"][1]["bucket"] == "outputs"


def test_builtin_for_workers_uses_the_local_url(app, live_server):
    with app.app_context():
        cfg, _, record = service.prepare_for_submit("job_w", "worker", {"type": "builtin"}, {})
    assert cfg["publishing_config"][0]["endpoint_url"] == live_server + "/api/cloud/storage"
    assert record["prefix"] == "job_w/"


def test_external_s3_keeps_the_secret_out_of_the_record(app, home):
    delivery = {"type": "s3", "endpoint_url": "https://minio.example.com", "bucket": "models", "prefix": "runs/",
                "access_key_id": "AKX", "secret_access_key": "SECRETX", "region": "eu-west-1"}
    with app.app_context():
        cfg, extra, record = service.prepare_for_submit("job_s3", "replicate", delivery, {})
    assert cfg["publishing_config"] == [{"provider": "s3", "bucket": "models", "region": "eu-west-1",
                                         "access_key": "AKX", "secret_key": "SECRETX", "base_path": "runs/",
                                         "endpoint_url": "https://minio.example.com"}]
    assert "SECRETX" not in json.dumps(record) and record["access_key_id"] == "AKX"
    assert secrets.get(home, "delivery_s3_secret:job_s3") == "SECRETX"


def test_hub_token_only_in_provider_inputs(app, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with app.app_context():
        with pytest.raises(BadRequest) as e:
            service.prepare_for_submit("job_h", "replicate", {"type": "hf", "hub_model_id": "me/lora"}, {})
        assert "HF_TOKEN not set" in e.value.detail
        monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
        cfg, extra, record = service.prepare_for_submit("job_h", "replicate",
                                                        {"type": "hub", "hub_model_id": "me/lora", "private": True}, {})
    assert cfg == {"push_to_hub": True, "hub_model_id": "me/lora"}
    assert extra == {"hf_token": "hf_secret_value", "hub_model_id": "me/lora"}
    assert record == {"type": "hf", "hub_model_id": "me/lora", "private": True, "state": "pending"}


def test_failed_submit_leaves_no_storage_key_or_secret(app, client, live_server, tmp_path):
    """A submit refused after the delivery was prepared (here: a block limit) revokes the
    per-job key and forgets a stored external-S3 secret."""

    data = tmp_path / "ds"
    data.mkdir()
    (data / "a.png").write_bytes(b"\x89PNG a")
    put = client.put("/api/cloud/cost-limits/worker", json={"enabled": True, "amount_usd": 0.0001,
                                                            "period": "monthly", "action": "block"})
    assert put.status_code == 200, put.get_json()
    client.put("/api/cloud/rates", json={"provider": "worker", "hardware": "default", "usd_per_hour": 10})
    before = {c["access_key_id"] for c in client.get("/api/cloud/storage/credentials").get_json()["credentials"]
              if not c.get("revoked_at")}
    body = {"provider": "worker", "name": "refused", "config": {"max_train_steps": 500},
            "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": str(data)}]}
    r = client.post("/api/cloud/jobs/submit", json={**body, "delivery": {"type": "builtin"}})
    assert r.status_code == 402, r.get_json()
    after = {c["access_key_id"] for c in client.get("/api/cloud/storage/credentials").get_json()["credentials"]
             if not c.get("revoked_at")}
    assert after == before
    r = client.post("/api/cloud/jobs/submit", json={**body, "delivery": {
        "type": "s3", "endpoint_url": "http://127.0.0.1:9", "bucket": "my-bucket", "prefix": "p/",
        "access_key": "AK", "secret_key": "SK-never-kept"}})
    assert r.status_code == 402, r.get_json()
    home = Path(app.config["STCLOUD_HOME"])
    assert not (home / "secrets.json").exists()
    assert "SK-never-kept" not in json.dumps(secrets.get_many(home, ""))
