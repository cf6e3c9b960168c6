"""The Storage page: browse buckets and folders, download, delete with confirmation, mint and
revoke keys — through the test client, and in a real browser."""
from __future__ import annotations

import io
import re

import pytest

from stcloud.storage import backend as bk
from stcloud.storage import credentials, service
from tests.conftest import csrf_of


def seed(app):
    with app.app_context():
        b = service.backend()
        b.create_bucket("outputs", exist_ok=True)
        for key, data in (("job_a/model.safetensors", b"w" * 2048), ("job_a/ckpt/step-1/opt.bin", b"o"),
                          ("job_b/x.txt", b"x")):
            b.put("outputs", key, io.BytesIO(data), bk.Expectations(), {"content_type": "application/octet-stream"})


def test_browse_folders_and_files(app, client):
    seed(app)
    html = client.get("/storage").get_data(as_text=True)
    assert "outputs" in html and "/api/cloud/storage" in html
    assert "that expires 1h 00m after the job ends" in html  # what the keys' Expires column shows
    html = client.get("/storage?bucket=outputs").get_data(as_text=True)
    assert "job_a/" in html and "job_b/" in html and "model.safetensors" not in html
    html = client.get("/storage?bucket=outputs&prefix=job_a/").get_data(as_text=True)
    assert "model.safetensors" in html and "2.0 KiB" in html and "ckpt/" in html
    assert 'href="/storage/download/outputs/job_a/model.safetensors"' in html
    html = client.get("/storage?bucket=nope-nope").get_data(as_text=True)
    assert "The specified bucket does not exist" in html
    frag = client.get("/storage?bucket=outputs&prefix=job_a/", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert frag.lstrip().startswith('<section class="card" id="browser">')


def test_delete_needs_csrf_and_works(app, client):
    seed(app)
    r = client.post("/storage/objects/delete", data={"bucket": "outputs", "key": "job_b/x.txt"})
    assert r.status_code == 403
    token = csrf_of(client)
    r = client.post("/storage/objects/delete", data={"bucket": "outputs", "key": "job_b/x.txt", "prefix": "job_b/",
                                                     "csrf_token": token}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Deleted job_b/x.txt" in r.get_data(as_text=True)
    with app.app_context():
        assert [k for k, *_ in service.backend().iter_keys("outputs")] == ["job_a/ckpt/step-1/opt.bin",
                                                                           "job_a/model.safetensors"]
    r = client.post("/storage/objects/delete", data={"bucket": "bad bucket", "key": "k", "csrf_token": token},
                    headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Could not delete" in r.get_data(as_text=True)


def test_buckets_create_and_delete_messages(app, client):
    token = csrf_of(client)
    r = client.post("/storage/buckets", data={"name": "Bad_Name", "csrf_token": token}, headers={"HX-Request": "true"})
    assert "Could not create bucket" in r.get_data(as_text=True)
    r = client.post("/storage/buckets", data={"name": "fresh-b", "csrf_token": token})
    assert r.status_code == 302
    seed(app)
    r = client.post("/storage/buckets/delete", data={"name": "outputs", "csrf_token": token},
                    headers={"HX-Request": "true"})
    assert "not empty" in r.get_data(as_text=True)
    r = client.post("/storage/buckets/delete", data={"name": "fresh-b", "csrf_token": token})
    assert r.status_code == 302


def test_mint_shows_secret_once_and_revoke(app, client):
    token = csrf_of(client)
    r = client.post("/storage/credentials", data={"key_bucket": "outputs", "key_prefix": "job_a/", "ttl_seconds": "3600",
                                                  "read_only": "on", "csrf_token": token}, headers={"HX-Request": "true"})
    html = r.get_data(as_text=True)
    secret = re.search(r'id="new-key-secret">([^<]+)<', html).group(1)
    key_id = re.search(r'id="new-key-id">([^<]+)<', html).group(1)
    assert "read-only" in html
    page = client.get("/storage").get_data(as_text=True)
    assert key_id in page and secret not in page
    r = client.post("/storage/credentials", data={"key_bucket": "No Good", "csrf_token": token},
                    headers={"HX-Request": "true"})
    assert "not a valid bucket name" in r.get_data(as_text=True)
    r = client.post(f"/storage/credentials/{key_id}/revoke", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert "revoked" in r.get_data(as_text=True)
    with app.app_context():
        assert credentials.lookup(key_id).state == "revoked"


@pytest.mark.browser
def test_storage_page_in_a_browser(app, live_server, page, tmp_path):
    seed(app)
    page.goto(live_server + "/storage")
    page.get_by_role("link", name="outputs", exact=True).first.click()
    page.locator("tr.folder a", has_text="job_a").click()
    row = page.locator("tr.object", has_text="model.safetensors")
    row.wait_for()
    assert "2.0 KiB" in row.inner_text()
    with page.expect_download() as dl:
        row.get_by_role("link", name="model.safetensors").click()
    path = tmp_path / "dl.bin"
    dl.value.save_as(path)
    assert path.read_bytes() == b"w" * 2048

    page.once("dialog", lambda d: d.dismiss())  # cancelling the confirmation keeps the file
    row.get_by_role("button", name=re.compile("Delete")).click()
    page.wait_for_timeout(300)
    assert page.locator("tr.object", has_text="model.safetensors").count() == 1
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name=re.compile("Delete")).click()
    page.locator("#browser .flash.ok").wait_for()
    assert page.locator("tr.object", has_text="model.safetensors").count() == 0

    page.fill("#mint-form input[name=key_bucket]", "outputs")
    page.fill("#mint-form input[name=key_prefix]", "job_a/")
    page.click("#mint-form button[type=submit]")
    page.locator("#new-key-secret").wait_for()
    key_id = page.locator("#new-key-id").inner_text().strip()
    assert key_id.startswith("STC")
    page.once("dialog", lambda d: d.accept())
    page.locator(f"tr[data-key='{key_id}'] button", has_text="Revoke").click()
    page.locator(f"tr[data-key='{key_id}'] .badge", has_text="revoked").wait_for()
