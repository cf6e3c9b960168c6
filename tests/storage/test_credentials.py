"""The credentials JSON API, per-job keys and their lifetime, and who may read through the
S3 endpoint without SigV4 (nobody; the dashboard downloads through its own route)."""
from __future__ import annotations

from datetime import timedelta

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from stcloud import db
from stcloud.models import Job, StorageCredential, utcnow
from stcloud.storage import credentials


def s3(endpoint, creds):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=creds["access_key_id"], aws_secret_access_key=creds["secret_access_key"],
                        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30))


def make_job(app, status="running", completed_ago=None) -> str:
    with app.app_context(), db.transaction() as s:
        job = Job(name="t", provider="worker", status=status)
        if completed_ago is not None:
            job.completed_at = utcnow() - completed_ago
        s.add(job)
        s.flush()
        return job.id


def test_mint_list_revoke(client, app, live_server):
    r = client.post("/api/cloud/storage/credentials",
                    json={"bucket": "models", "prefix": "runs/", "ttl_seconds": 600, "description": "ci"})
    assert r.status_code == 201, r.json
    key = r.json
    assert set(key) >= {"access_key_id", "secret_access_key", "endpoint_url", "bucket", "prefix", "expires_at"}
    assert key["endpoint_url"] == live_server + "/api/cloud/storage"
    assert key["bucket"] == "models" and key["prefix"] == "runs/" and key["state"] == "active"
    listed = client.get("/api/cloud/storage/credentials").json["credentials"]
    assert [k["access_key_id"] for k in listed] == [key["access_key_id"]]
    assert "secret_access_key" not in listed[0] and key["secret_access_key"] not in str(listed)
    with app.app_context(), db.session() as s:
        row = s.get(StorageCredential, key["access_key_id"])
        assert key["secret_access_key"] not in row.secret_enc  # encrypted at rest
    c = s3(key["endpoint_url"], key)
    c.put_object(Bucket="models", Key="runs/a.bin", Body=b"1")  # the bucket was created by the mint
    r = client.delete(f"/api/cloud/storage/credentials/{key['access_key_id']}")
    assert r.status_code == 200 and r.json["credential"]["state"] == "revoked"
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket="models", Key="runs/a.bin")
    assert e.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    r = client.delete("/api/cloud/storage/credentials/STCNOPE")
    assert r.status_code == 404 and r.mimetype == "application/problem+json"


@pytest.mark.parametrize("body,field", [
    ({}, "bucket"), ({"bucket": "Bad_Name"}, "bucket"), ({"bucket": "credentials"}, "bucket"),
    ({"bucket": "ok-b", "ttl_seconds": 0}, "ttl_seconds"), ({"bucket": "ok-b", "ttl_seconds": "60"}, "ttl_seconds"),
    ({"bucket": "ok-b", "ttl_seconds": True}, "ttl_seconds"), ({"bucket": "ok-b", "read_only": "yes"}, "read_only"),
    ({"bucket": "ok-b", "prefix": 5}, "prefix"), ({"bucket": "ok-b", "job_id": "job_missing"}, "job_id"),
    ({"bucket": "ok-b", "surprise": 1}, "surprise"),
])
def test_mint_validation(client, body, field):
    r = client.post("/api/cloud/storage/credentials", json=body)
    assert r.status_code == 400 and r.mimetype == "application/problem+json"
    assert r.json["field"] == field and r.json["detail"]


def test_mint_bad_bodies(client):
    r = client.post("/api/cloud/storage/credentials", data="not json", content_type="application/json")
    assert r.status_code == 400 and r.mimetype == "application/problem+json"
    r = client.post("/api/cloud/storage/credentials", json=["bucket"])
    assert r.status_code == 400


def test_admin_token_and_csrf(make_app):
    app = make_app(STCLOUD_ADMIN_TOKEN="tok")
    c = app.test_client()
    r = c.post("/api/cloud/storage/credentials", json={"bucket": "b-b-b"})
    assert r.status_code == 401 and r.mimetype == "application/problem+json"
    assert c.get("/api/cloud/storage/credentials").status_code == 401
    r = c.post("/api/cloud/storage/credentials", json={"bucket": "b-b-b"}, headers={"Authorization": "Bearer tok"})
    assert r.status_code == 201
    c.post("/login", data={"token": "tok", "next": "/"})
    r = c.post("/api/cloud/storage/credentials", data={"bucket": "b-b-b"})  # a form post without CSRF token
    assert r.status_code == 403
    r = c.post("/api/cloud/storage/credentials", json={"bucket": "b-b-b"})  # JSON: no CSRF needed
    assert r.status_code == 201


