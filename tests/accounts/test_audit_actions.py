"""Audit records the earlier tests left loose: per-user limit changes (``user.limits``), a
re-run that succeeds (and one that is refused), and ``stcloud audit export``."""
import json

import pytest
from click.testing import CliRunner

from stcloud.accounts import audit
from stcloud.accounts.cli import audit_group
from stcloud.trainer.sample import ensure_sample
from tests.accounts.helpers import add_user


@pytest.fixture
def crew(secure_app):
    return {"ada": add_user(secure_app, "ada", "admin"), "mia": add_user(secure_app, "mia", "member"),
            "max": add_user(secure_app, "max", "member")}


def _records(app, **filters):
    with app.app_context():
        return list(reversed(audit.query(limit=1000, **filters)))


def _submit(app, member) -> str:
    sample = ensure_sample(app.config["STCLOUD_HOME"])
    body = {"provider": "local", "name": "audited rerun", "config": json.loads(open(sample["config_path"]).read()),
            "dataloader_config": json.loads(open(sample["dataloader_path"]).read())}
    r = app.test_client().post("/api/cloud/jobs/submit", json=body, headers=member.headers)
    assert r.status_code == 201, r.get_data(as_text=True)
    return r.json["job"]["id"]


def test_per_user_limit_changes_are_recorded(secure_app, crew):
    c = secure_app.test_client()
    h = crew["ada"].headers
    r = c.patch("/api/cloud/users/mia", json={"max_concurrent_jobs": 3, "spend_limit_usd": 25.0,
                                              "spend_period": "weekly", "spend_action": "warn"}, headers=h)
    assert r.status_code == 200, r.json
    assert c.patch("/api/cloud/users/mia", json={"approval_threshold_usd": 4.5}, headers=h).status_code == 200
    assert c.patch("/api/cloud/users/mia", json={"spend_limit_usd": None}, headers=h).status_code == 200
    # refused: bad value (recorded as failed), a member trying (recorded as denied)
    assert c.patch("/api/cloud/users/mia", json={"spend_period": "hourly"}, headers=h).status_code == 422
    assert c.patch("/api/cloud/users/mia", json={"max_concurrent_jobs": 99},
                   headers=crew["mia"].headers).status_code == 403
    got = [(r["actor"], r["action"], r["target"], r["outcome"], r["detail"])
           for r in _records(secure_app, action="user.*") if r["action"] != "user.create"]
    assert got == [
        ("ada", "user.limits", "mia", "ok", {"max_concurrent_jobs": 3, "spend_limit_usd": 25.0,
                                             "spend_period": "weekly", "spend_action": "warn"}),
        ("ada", "user.limits", "mia", "ok", {"approval_threshold_usd": 4.5}),
        ("ada", "user.limits", "mia", "ok", {"spend_limit_usd": None}),
        ("ada", "user.update", "mia", "failed", {"fields": ["spend_period"], "status": 422}),
        ("mia", "user.update", "mia", "denied", {"fields": ["max_concurrent_jobs"], "status": 403}),
    ]
    with secure_app.app_context():
        assert audit.verify().ok


def test_a_successful_rerun_is_recorded_ok_and_a_refused_one_failed(secure_app, crew):
    c = secure_app.test_client()
    job_id = _submit(secure_app, crew["mia"])
    assert c.post(f"/api/cloud/jobs/{job_id}/cancel", json={}, headers=crew["mia"].headers).status_code == 200
    r = c.post(f"/api/cloud/jobs/{job_id}/rerun", json={}, headers=crew["mia"].headers)
    assert r.status_code == 201, r.json
    new_id = r.json["job"]["id"]
    assert new_id != job_id and r.json["job"]["rerun_of"] == job_id
    # another member's job does not exist for max: refused, recorded as failed
    assert c.post(f"/api/cloud/jobs/{job_id}/rerun", json={}, headers=crew["max"].headers).status_code == 404
    # a viewer may not re-run at all: denied
    vic = add_user(secure_app, "vic", "viewer")
    assert c.post(f"/api/cloud/jobs/{job_id}/rerun", json={}, headers=vic.headers).status_code == 403
    got = [(r["actor"], r["target"], r["outcome"]) for r in _records(secure_app, action="job.rerun")]
    assert got == [("mia", job_id, "ok"), ("max", job_id, "failed"), ("vic", job_id, "denied")]


def test_audit_export_cli_writes_json_lines(secure_app, crew, home, monkeypatch):
    c = secure_app.test_client()
    c.post("/api/auth/login", json={"username": "mia", "password": "wrong"})
    assert c.patch("/api/cloud/users/mia", json={"max_concurrent_jobs": 2}, headers=crew["ada"].headers).status_code \
        == 200
    assert c.post("/api/cloud/workers", json={"name": "gpu-x"}, headers=crew["ada"].headers).status_code == 201
    monkeypatch.setenv("STCLOUD_HOME", str(home))
    monkeypatch.setenv("STCLOUD_DATABASE_URL", secure_app.config["STCLOUD_DATABASE_URL"])
    runner = CliRunner()

    out = runner.invoke(audit_group, ["export"])
    assert out.exit_code == 0, out.output
    lines = [json.loads(x) for x in out.output.splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))  # every record, oldest first
    assert [x["action"] for x in lines][-3:] == ["auth.login", "user.limits", "worker.create"]
    assert all(x["hash"] and x["prev_hash"] for x in lines) and lines[1]["prev_hash"] == lines[0]["hash"]

    only = runner.invoke(audit_group, ["export", "--actor", "ada", "--action", "user.*"])
    assert only.exit_code == 0
    assert [(x["actor"], x["action"], x["target"]) for x in map(json.loads, only.output.splitlines())] == [
        ("ada", "user.limits", "mia")]
    assert runner.invoke(audit_group, ["export", "--since", "2999-01-01T00:00:00Z"]).output == ""

    bad = runner.invoke(audit_group, ["export", "--since", "last tuesday"])
    assert bad.exit_code != 0 and "--since must be an ISO-8601 time" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
