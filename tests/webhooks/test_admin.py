"""Admin side: the "Test webhook" delivery, the deliveries API and the Providers section."""
from __future__ import annotations

import pytest
from flask import render_template

from tests.conftest import csrf_of, free_port
from tests.webhooks.conftest import configure, make_job, prediction, send


def test_test_webhook_reaches_the_running_server(wh_app, live_server, fake):
    configure(wh_app, public_url=live_server)
    client = wh_app.test_client()
    r = client.post("/api/cloud/providers/replicate/webhook-test", json={})
    assert r.status_code == 200, r.get_data(as_text=True)
    report = r.get_json()
    assert report["url"] == f"{live_server}/api/webhooks/replicate"
    assert report["reachable"] is True and report["ok"] is True and report["signed"] is True
    assert report["status"] == 200 and report["outcome"] == "test"
    assert isinstance(report["latency_ms"], float) and report["latency_ms"] >= 0
    # the receiver recorded it as a test delivery, listed by the deliveries API
    listed = client.get("/api/cloud/webhooks/deliveries?limit=5").get_json()["deliveries"]
    assert [(d["webhook_id"], d["outcome"]) for d in listed] == [(report["webhook_id"], "test")]


def test_test_webhook_reports_refusal_by_allowlist(wh_app, live_server):
    configure(wh_app, public_url=live_server, webhook_allowed_ips=["34.82.0.0/16", "35.185.0.0/16"])
    report = wh_app.test_client().post("/api/cloud/providers/replicate/webhook-test", json={}).get_json()
    assert report["reachable"] is True and report["ok"] is False and report["status"] == 403
    assert "allowlist" in report["detail"]


def test_test_webhook_unsigned_without_token(wh_app, live_server, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    configure(wh_app, public_url=live_server)
    report = wh_app.test_client().post("/api/cloud/providers/replicate/webhook-test", json={}).get_json()
    assert report["signed"] is False and "REPLICATE_API_TOKEN not set" in report["signing_error"]
    assert report["reachable"] is True and report["status"] == 401 and report["ok"] is False


def test_test_webhook_unreachable(wh_app):
    configure(wh_app, public_url=f"http://127.0.0.1:{free_port()}")
    report = wh_app.test_client().post("/api/cloud/providers/replicate/webhook-test", json={}).get_json()
    assert report["reachable"] is False and report["status"] is None
    assert "Not reachable" in report["detail"]


def test_test_webhook_without_public_url_is_400(wh_client):
    r = wh_client.post("/api/cloud/providers/replicate/webhook-test", json={})
    assert r.status_code == 400 and r.get_json()["field"] == "public_url"


def test_test_webhook_htmx_fragment_needs_csrf(wh_app, live_server):
    configure(wh_app, public_url=live_server)
    client = wh_app.test_client()
    hx = {"HX-Request": "true"}
    assert client.post("/api/cloud/providers/replicate/webhook-test", headers=hx).status_code == 403
    token = csrf_of(client)
    r = client.post("/api/cloud/providers/replicate/webhook-test", headers={**hx, "X-CSRF-Token": token})
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert "Webhook OK" in html and "Latency" in html and "<html" not in html


def test_test_webhook_fragment_without_public_url(wh_app):
    client = wh_app.test_client()
    r = client.post("/api/cloud/providers/replicate/webhook-test",
                    headers={"HX-Request": "true", "X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 200 and "public URL" in r.get_data(as_text=True)


def test_deliveries_api_and_page(wh_app, wh_client, fake):
    make_job(wh_app, "a" * 26)
    send(wh_client, fake.webhook_secret, prediction("a" * 26, "processing"), msg_id="msg_first")
    send(wh_client, fake.webhook_secret, prediction("b" * 26, "succeeded"), msg_id="msg_second")
    body = wh_client.get("/api/cloud/webhooks/deliveries?limit=1").get_json()
    assert body["limit"] == 1 and len(body["deliveries"]) == 1
    full = wh_client.get("/api/cloud/webhooks/deliveries").get_json()["deliveries"]
    assert {(d["webhook_id"], d["event_status"], d["outcome"]) for d in full} == {
        ("msg_first", "processing", "applied"), ("msg_second", "succeeded", "ignored")}
    assert all(d["received_at"].endswith("Z") for d in full)
    for bad in ("0", "x", "1000"):
        r = wh_client.get(f"/api/cloud/webhooks/deliveries?limit={bad}")
        assert r.status_code == 400 and r.mimetype == "application/problem+json"
    page = wh_client.get("/providers/webhooks")
    assert page.status_code == 200 and "<html" in page.get_data(as_text=True)
    frag = wh_client.get("/providers/webhooks", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in frag and "msg_first" in frag and "msg_second" in frag and "applied" in frag
    assert 'hx-trigger="every 10s, webhooks-changed from:body"' in frag


def test_providers_section_template(wh_app):
    with wh_app.test_request_context("/providers"):
        html = render_template("webhooks/_providers_section.html")
    assert "Test webhook" in html and "/api/cloud/providers/replicate/webhook-test" in html
    assert "/providers/webhooks" in html


@pytest.mark.parametrize("path", ["/api/cloud/webhooks/deliveries", "/providers/webhooks"])
def test_admin_routes_need_the_admin_token(make_app, path):
    app = make_app(STCLOUD_ADMIN_TOKEN="tok")
    c = app.test_client()
    assert c.get(path).status_code in (302, 401)
    assert c.get(path, headers={"Authorization": "Bearer tok"}).status_code == 200


def test_seeds_curl_example_sets_the_allowlist(wh_app, wh_client, fake):
    """The Replicate guide's example, exactly: PUT /api/cloud/providers/replicate."""
    r = wh_client.put("/api/cloud/providers/replicate", headers={"Content-Type": "application/json"},
                      data='{\n    "webhook_allowed_ips": ["34.82.0.0/16", "35.185.0.0/16"]\n  }')
    assert r.status_code == 200, r.get_data(as_text=True)
    make_job(wh_app, "c" * 26)
    assert send(wh_client, fake.webhook_secret, prediction("c" * 26), remote_addr="34.82.3.4").status_code == 200
    assert send(wh_client, fake.webhook_secret, prediction("c" * 26), remote_addr="8.8.8.8").status_code == 403


@pytest.mark.browser
def test_test_webhook_button_on_the_providers_page(wh_app, live_server, page):
    configure(wh_app, public_url=live_server)
    page.goto(f"{live_server}/providers")
    page.wait_for_selector("#webhook-deliveries")  # loaded by htmx
    assert "No webhook deliveries yet" in page.inner_text("#webhook-deliveries")
    page.click("#webhook-test-button")
    page.wait_for_selector("#webhook-test-report")
    report = page.inner_text("#webhook-test-report")
    assert "Webhook OK" in report and "Latency" in report
    # the table reloads by itself after the test
    page.wait_for_function("() => document.querySelector('#webhook-deliveries').innerText.includes('msg_stcloudtest_')")
    assert "test" in page.inner_text("#webhook-deliveries")