def test_public_url_is_the_endpoint(make_app):
    app = make_app(STCLOUD_PUBLIC_URL="https://train.example.com/")
    r = app.test_client().post("/api/cloud/storage/credentials", json={"bucket": "pub-b"})
    assert r.json["endpoint_url"] == "https://train.example.com/api/cloud/storage"


def test_reserved_credentials_bucket_answers_s3_clients(app, live_server):
    with app.app_context():
        creds = credentials.mint(bucket="*", ttl_seconds=600)
    c = s3(live_server + "/api/cloud/storage", creds)
    with pytest.raises(ClientError) as e:
        c.create_bucket(Bucket="credentials")
    assert e.value.response["Error"]["Code"] == "InvalidBucketName"
    with pytest.raises(ClientError) as e:
        c.list_objects_v2(Bucket="credentials")
    assert e.value.response["Error"]["Code"] == "NoSuchBucket"


def test_job_key_lifetime(app, live_server):
    app.config["STCLOUD_STORAGE_JOB_GRACE_SECONDS"] = 600
    job_id = make_job(app)
    with app.app_context():
        key = credentials.credentials_for_job(job_id)
        again = credentials.credentials_for_job(job_id)
    assert again["access_key_id"] == key["access_key_id"] and again["secret_access_key"] == key["secret_access_key"]
    assert key["bucket"] == "outputs" and key["prefix"] == f"{job_id}/" and key["region"] == "us-east-1"
    c = s3(live_server + "/api/cloud/storage", key)
    c.put_object(Bucket="outputs", Key=f"{job_id}/weights.safetensors", Body=b"w")
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket="outputs", Key="job_other/weights.safetensors", Body=b"w")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    # the job ends: the key keeps working during the grace period ...
    with app.app_context(), db.transaction() as s:
        job = s.get(Job, job_id)
        job.status, job.completed_at = "completed", utcnow() - timedelta(seconds=300)
    c.put_object(Bucket="outputs", Key=f"{job_id}/late.txt", Body=b"late")
    # ... and expires after it
    with app.app_context(), db.transaction() as s:
        s.get(Job, job_id).completed_at = utcnow() - timedelta(seconds=601)
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket="outputs", Key=f"{job_id}/too-late.txt", Body=b"x")
    assert e.value.response["Error"]["Code"] == "ExpiredToken"
    with app.app_context():
        listed = {k["access_key_id"]: k for k in credentials.list_credentials()}
        assert listed[key["access_key_id"]]["state"] == "expired"
        assert credentials.credentials_for_job(job_id)["access_key_id"] != key["access_key_id"]


def test_purge_pins_and_deletes(app):
    job_id = make_job(app, status="completed", completed_ago=timedelta(days=10))
    with app.app_context():
        key = credentials.credentials_for_job(job_id)
        orphan = credentials.credentials_for_job("job_never_created")
        live = credentials.mint(bucket="keep-me", ttl_seconds=3600)
        with db.transaction() as s:
            s.get(StorageCredential, orphan["access_key_id"]).created_at = utcnow() - timedelta(minutes=20)
        assert credentials.lookup(orphan["access_key_id"]).state == "expired"
        assert credentials.purge_expired() == 1  # the job ended 10 days ago: expired > 7 days
        ids = {k["access_key_id"] for k in credentials.list_credentials()}
        assert key["access_key_id"] not in ids and live["access_key_id"] in ids
        assert orphan["access_key_id"] in ids  # expired minutes ago: still listed for a week


@pytest.fixture
def guarded(make_app, home):
    import threading

    from werkzeug.serving import make_server

    app = make_app(STCLOUD_ADMIN_TOKEN="tok")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    app.config["STCLOUD_LOCAL_URL"] = url
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    with app.app_context():
        creds = credentials.mint(bucket="outputs", ttl_seconds=600)
    s3(url + "/api/cloud/storage", creds).put_object(Bucket="outputs", Key="job_x/page.html",
                                                     Body=b"<script>alert(1)</script>", ContentType="text/html")
    yield app, url
    server.shutdown()
    t.join(5)


