"""Approvals end to end through the API with an admin, a member and a viewer (SPEC §13): a job
estimated above the threshold waits in ``pending_approval`` holding its reservation (the spend
limits count it), is approved (launched through the normal provider path) or rejected
(``cancelled``, reservation released, reason recorded), both audited; wrong state → 409;
the CLI commands."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stcloud import db
from stcloud.cli import main as cli_main
from stcloud.models import Job, Notification
from tests.accounts.helpers import team
from tests.conftest import serve_in_thread

pytestmark = pytest.mark.timeout(120)

STEPS = 500  # × the worker pool's default seconds per step and rate: the estimate below


@pytest.fixture
def secure(make_app):
    return make_app(STCLOUD_AUTH="on")


@pytest.fixture
def crew(secure):
    members = team(secure)
    r = secure.test_client().put("/api/cloud/rates", json={"provider": "worker", "usd_per_hour": 36},
                                 headers=members["admin"].headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    return members


@pytest.fixture
def dataset(tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    for i in range(3):
        (data / f"img{i}.txt").write_text(f"caption {i}\n")
        (data / f"img{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([i]))  # a dataset needs images
    return str(data)


def _body(dataset, name="big run", steps=STEPS):
    return {"provider": "worker", "name": name, "config": {"max_train_steps": steps},
            "dataloader_config": [{"id": "d", "type": "local", "instance_data_dir": dataset}]}


def _estimate(c, who, dataset) -> float:
    r = c.post("/api/cloud/cost-estimate", json={"provider": "worker", "config": {"max_train_steps": STEPS}},
               headers=who.headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json["p90_usd"] if r.json["p90_usd"] is not None else r.json["estimated_cost_usd"]


def _threshold(c, admin, value):
    r = c.put("/api/cloud/settings/approval", json={"threshold_usd": value}, headers=admin.headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json


def _reserved(c, admin) -> float:
    return c.get("/api/cloud/cost-limit/status?provider=all", headers=admin.headers).json["reserved_usd"]


def _audit(c, admin, action) -> list[dict]:
    r = c.get(f"/api/cloud/audit?action={action}", headers=admin.headers)
    assert r.status_code == 200
    return r.json["records"]


def test_threshold_setting_is_admin_only_and_validated(secure, crew):
    c = secure.test_client()
    admin, member, viewer = crew["admin"], crew["member"], crew["viewer"]
    assert c.get("/api/cloud/settings/approval", headers=viewer.headers).json == {"threshold_usd": None}
    for who in (member, viewer):
        assert c.put("/api/cloud/settings/approval", json={"threshold_usd": 1}, headers=who.headers).status_code == 403
    for bad in (-1, "ten", True, 2e6):
        r = c.put("/api/cloud/settings/approval", json={"threshold_usd": bad}, headers=admin.headers)
        assert r.status_code == 400 and r.json["field"] == "threshold_usd", (bad, r.json)
    r = c.put("/api/cloud/settings/approval", json={"limit": 1}, headers=admin.headers)
    assert r.status_code == 400 and r.json["field"] == "limit"
    assert _threshold(c, admin, 2.5) == {"threshold_usd": 2.5}
    assert _threshold(c, admin, None) == {"threshold_usd": None}


def test_approval_flow_three_roles(secure, crew, dataset):
    c = secure.test_client()
    admin, member, member2, viewer = crew["admin"], crew["member"], crew["member2"], crew["viewer"]
    amount = _estimate(c, member, dataset)
    assert amount > 0.01
    _threshold(c, admin, round(amount / 2, 4))
    # a global block limit with room for exactly one waiting job: a held job's reservation counts
    r = c.put("/api/cloud/cost-limits/all", json={"amount_usd": amount * 1.5, "period": "monthly",
                                                  "action": "block"}, headers=admin.headers)
    assert r.status_code == 200, r.get_data(as_text=True)

    r = c.post("/api/cloud/jobs/submit", json=_body(dataset), headers=member.headers)
    assert r.status_code == 201, r.get_data(as_text=True)
    job = r.json["job"]
    job_id = job["id"]
    assert job["status"] == "pending_approval"
    assert job["approval"]["state"] == "pending" and job["approval"]["requested_by"] == "mia"
    assert job["approval"]["amount_usd"] == pytest.approx(amount, rel=1e-6)
    assert any("approval" in w for w in r.json["warnings"])
    assert job["provider_job_id"] is None and job["cost_usd"] is None
    with secure.app_context(), db.session() as s:
        row = s.get(Job, job_id)
        assert row.archive_path is None  # nothing packaged while it waits
    assert _reserved(c, admin) == pytest.approx(amount, rel=1e-3)

    # the reservation is held: a second job of the same size no longer fits the block limit
    r = c.post("/api/cloud/jobs/submit", json=_body(dataset, "second"), headers=member2.headers)
    assert r.status_code == 402, r.get_data(as_text=True)

    # who may decide: admins; members and viewers are refused, others' jobs stay hidden
    for who in (member, viewer, member2):
        assert c.post(f"/api/cloud/jobs/{job_id}/approve", json={}, headers=who.headers).status_code == 403
        assert c.post(f"/api/cloud/jobs/{job_id}/reject", json={}, headers=who.headers).status_code == 403
    assert c.get(f"/api/cloud/jobs/{job_id}", headers=member2.headers).status_code == 404
    assert c.post("/api/cloud/jobs/job_nope/approve", json={}, headers=admin.headers).status_code == 404
    listed = c.get("/api/cloud/jobs?status=pending_approval", headers=admin.headers).json
    assert [j["id"] for j in listed["jobs"]] == [job_id]

    r = c.post(f"/api/cloud/jobs/{job_id}/approve", json={}, headers=admin.headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    approved = r.json["job"]
    assert approved["status"] == "queued"  # launched through the worker pool's normal path
    assert approved["approval"]["state"] == "approved" and approved["approval"]["decided_by"] == "ada"
    with secure.app_context(), db.session() as s:
        assert s.get(Job, job_id).archive_path  # packaged at approval
    events = c.get(f"/api/cloud/jobs/{job_id}/events", headers=admin.headers).json["events"]
    moves = [(e["from"], e["to"]) for e in events if e["accepted"]]
    assert moves == [("pending", "pending_approval"), ("pending_approval", "uploading"), ("uploading", "queued")]
    assert _reserved(c, admin) == pytest.approx(amount, rel=1e-3)  # still held while it is unfinished

    # wrong state: 409 for both decisions
    for action in ("approve", "reject"):
        r = c.post(f"/api/cloud/jobs/{job_id}/{action}", json={}, headers=admin.headers)
        assert r.status_code == 409 and "queued" in r.json["detail"], r.json

    records = _audit(c, admin, "job.approve")
    assert [(a["actor"], a["target"], a["outcome"]) for a in records if a["outcome"] == "ok"] == [("ada", job_id, "ok")]
    assert any(a["actor"] == "mia" and a["outcome"] == "denied" for a in records)


def test_reject_cancels_with_the_reason_and_releases_the_reservation(secure, crew, dataset):
    c = secure.test_client()
    admin, member = crew["admin"], crew["member"]
    amount = _estimate(c, member, dataset)
    _threshold(c, admin, round(amount / 2, 4))
    job_id = c.post("/api/cloud/jobs/submit", json=_body(dataset), headers=member.headers).json["job"]["id"]
    assert _reserved(c, admin) == pytest.approx(amount, rel=1e-3)

    r = c.post(f"/api/cloud/jobs/{job_id}/reject", json={"reason": "x" * 501}, headers=admin.headers)
    assert r.status_code == 400 and r.json["field"] == "reason"
    r = c.post(f"/api/cloud/jobs/{job_id}/reject", json={"reason": "too expensive for a test"}, headers=admin.headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    job = r.json["job"]
    assert job["status"] == "cancelled" and job["cost_usd"] is None
    assert job["error"] == "rejected by ada: too expensive for a test"
    assert job["approval"] == {**job["approval"], "state": "rejected", "reason": "too expensive for a test",
                               "decided_by": "ada"}
    assert _reserved(c, admin) == 0
    summary = c.get("/api/cloud/costs/summary", headers=admin.headers).json
    assert summary["totals"]["cost_usd"] == 0  # billed nothing
    r = c.post(f"/api/cloud/jobs/{job_id}/reject", json={}, headers=admin.headers)
    assert r.status_code == 409
    rec = _audit(c, admin, "job.reject")
    assert [(a["target"], a["detail"]["reason"]) for a in rec if a["outcome"] == "ok"] == [
        (job_id, "too expensive for a test")]
    assert sorted(a["detail"]["status"] for a in rec if a["outcome"] != "ok") == [400, 409]
    # the member sees why in the job's own record
    mine = c.get(f"/api/cloud/jobs/{job_id}", headers=member.headers).json["job"]
    assert mine["approval"]["reason"] == "too expensive for a test"


def test_a_waiting_job_is_cancellable_by_its_owner(secure, crew, dataset):
    c = secure.test_client()
    admin, member = crew["admin"], crew["member"]
    _threshold(c, admin, 0)
    job_id = c.post("/api/cloud/jobs/submit", json=_body(dataset), headers=member.headers).json["job"]["id"]
    r = c.post(f"/api/cloud/jobs/{job_id}/cancel", json={}, headers=member.headers)
    assert r.status_code == 200 and r.json["job"]["status"] == "cancelled"
    assert _reserved(c, admin) == 0
    assert c.post(f"/api/cloud/jobs/{job_id}/approve", json={}, headers=admin.headers).status_code == 409


def test_per_user_threshold_overrides_the_instance(secure, crew, dataset):
    c = secure.test_client()
    admin, member, member2 = crew["admin"], crew["member"], crew["member2"]
    _threshold(c, admin, 0)
    r = c.patch("/api/cloud/users/mia", json={"approval_threshold_usd": 1e5}, headers=admin.headers)
    assert r.status_code == 200 and r.json["user"]["limits"]["approval_threshold_usd"] == 1e5
    r = c.patch("/api/cloud/users/mia", json={"approval_threshold_usd": -3}, headers=admin.headers)
    assert r.status_code in (400, 422) and r.json["field"] == "approval_threshold_usd"
    trusted = c.post("/api/cloud/jobs/submit", json=_body(dataset, "mia's"), headers=member.headers).json["job"]
    held = c.post("/api/cloud/jobs/submit", json=_body(dataset, "max's"), headers=member2.headers).json["job"]
    assert trusted["status"] == "queued" and trusted["approval"] is None
    assert held["status"] == "pending_approval" and held["approval"]["threshold_source"] == "instance"


def test_approval_request_notifies_the_instance_channels(secure, crew, dataset):
    c = secure.test_client()
    admin, member = crew["admin"], crew["member"]
    r = c.put("/api/cloud/settings/notifications", headers=admin.headers,
              json={"slack": {"enabled": True, "url": "http://127.0.0.1:9/slack"}})
    assert r.status_code == 200, r.get_data(as_text=True)
    _threshold(c, admin, 0)
    job_id = c.post("/api/cloud/jobs/submit", json=_body(dataset), headers=member.headers).json["job"]["id"]
    with secure.app_context(), db.session() as s:
        rows = s.query(Notification).filter(Notification.event == "approval.requested").all()
        assert [(n.channel, n.job_id) for n in rows] == [("slack", job_id)]
        data = rows[0].payload["data"]["job"]
        assert data["requested_by"] == "mia" and data["threshold_usd"] == 0


def test_job_page_buttons_and_awaiting_filter(secure, crew, dataset):
    c = secure.test_client()
    admin, member = crew["admin"], crew["member"]
    _threshold(c, admin, 0)
    job_id = c.post("/api/cloud/jobs/submit", json=_body(dataset), headers=member.headers).json["job"]["id"]
    page = c.get(f"/jobs/{job_id}", headers=admin.headers).get_data(as_text=True)
    assert 'id="approve-button"' in page and 'id="reject-button"' in page and "Awaiting approval" in page
    page = c.get(f"/jobs/{job_id}", headers=member.headers).get_data(as_text=True)
    assert "Awaiting approval" in page and 'id="approve-button"' not in page
    listing = c.get("/jobs?status=pending_approval", headers=admin.headers).get_data(as_text=True)
    assert job_id in listing and 'id="awaiting-approval"' in listing
    spend = c.get("/spend/approval", headers=admin.headers).get_data(as_text=True)
    assert 'id="approval-threshold"' in spend and 'value="0.0"' in spend


def test_cli_approve_and_reject(secure, crew, dataset):
    c = secure.test_client()
    admin, member = crew["admin"], crew["member"]
    _threshold(c, admin, 0)
    first = c.post("/api/cloud/jobs/submit", json=_body(dataset, "one"), headers=member.headers).json["job"]["id"]
    second = c.post("/api/cloud/jobs/submit", json=_body(dataset, "two"), headers=member.headers).json["job"]["id"]
    runner = CliRunner()
    with serve_in_thread(secure) as url:
        base = ["--server", url, "--token"]
        out = runner.invoke(cli_main, ["jobs", "approve", *base, member.key, first])
        assert out.exit_code == 1 and out.output.startswith("error:") and out.output.count("\n") == 1, out.output
        assert "admin" in out.output
        out = runner.invoke(cli_main, ["jobs", "approve", *base, admin.key, first])
        assert out.exit_code == 0, out.output
        assert out.output == f"approved {first}: queued on worker\n"
        out = runner.invoke(cli_main, ["jobs", "approve", *base, admin.key, first])
        assert out.exit_code == 1 and "not pending_approval" in out.output
        out = runner.invoke(cli_main, ["jobs", "reject", *base, admin.key, second, "--reason", "duplicate", "--json"])
        assert out.exit_code == 0, out.output
        job = json.loads(out.output)["job"]
        assert job["status"] == "cancelled" and job["approval"]["reason"] == "duplicate"


def test_decisions_from_the_job_page_and_threshold_from_the_spend_page(secure, crew, dataset):
    from tests.accounts.helpers import login
    from tests.conftest import csrf_of

    api = secure.test_client()
    admin, member = crew["admin"], crew["member"]
    page = secure.test_client()
    login(page, "ada")
    token = csrf_of(page)
    hx = {"HX-Request": "true", "X-CSRF-Token": token}
    r = page.post("/spend/approval", headers=hx, data={"threshold_usd": "abc"})
    assert r.status_code == 422 and "threshold_usd must be a number" in r.get_data(as_text=True)
    r = page.post("/spend/approval", headers=hx, data={"threshold_usd": "0"})
    assert r.status_code == 200 and "Saved." in r.get_data(as_text=True)
    assert api.get("/api/cloud/settings/approval", headers=admin.headers).json == {"threshold_usd": 0.0}

    one = api.post("/api/cloud/jobs/submit", json=_body(dataset, "one"), headers=member.headers).json["job"]["id"]
    two = api.post("/api/cloud/jobs/submit", json=_body(dataset, "two"), headers=member.headers).json["job"]["id"]
    r = page.post(f"/jobs/{one}/approve", headers=hx)
    assert r.status_code == 200 and 'id="status-panel"' in r.get_data(as_text=True)
    assert "Approved by ada" in r.get_data(as_text=True)
    r = page.post(f"/jobs/{two}/reject", headers=hx, data={"reason": "not this week"})
    assert r.status_code == 200 and "Rejected by ada" in r.get_data(as_text=True)
    assert "not this week" in r.get_data(as_text=True)
    states = {j["id"]: j["status"] for j in api.get("/api/cloud/jobs", headers=admin.headers).json["jobs"]}
    assert states == {one: "queued", two: "cancelled"}
    actions = [(a["action"], a["target"]) for a in
               api.get("/api/cloud/audit?action=job.", headers=admin.headers).json["records"]
               if a["action"] in ("job.approve", "job.reject")]
    assert sorted(actions) == [("job.approve", one), ("job.reject", two)]
    settings = api.get("/api/cloud/audit?action=settings.approval", headers=admin.headers).json["records"]
    assert [a["outcome"] for a in settings] == ["ok", "failed"]  # newest first
