"""Secrets at rest (issue 15 item 5): the encrypted secret store, file modes, the 0011
migration, and one flow that uses every kind of secret and then greps the database files (db,
-wal, -shm), the captured logs and the snapshot repository for each value: none is there."""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from stcloud import config as config_mod
from stcloud import db, secrets
from stcloud.cli import alembic_config
from stcloud.jobs import job_secrets
from stcloud.redact import REDACTED
from tests.accounts.helpers import add_user
from tests.providers.fixtures import dataloader_for, fake, make_dataset, set_consent  # noqa: F401 - fixtures
from tests.snapshots.helpers import everything_ever_committed

pytestmark = pytest.mark.timeout(120)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---- the store ----------------------------------------------------------------------------

def test_store_is_encrypted_with_a_0600_key_and_migrates_secrets_json(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "secrets.json").write_text(json.dumps({"replicate_api_token": "r8_LegacyPlainToken0123456789"}))
    assert secrets.get(home, "replicate_api_token") == "r8_LegacyPlainToken0123456789"
    assert not (home / "secrets.json").exists()  # folded into the encrypted store
    secrets.put(home, "other", "s3cr3t-value-xyz")
    raw = (home / "secrets.enc").read_bytes()
    assert b"r8_Legacy" not in raw and b"s3cr3t-value-xyz" not in raw
    assert mode(home / "secrets.enc") == 0o600 and mode(home / "secret.key") == 0o600
    assert secrets.get_or_create(home, "made", 16) == secrets.get(home, "made")
    assert secrets.delete(home, "other") and secrets.get(home, "other") is None
    assert secrets.delete_where(home, lambda k: k.startswith("ma")) == 1
    # another key cannot read it; a missing key is an error, not an empty store
    (home / "secret.key").unlink()
    with pytest.raises(secrets.SecretStoreError, match="missing"):
        secrets._cache.clear()
        secrets.get(home, "replicate_api_token")


def test_home_is_tightened_to_0700_and_the_database_is_0600(tmp_path, caplog, make_app):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    with caplog.at_level(logging.WARNING):
        config_mod.home_dir(loose)
    assert mode(loose) == 0o700 and "tightened to 0700" in caplog.text
    fresh = config_mod.home_dir(tmp_path / "fresh" / "home")
    assert mode(fresh) == 0o700
    app = make_app()
    home = Path(app.config["STCLOUD_HOME"])
    with app.app_context():
        with db.transaction() as s:  # a write: the -wal exists now
            s.execute(text("CREATE TABLE IF NOT EXISTS t_modes (x INTEGER)"))
        for name in ("stcloud.db", "stcloud.db-wal", "stcloud.db-shm"):
            if (home / name).exists():
                assert mode(home / name) == 0o600, name
        assert (home / "stcloud.db-wal").exists()


# ---- the 0011 migration -------------------------------------------------------------------

