"""The Workers page: full page vs htmx fragments, create shows the token once, actions."""
from tests.conftest import csrf_of
from tests.workers.helpers import queue_job


def htmx(token):
    return {"HX-Request": "true", "X-CSRF-Token": token}


def test_workers_page_full_and_fragment(client):
    r = client.get("/workers")
    assert r.status_code == 200 and "<html" in r.text and "Add a worker" in r.text
    assert 'id="workers-table"' in r.text and "No workers yet" in r.text
    assert "HX-Request" in r.headers["Vary"]
    frag = client.get("/workers", headers={"HX-Request": "true"})
    assert "<html" not in frag.text and frag.text.strip().startswith('<section class="card" id="workers-table"')
    assert 'hx-trigger="every 3s' in frag.text


def test_create_from_the_page_shows_token_once(client):
    tok = csrf_of(client)
    r = client.post("/workers", data={"name": "gpu-box", "labels": "gpu=a100", "csrf_token": tok},
                    headers=htmx(tok))
    assert r.status_code == 200 and r.headers.get("HX-Trigger") == "workers-changed"
    assert 'id="secret-panel"' in r.text and "stcloud worker --server" in r.text
    token = r.text.split('id="worker-token">')[1].split("<")[0]
    assert token.startswith("stw_")
    page = client.get("/workers").text
    assert "gpu-box" in page and "gpu=a100" in page  # labels live on the server
    assert token not in page  # never shown again
    # without htmx: the full page with the secret panel
    r = client.post("/workers", data={"name": "box2", "csrf_token": tok})
    assert "<html" in r.text and "box2" in r.text and "stw_" in r.text
    # CSRF is required for the form
    assert client.post("/workers", data={"name": "x"}).status_code == 403
    # bad input is a 400 page
    assert client.post("/workers", data={"name": "", "csrf_token": tok}).status_code == 400


def test_drain_rotate_delete_from_the_page(app, client):
    tok = csrf_of(client)
    w = client.post("/api/cloud/workers", json={"name": "busy-box"}).get_json()
    h = {"Authorization": f"Bearer {w['token']}"}
    client.post("/api/workers/register", json={"gpus": [{"name": "RTX 4090", "memory_gb": 24}]}, headers=h)
    jid = queue_job(app, archive=False)
    client.post("/api/workers/claim", headers=h)
    page = client.get("/workers", headers={"HX-Request": "true"}).text
    assert "RTX 4090 (24.0 GB)" in page and jid in page and "worker-busy" in page and "Force delete" in page
    r = client.post(f"/workers/{w['worker_id']}/drain", data={"csrf_token": tok}, headers=htmx(tok))
    assert "worker-draining" in r.text and "Resume" in r.text
    r = client.post(f"/workers/{w['worker_id']}/delete", data={"csrf_token": tok}, headers=htmx(tok))
    assert r.status_code == 200 and "is running job" in r.text and "busy-box" in r.text
    r = client.post(f"/workers/{w['worker_id']}/rotate-token", data={"csrf_token": tok}, headers=htmx(tok))
    assert "new token" in r.text
    assert client.post("/api/workers/heartbeat", json={}, headers=h).status_code == 401
    r = client.post(f"/workers/{w['worker_id']}/delete", data={"csrf_token": tok, "force": "true"}, headers=htmx(tok))
    assert "busy-box" not in r.text
    # a plain form post redirects back to the page
    w2 = client.post("/api/cloud/workers", json={"name": "idle-box"}).get_json()
    r = client.post(f"/workers/{w2['worker_id']}/delete", data={"csrf_token": tok})
    assert r.status_code == 302 and r.headers["Location"].endswith("/workers")


def test_timeout_setting_form(client):
    tok = csrf_of(client)
    r = client.post("/workers/settings", data={"timeout_seconds": "42", "csrf_token": tok})
    assert r.status_code == 302
    assert client.get("/api/cloud/workers/settings").get_json() == {"timeout_seconds": 42, "override": 42}
    assert "more than 42 s" in client.get("/workers").text
    client.post("/workers/settings", data={"timeout_seconds": "", "csrf_token": tok})
    assert client.get("/api/cloud/workers/settings").get_json()["timeout_seconds"] == 90


def test_job_page_shows_attempts_and_resume(app, client):
    from datetime import timedelta

    from stcloud import db
    from stcloud.models import Job, utcnow
    from stcloud.workers import service

    w = client.post("/api/cloud/workers", json={"name": "first"}).get_json()
    h = {"Authorization": f"Bearer {w['token']}"}
    jid = queue_job(app, archive=False)
    client.post("/api/workers/claim", headers=h)
    client.post(f"/api/workers/jobs/{jid}/checkpoint", json={"key": f"{jid}/checkpoints/checkpoint-50", "step": 50},
                headers=h)
    with app.app_context(), db.transaction() as s:
        s.get(Job, jid).lease_expires_at = utcnow() - timedelta(seconds=1)
    with app.app_context():
        service.check_liveness()
    w2 = client.post("/api/cloud/workers", json={"name": "second"}).get_json()
    h2 = {"Authorization": f"Bearer {w2['token']}"}
    client.post("/api/workers/claim", headers=h2)
    client.post(f"/api/workers/jobs/{jid}/logs",
                json={"seq": 1, "lines": ["resumed from checkpoint /w/output/checkpoint-50 at step 50"]}, headers=h2)
    html = client.get(f"/jobs/{jid}").text
    assert 'id="job-attempts"' in html
    assert html.count('class="attempt"') == 2
    assert "checkpoint at step <strong>50</strong>" in html and "lost" in html and "second" in html
    assert "at step 50" in html  # the trainer's own resume line
