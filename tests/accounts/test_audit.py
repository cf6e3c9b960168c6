"""The audit log: one record per state-changing action (who, what, target, client address,
outcome), hash-chained; `stcloud audit verify` fails once a record is edited or removed."""
import json
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from stcloud import db
from stcloud.accounts import audit
from stcloud.accounts.cli import audit_group
from stcloud.jobs import service as jobs
from stcloud.trainer.sample import ensure_sample
from tests.accounts.helpers import PASSWORD, add_user, login, set_owner
from tests.jobs.factories import make_job


@pytest.fixture
def ada(secure_app):
    return add_user(secure_app, "ada", "admin")


def _records(app, **filters) -> list[dict]:
    with app.app_context():
        return audit.query(limit=1000, **filters)


def _actions(app) -> list[tuple]:
    return [(r["actor"], r["action"], r["outcome"]) for r in reversed(_records(app))]


def test_every_listed_action_is_recorded(secure_app, ada):
    app, h = secure_app, ada.headers
    c = app.test_client()
    mia = add_user(app, "mia", "member")

    # sign-in: success, failure, logout
    s = app.test_client()
    assert s.post("/api/auth/login", json={"username": "mia", "password": "nope"}).status_code == 401
    login(s, "mia")
    assert s.post("/api/auth/logout", json={}).status_code == 204
    # users and roles
    assert c.post("/api/cloud/users", json={"username": "vic", "role": "viewer"}, headers=h).status_code == 201
    assert c.patch("/api/cloud/users/vic", json={"role": "member"}, headers=h).status_code == 200
    assert c.patch("/api/cloud/users/vic", json={"disabled": True}, headers=h).status_code == 200
    assert c.delete("/api/cloud/users/vic", headers=h).status_code == 204
    # API keys
    key = c.post("/api/cloud/tokens", json={"name": "ci", "expires_in_days": 7}, headers=h).json
    assert c.delete(f"/api/cloud/tokens/{key['id']}", headers=h).status_code == 204
    # provider settings and token, limits, consent
    assert c.put("/api/cloud/providers/replicate", json={"hardware": "gpu-a100-large"}, headers=h).status_code == 200
    assert c.put("/api/cloud/providers/replicate/token", json={"token": "r8_secretvalue123"}, headers=h).status_code == 200
    assert c.delete("/api/cloud/providers/replicate/token", headers=h).status_code == 200
    r = c.put("/api/cloud/cost-limits/all", json={"enabled": True, "amount_usd": 50, "period": "monthly",
                                                  "action": "block"}, headers=h)
    assert r.status_code == 200, r.json
    assert c.put("/api/cloud/settings/consent", json={"consent": "allow"}, headers=h).status_code == 200
    # jobs: submit (a member), cancel, delete, re-run
    sample = ensure_sample(app.config["STCLOUD_HOME"])
    body = {"provider": "local", "name": "audited", "config": json.loads(open(sample["config_path"]).read()),
            "dataloader_config": json.loads(open(sample["dataloader_path"]).read())}
    r = c.post("/api/cloud/jobs/submit", json=body, headers=mia.headers)
    assert r.status_code in (200, 201, 202), r.json
    job_id = r.json["job"]["id"]
    assert c.post(f"/api/cloud/jobs/{job_id}/cancel", json={}, headers=mia.headers).status_code == 200
    r = c.post(f"/api/cloud/jobs/{job_id}/rerun", json={}, headers=mia.headers)
    assert r.status_code == 201, r.json
    rerun_id = r.json["job"]["id"]
    assert c.post(f"/api/cloud/jobs/{rerun_id}/cancel", json={}, headers=mia.headers).status_code == 200
    assert c.delete(f"/api/cloud/jobs/{job_id}", headers=mia.headers).status_code == 204
    # S3 credentials, workers
    cred = c.post("/api/cloud/storage/credentials", json={"bucket": "audit-b"}, headers=h).json
    assert c.delete(f"/api/cloud/storage/credentials/{cred['access_key_id']}", headers=h).status_code == 200
    worker = c.post("/api/cloud/workers", json={"name": "gpu-1"}, headers=h).json
    assert c.post(f"/api/cloud/workers/{worker['worker_id']}/rotate-token", json={}, headers=h).status_code == 200
    assert c.post(f"/api/cloud/workers/{worker['worker_id']}/drain", json={}, headers=h).status_code == 200
    # a refused attempt is recorded too
    assert c.post("/api/cloud/workers", json={"name": "x"}, headers=mia.headers).status_code == 403

    got = _actions(app)
    expected = [
        ("anonymous", "auth.login", "denied"), ("mia", "auth.login", "ok"), ("mia", "auth.logout", "ok"),
        ("ada", "user.create", "ok"), ("ada", "user.role", "ok"), ("ada", "user.disable", "ok"),
        ("ada", "user.delete", "ok"), ("ada", "token.create", "ok"), ("ada", "token.revoke", "ok"),
        ("ada", "provider.settings", "ok"), ("ada", "provider.token.set", "ok"),
        ("ada", "provider.token.delete", "ok"), ("ada", "limit.update", "ok"), ("ada", "consent.update", "ok"),
        ("mia", "job.submit", "ok"), ("mia", "job.cancel", "ok"), ("mia", "job.rerun", "ok"),
        ("mia", "job.cancel", "ok"),
        ("mia", "job.delete", "ok"), ("ada", "s3.credential.mint", "ok"), ("ada", "s3.credential.revoke", "ok"),
        ("ada", "worker.create", "ok"), ("ada", "worker.rotate", "ok"), ("ada", "worker.drain", "ok"),
        ("mia", "worker.create", "denied"),
    ]
    assert [g for g in got if g[1] != "user.create" or g[0] != "system"][-len(expected):] == expected

    by_action = {r["action"]: r for r in _records(app)}
    assert by_action["job.submit"]["target"] == job_id and by_action["job.cancel"]["target"] == job_id
    assert by_action["user.role"]["detail"] == {"role": "member"} and by_action["user.role"]["target"] == "vic"
    assert by_action["token.revoke"]["target"] == key["id"] and by_action["token.revoke"]["key_id"] == ada.key_id
    assert by_action["s3.credential.mint"]["target"] == cred["access_key_id"]
    assert by_action["worker.drain"]["target"] == worker["worker_id"]
    assert by_action["auth.login"]["client_addr"] == "127.0.0.1"
    token_set = json.dumps(by_action["provider.token.set"])
    assert "r8_secretvalue123" not in token_set and "token" in token_set  # named, never the value
    with app.app_context():
        assert audit.verify().ok