def test_migration_moves_existing_secrets_out_of_the_rows(tmp_path):
    home = tmp_path / "mig"
    home.mkdir()
    url = f"sqlite:///{home / 'stcloud.db'}"
    command.upgrade(alembic_config(url), "0010_notify")
    cfg = {"max_train_steps": 5, "--hub_token": "hf_OldRowHubToken0123456789abc",
           "publishing_config": [{"provider": "s3", "access_key": "STCOLD", "secret_key": "old-row-s3-secret-abc"}]}
    dl = [{"id": "remote", "type": "aws", "aws_secret_access_key": "old-row-aws-secret-xyz"}]
    pd = {"archive_dataloader_config": dl}
    conn = sqlite3.connect(home / "stcloud.db")
    conn.execute("INSERT INTO jobs (id, name, provider, status, config, dataloader_config, provider_data, created_at,"
                 " updated_at, attempt, max_attempts, log_seq, log_size, poll_failures, gpu_count, progress, outputs)"
                 " VALUES ('job_old', 'old', 'worker', 'completed', ?, ?, ?, '2026-01-01 00:00:00',"
                 " '2026-01-01 00:00:00', 1, 3, 0, 0, 0, 1, '{}', '[]')",
                 (json.dumps(cfg), json.dumps(dl), json.dumps(pd)))
    conn.commit()
    conn.close()
    # a bare upgrade (no secret store handed in) refuses rather than leave them in clear
    with pytest.raises(RuntimeError, match="stcloud db upgrade"):
        command.upgrade(alembic_config(url), "head")
    command.upgrade(alembic_config(url, str(home)), "head")
    conn = sqlite3.connect(home / "stcloud.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    row = conn.execute("SELECT config, dataloader_config, provider_data FROM jobs WHERE id='job_old'").fetchone()
    conn.close()
    assert json.loads(row[0])["--hub_token"] == REDACTED
    assert json.loads(row[0])["publishing_config"][0]["secret_key"] == REDACTED
    assert json.loads(row[1])[0]["aws_secret_access_key"] == REDACTED
    assert json.loads(row[2])["archive_dataloader_config"][0]["aws_secret_access_key"] == REDACTED
    assert job_secrets.unseal_in(home, "job_old", json.loads(row[0])) == cfg
    assert job_secrets.unseal_in(home, "job_old", json.loads(row[1]), "dataloader") == dl
    for secret in ("hf_OldRowHubToken", "old-row-s3-secret", "old-row-aws-secret"):
        assert secret.encode() not in (home / "stcloud.db").read_bytes()
    # and back
    command.downgrade(alembic_config(url, str(home)), "0010_notify")
    conn = sqlite3.connect(home / "stcloud.db")
    assert json.loads(conn.execute("SELECT config FROM jobs").fetchone()[0]) == cfg
    conn.close()


# ---- every kind of secret, then grep ------------------------------------------------------

R8 = "r8_AtRestProviderToken0123456789AB"
HF_DELIVERY = "hf_AtRestDeliveryToken0123456789AB"
HUB_CFG = "hf_AtRestConfigHubToken0123456789A"
HOOK_TOKEN = "atrest-config-webhook-token-9f8e7d"
WHSEC = "whsec_AtRestNotifySigningSecret0123456789"
S3_EXT = "atrest-external-s3-secret-key-1a2b3c"


def test_no_secret_is_readable_at_rest(make_app, fake, monkeypatch, tmp_path, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.base_url)
    monkeypatch.setenv("HF_TOKEN", HF_DELIVERY)
    fake.tokens.add(R8)
    app = make_app(REPLICATE_BACKOFF=0.05, REPLICATE_RETRY_AFTER_CAP=0, REPLICATE_TIMEOUT=10,
                   REPLICATE_STATUS_URL="http://127.0.0.1:9/api/v2/status.json")
    home = Path(app.config["STCLOUD_HOME"])
    c = app.test_client()
    # provider token, API key, notification webhook secret, worker token
    assert c.put("/api/cloud/providers/replicate/token", json={"token": R8}).status_code == 200
    admin = add_user(app, "ada", "admin")
    assert c.get("/api/cloud/jobs", headers=admin.headers).status_code == 200
    r = c.put("/api/cloud/settings/notifications",
              json={"webhook": {"enabled": True, "url": "http://127.0.0.1:9/hook", "secret": WHSEC}})
    assert r.status_code == 200, r.get_json()
    w = c.post("/api/cloud/workers", json={"name": "at-rest-box"}).get_json()
    worker_token = w["token"]
    wh = {"Authorization": f"Bearer {worker_token}"}

    ds = make_dataset(tmp_path / "data")
    cfg = {"max_train_steps": 10, "--hub_token": HUB_CFG,
           "webhook_config": {"webhook_type": "raw", "callback_url": "https://hooks.example/x", "auth_token": HOOK_TOKEN}}
    # a worker job delivering to this machine (a per-job S3 key), one to an external bucket
    r = c.post("/api/cloud/jobs/submit", json={"provider": "worker", "name": "at-rest-worker", "config": cfg,
                                               "dataloader_config": dataloader_for(ds), "delivery": {"type": "builtin"}})
    assert r.status_code == 201, r.get_json()
    worker_job = r.get_json()["job"]["id"]
    r = c.post("/api/cloud/jobs/submit", json={
        "provider": "worker", "name": "at-rest-s3", "config": {"max_train_steps": 10},
        "dataloader_config": dataloader_for(ds),
        "delivery": {"type": "s3", "endpoint_url": "http://127.0.0.1:9", "bucket": "my-bucket",
                     "access_key": "AKATREST", "secret_key": S3_EXT}})
    assert r.status_code == 201, r.get_json()
    # a Replicate job publishing to the Hub (the HF token goes only into the provider input)
    set_consent(c, "allow")
    r = c.post("/api/cloud/jobs/submit", json={"provider": "replicate", "name": "at-rest-replicate", "config": cfg,
                                               "dataloader_config": dataloader_for(ds), "data_consent": True,
                                               "delivery": {"type": "hf", "hub_model_id": "me/at-rest"}})
    assert r.status_code == 201, r.get_json()
    replicate_job = r.get_json()["job"]["id"]

    # the job rows keep only the places; the API shows [redacted]
    shown = c.get(f"/api/cloud/jobs/{worker_job}").get_json()["job"]["config"]
    assert shown["--hub_token"] == REDACTED and shown["webhook_config"]["auth_token"] == REDACTED

    # those who need them get them: Replicate's input, the worker's claim
    inputs = [p.get("input") or {} for p in fake.predictions.values()]
    assert len(inputs) == 1 and replicate_job
    assert HUB_CFG in inputs[0]["config_json"] and inputs[0]["hf_token"] == HF_DELIVERY
    assert c.post("/api/workers/register", json={"hostname": "h", "agent_version": "t", "gpus": []},
                  headers=wh).status_code == 200
    claimed = c.post("/api/workers/claim", headers=wh).get_json()["job"]
    assert claimed["id"] == worker_job
    assert claimed["config"]["--hub_token"] == HUB_CFG
    assert claimed["config"]["webhook_config"]["auth_token"] == HOOK_TOKEN
    per_job = [e["secret_key"] for e in claimed["config"]["publishing_config"] if e.get("secret_key")]
    assert per_job and all(len(s) >= 20 and s != REDACTED for s in per_job)
    storage_secret = claimed["storage"]["secret_access_key"]
    claimed2 = c.post("/api/workers/claim", headers={"Authorization": f"Bearer {worker_token}"})
    assert claimed2.status_code in (200, 204, 409)

    values = {"provider token": R8, "API key": admin.key, "notify webhook secret": WHSEC,
              "worker token": worker_token, "hub token (config)": HUB_CFG, "hub token (delivery)": HF_DELIVERY,
              "webhook token (config)": HOOK_TOKEN, "external S3 secret": S3_EXT,
              "per-job S3 secret": storage_secret, **{f"per-job S3 secret {i}": s for i, s in enumerate(per_job)}}

    db_files = [home / n for n in ("stcloud.db", "stcloud.db-wal", "stcloud.db-shm") if (home / n).exists()]
    assert home / "stcloud.db-wal" in db_files
    places = {str(p): p.read_bytes() for p in db_files}
    # control: what is not secret (the external bucket's access key id) is readable there
    assert any(b"AKATREST" in data for data in places.values())
    places["captured logs"] = caplog.text.encode()
    for log_file in (home / "logs").rglob("*"):
        if log_file.is_file():
            places[str(log_file)] = log_file.read_bytes()
    repo = home / "configs"
    assert repo.exists()
    places["snapshot repository (history and every object)"] = everything_ever_committed(repo).encode()
    for f in repo.rglob("*"):
        if f.is_file():
            places[str(f)] = f.read_bytes()
    places["secret store file"] = (home / "secrets.enc").read_bytes()
    items = list((home / "secrets.d").glob("*.enc"))
    assert items  # the jobs' secrets, one file per job and part
    for f in items:
        places[str(f)] = f.read_bytes()
        assert mode(f) == 0o600
    found = [(what, where) for what, value in values.items() for where, data in places.items()
             if value.encode() in data]
    assert found == []
    # and after a checkpoint folds the WAL into the database file
    app.extensions["stcloud.db"].dispose()
    conn = sqlite3.connect(home / "stcloud.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = (home / "stcloud.db").read_bytes()
    assert [w for w, v in values.items() if v.encode() in data] == []
    for p in db_files + [home / "secrets.enc", home / "secret.key"]:
        if p.exists():
            assert mode(p) == 0o600, p
    assert mode(home) == 0o700 and mode(home / "secrets.d") == 0o700
