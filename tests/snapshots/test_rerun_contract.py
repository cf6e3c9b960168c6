"""Re-run against a stand-in of the submit contract (``stcloud.jobs.submit.submit(body,
source) -> SubmitResult(job, idempotent, warnings, status_code)``, 409 "dataset changed since
the original run" for a different ``expected_dataset_sha256``). It checks our side — the body
we build, the offer on a changed dataset, the answers of the API and the page — whether or
not the real submit service is installed; test_rerun.py runs the same flows through it."""
from __future__ import annotations

from PIL import Image

from stcloud.errors import Conflict
from stcloud.jobs import rerun
from tests.conftest import csrf_of
from tests.snapshots.helpers import config, get_job, git, repo


def test_exact_rerun_api(app, client, home, fake_submit, original):
    resp = client.post(f"/api/cloud/jobs/{original['id']}/rerun", json={"exact": True})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    data = resp.get_json()
    assert data["rerun_of"] == original["id"] and data["exact"] is True
    assert data["warnings"] == ["from the stand-in"] and data["idempotent"] is False
    body, source = fake_submit[-1]
    orig = get_job(app, original["id"])
    assert source == "rerun"
    assert body["expected_dataset_sha256"] == orig.dataset_sha256 and body["rerun_of"] == orig.id
    assert (body["provider"], body["hardware"], body["max_cost_usd"], body["delivery"]) == \
        ("worker", "gpu-l40s", 3.0, {"target": "builtin"})
    assert body["config"] == config()  # secrets restored
    assert "data_consent" not in body  # passed through only when the caller says so
    new = data["job"]
    assert new["dataset_sha256"] == orig.dataset_sha256
    root = repo(home)
    assert git(root, "rev-parse", f"{new['snapshot']}:my-lora/config.json") == \
        git(root, "rev-parse", f"{orig.snapshot}:my-lora/config.json")
    assert f"exact re-run of {orig.id}" in git(root, "log", "-1", "--format=%B", new["snapshot"])
    client.post(f"/api/cloud/jobs/{original['id']}/rerun", json={"exact": True, "data_consent": True})
    assert fake_submit[-1][0]["data_consent"] is True


def test_changed_dataset_409_with_offer_then_current_data(app, client, fake_submit, original):
    Image.new("RGB", (8, 8), "white").save(original["dataset"] / "img0.png")
    resp = client.post(f"/api/cloud/jobs/{original['id']}/rerun", json={"exact": True})
    assert resp.status_code == 409 and resp.mimetype == "application/problem+json"
    p = resp.get_json()
    assert p["detail"] == "dataset changed since the original run" and p["reason"] == "dataset_changed"
    assert p["offer"] == {"exact": False, "label": "Re-run with current data", "method": "POST",
                          "url": f"/api/cloud/jobs/{original['id']}/rerun", "body": {"exact": False}}
    assert p["expected_dataset_sha256"] == get_job(app, original["id"]).dataset_sha256
    assert p["dataset_sha256"] != p["expected_dataset_sha256"]  # the submit service's members stay
    resp = client.post(p["offer"]["url"], json=p["offer"]["body"])
    assert resp.status_code == 201
    body = fake_submit[-1][0]
    assert "expected_dataset_sha256" not in body and body["rerun_of"] == original["id"]
    assert resp.get_json()["job"]["dataset_sha256"] != p["expected_dataset_sha256"]


def test_other_conflicts_carry_no_offer(client, fake_submit, original, monkeypatch):
    def consent(body, source="api"):
        raise Conflict("This job uploads 2 files. Submit again with data_consent: true to confirm.",
                       title="Consent required", extra={"consent_required": True, "summary": {"files": 2}})

    monkeypatch.setattr(rerun, "submit", consent)
    p = client.post(f"/api/cloud/jobs/{original['id']}/rerun", json={"exact": True}).get_json()
    assert p["status"] == 409 and "offer" not in p and p["summary"] == {"files": 2}


def test_rerun_page_flow(app, client, fake_submit, original):
    token = csrf_of(client)
    url = f"/jobs/{original['id']}/rerun"
    resp = client.post(url, data={"exact": "1", "csrf_token": token}, headers={"HX-Request": "true"})
    assert resp.status_code == 200 and resp.headers["HX-Redirect"].startswith("/jobs/job_")
    resp = client.post(url, data={"exact": "1", "csrf_token": token})
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/jobs/job_")
    Image.new("RGB", (8, 8), "white").save(original["dataset"] / "img1.png")
    resp = client.post(url, data={"exact": "1", "csrf_token": token}, headers={"HX-Request": "true"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Exact re-run refused" in html
    assert 'data-testid="rerun-offer-current"' in html and 'name="exact" value="0"' in html
    full = client.post(url, data={"exact": "1", "csrf_token": token})
    assert full.status_code == 409 and "Re-run with current data" in full.get_data(as_text=True)


def test_consent_refusal_offers_to_confirm(client, fake_submit, original, monkeypatch):
    def consent(body, source="api"):
        if not body.get("data_consent"):
            raise Conflict("This job uploads 2 files. Submit again with data_consent: true to confirm.",
                           title="Consent required", extra={"consent_required": True, "summary": {
                               "totals": {"files": 2, "bytes": 2048, "datasets": 1}}})
        return fake_submit_impl(body, source)

    fake_submit_impl = rerun.submit
    monkeypatch.setattr(rerun, "submit", consent)
    token = csrf_of(client)
    url = f"/jobs/{original['id']}/rerun"
    html = client.post(url, data={"exact": "1", "csrf_token": token}, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'data-testid="rerun-consent"' in html and "2 files (2.0 KiB)" in html
    resp = client.post(url, data={"exact": "1", "data_consent": "1", "csrf_token": token}, headers={"HX-Request": "true"})
    assert resp.headers["HX-Redirect"].startswith("/jobs/job_")