def test_client_address_through_trusted_proxies_only(secure_app, ada):
    c = secure_app.test_client()
    xff = {"X-Forwarded-For": "203.0.113.9"}
    c.post("/api/auth/login", json={"username": "x", "password": "y"}, headers=xff)
    assert _records(secure_app, action="auth.login")[0]["client_addr"] == "127.0.0.1"
    r = c.put("/api/cloud/providers/replicate", json={"trusted_proxies": ["127.0.0.1/32"]}, headers=ada.headers)
    assert r.status_code == 200
    c.post("/api/auth/login", json={"username": "x", "password": "y"}, headers=xff)
    assert _records(secure_app, action="auth.login")[0]["client_addr"] == "203.0.113.9"


def test_audit_api_filters_and_jsonl_export(secure_app, ada):
    c = secure_app.test_client()
    add_user(secure_app, "mia", "member")
    login(secure_app.test_client(), "mia")
    c.post("/api/auth/login", json={"username": "mia", "password": "bad"})
    jid = make_job(secure_app, "running")
    set_owner(secure_app, jid, None)
    c.post(f"/api/cloud/jobs/{jid}/cancel", json={}, headers=ada.headers)
    h = ada.headers
    assert {r["actor"] for r in c.get("/api/cloud/audit?actor=mia", headers=h).json["records"]} == {"mia"}
    assert [r["action"] for r in c.get("/api/cloud/audit?action=job.*", headers=h).json["records"]] == ["job.cancel"]
    assert len(c.get("/api/cloud/audit?limit=2", headers=h).json["records"]) == 2
    assert c.get("/api/cloud/audit?since=2999-01-01T00:00:00Z", headers=h).json["records"] == []
    bad = c.get("/api/cloud/audit?since=yesterday", headers=h)
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json"
    exported = c.get("/api/cloud/audit?format=jsonl", headers=h)
    assert exported.mimetype == "application/x-ndjson"
    lines = [json.loads(x) for x in exported.get_data(as_text=True).splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
    assert all(x["hash"] and x["prev_hash"] for x in lines)
    member = add_user(secure_app, "mo", "member")
    assert c.get("/api/cloud/audit", headers=member.headers).status_code == 403
    page = c.get("/audit?action=job.cancel&verify=1", headers=h).get_data(as_text=True)
    assert "job.cancel" in page and "The chain is intact" in page


@pytest.mark.parametrize("tamper", [
    "UPDATE audit_log SET outcome = 'ok' WHERE seq = 2",
    "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3",
    "DELETE FROM audit_log WHERE seq = 2",
    "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
])
def test_verify_fails_after_a_record_is_edited_or_removed(secure_app, home, monkeypatch, tamper):
    c = secure_app.test_client()
    c.post("/api/auth/login", json={"username": "admin", "password": "wrong"})
    c.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
    add_user(secure_app, "mia", "member")
    monkeypatch.setenv("STCLOUD_HOME", str(home))
    monkeypatch.setenv("STCLOUD_DATABASE_URL", secure_app.config["STCLOUD_DATABASE_URL"])
    ok = CliRunner().invoke(audit_group, ["verify"])
    assert ok.exit_code == 0 and "audit log intact" in ok.output
    with secure_app.app_context(), db.transaction() as s:
        s.execute(text(tamper))
    broken = CliRunner().invoke(audit_group, ["verify"])
    assert broken.exit_code == 1 and "BROKEN" in broken.output
    with secure_app.app_context():
        assert not audit.verify().ok


def test_concurrent_appends_keep_one_chain(secure_app):
    def write(n):
        with secure_app.app_context():
            for i in range(10):
                audit.record("test.concurrent", target=f"{n}-{i}", actor="system")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with secure_app.app_context():
        result = audit.verify()
    assert result.ok and len(_records(secure_app, action="test.concurrent")) == 40


def test_background_cancel_is_recorded_as_system(secure_app):
    job_id = make_job(secure_app, "running", provider="worker")
    with secure_app.app_context():
        jobs.cancel(job_id, source="scheduler", reason="spend cap reached")
        jobs.cancel(job_id, source="scheduler", reason="again")  # already cancelled: nothing new
    rec = _records(secure_app, action="job.cancel")
    assert len(rec) == 1 and rec[0]["actor"] == "system" and rec[0]["target"] == job_id
    assert rec[0]["detail"] == {"source": "scheduler", "reason": "spend cap reached"}


def test_refused_account_changes_are_recorded_once(secure_app, ada):
    c = secure_app.test_client()
    add_user(secure_app, "mia", "member")
    assert c.post("/api/cloud/users", json={"username": "mia", "role": "viewer"}, headers=ada.headers).status_code == 409
    s = secure_app.test_client()
    login(s, "mia")
    r = s.post("/api/cloud/me/password", json={"current_password": "nope", "new_password": "whatever-1"})
    assert r.status_code == 401
    got = [(r["actor"], r["action"], r["outcome"]) for r in _records(secure_app, action="user.*")]
    assert ("ada", "user.create", "failed") in got
    assert [g for g in got if g[1] == "user.password"] == [("mia", "user.password", "denied")]