UNSIGNED_READS = [("GET", "/api/cloud/storage"), ("HEAD", "/api/cloud/storage"),
                  ("GET", "/api/cloud/storage/outputs"), ("GET", "/api/cloud/storage/outputs?list-type=2"),
                  ("HEAD", "/api/cloud/storage/outputs"), ("GET", "/api/cloud/storage/outputs?versions"),
                  ("GET", "/api/cloud/storage/outputs?uploads"), ("GET", "/api/cloud/storage/outputs?location"),
                  ("GET", "/api/cloud/storage/outputs/job_x/page.html"),
                  ("HEAD", "/api/cloud/storage/outputs/job_x/page.html"),
                  ("GET", "/api/cloud/storage/outputs/job_x/page.html?acl")]


def _assert_unsigned_refused(url, session=None, **headers):
    import requests

    http = session or requests
    for method, path in UNSIGNED_READS:
        r = http.request(method, url + path, headers=headers, timeout=5)
        assert r.status_code == 403, (method, path, headers, r.status_code)
        if method == "GET":
            assert "<Code>AccessDenied</Code>" in r.text and "job_x/page.html" not in r.text


def test_the_s3_endpoint_never_answers_unsigned_reads(guarded):
    """Not anonymously, not with the admin bearer token, not with a logged-in session: the
    S3 endpoint needs a signature. People download through the dashboard's route."""
    import requests

    app, url = guarded
    _assert_unsigned_refused(url)
    _assert_unsigned_refused(url, Authorization="Bearer tok")
    session = requests.Session()
    session.post(f"{url}/login", data={"token": "tok", "next": "/"}, timeout=5)
    _assert_unsigned_refused(url, session=session)
    for method in ("DELETE", "PUT"):  # a session never writes through the S3 endpoint
        r = session.request(method, f"{url}/api/cloud/storage/outputs/job_x/page.html", data=b"x",
                            headers={"Authorization": "Bearer tok"}, timeout=5)
        assert r.status_code == 403 and "AccessDenied" in r.text

    download = f"{url}/storage/download/outputs/job_x/page.html"
    assert requests.get(download, allow_redirects=False, timeout=5).status_code in (302, 401)
    assert requests.get(download, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    r = requests.get(download, headers={"Authorization": "Bearer tok"}, timeout=5)
    assert r.status_code == 200 and r.content == b"<script>alert(1)</script>"
    assert r.headers["Content-Disposition"] == "attachment; filename*=UTF-8''page.html"
    assert "sandbox" in r.headers["Content-Security-Policy"] and r.headers["X-Content-Type-Options"] == "nosniff"
    assert session.get(download, timeout=5).content == b"<script>alert(1)</script>"
    assert session.head(download, timeout=5).headers["Content-Length"] == "25"
    assert session.get(f"{url}/storage/download/outputs/job_x/nope", timeout=5).status_code == 404
    assert session.get(f"{url}/storage/download/outputs/job_x/", timeout=5).status_code == 404

    # A presigned URL is the way to hand a download to someone without a login.
    with app.app_context():
        creds = credentials.mint(bucket="outputs", prefix="job_x/", ttl_seconds=600, read_only=True)
    presigned = s3(url + "/api/cloud/storage", creds).generate_presigned_url(
        "get_object", Params={"Bucket": "outputs", "Key": "job_x/page.html"}, ExpiresIn=60)
    assert requests.get(presigned, timeout=5).content == b"<script>alert(1)</script>"


def test_without_admin_token_the_s3_endpoint_is_still_closed(app, live_server):
    import requests

    with app.app_context():
        creds = credentials.mint(bucket="outputs", ttl_seconds=600)
    s3(live_server + "/api/cloud/storage", creds).put_object(Bucket="outputs", Key="job_x/page.html", Body=b"v")
    _assert_unsigned_refused(live_server)
    r = requests.delete(f"{live_server}/api/cloud/storage/outputs/job_x/page.html", timeout=5)
    assert r.status_code == 403
    # The dashboard itself is open without STCLOUD_ADMIN_TOKEN (SPEC §1), and so its downloads.
    r = requests.get(f"{live_server}/storage/download/outputs/job_x/page.html", timeout=5)
    assert r.status_code == 200 and r.content == b"v"
