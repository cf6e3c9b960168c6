"""nginx and Caddy, running the files in docs/deploy/, in front of ``gunicorn -w 2
'app:create_app()'`` and one ``stcloud scheduler``: webhooks, the allowlist behind
X-Forwarded-For, S3 uploads (SigV4 keeps working: Host and port preserved), large bodies,
HTTPS redirects and Secure cookies."""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid

import boto3
import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from prometheus_client.parser import text_string_to_metric_families

from stcloud.webhooks import verify
from tests.daemons import unavailable
from tests.deploy.stack import (
    CLIENT_IP,
    OTHER_IP,
    OUTSIDE_IP,
    PROXIES,
    Backend,
    available,
    session_from,
)
from tests.fakes.replicate_fake import FakeReplicate

pytestmark = pytest.mark.slow

TOKEN = "r8_stack_token"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def fake():
    with FakeReplicate(tokens=(TOKEN,)) as f:
        yield f


@pytest.fixture(scope="module")
def backend(tmp_path_factory, fake):
    b = Backend(tmp_path_factory.mktemp("backend"), {"REPLICATE_API_TOKEN": TOKEN,
                                                    "REPLICATE_BASE_URL": fake.base_url})
    try:
        b.configure(trusted_proxies=["127.0.0.1/32"], webhook_allowed_ips=[f"{CLIENT_IP}/32"],
                    webhook_require_signature=True)
        deadline = time.time() + 60
        while (ready := requests.get(b.url + "/readyz", timeout=5)).status_code != 200:
            assert time.time() < deadline, ready.text  # the scheduler process beats within seconds
            time.sleep(0.5)
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module", params=sorted(PROXIES))
def proxy(request, tmp_path_factory, backend, tls_cert):
    reason = available(request.param)
    if reason:
        unavailable(request.param, reason)
    try:
        p = PROXIES[request.param](tmp_path_factory.mktemp(request.param), backend, *tls_cert)
    except RuntimeError as exc:
        unavailable(request.param, str(exc))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def s3_keys(backend):
    resp = backend.admin.post(f"{backend.url}/api/cloud/storage/credentials",
                              json={"bucket": "*", "ttl_seconds": 3600, "description": "reverse proxy test"},
                              timeout=30)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


def _random_file(path, size: int) -> str:
    sha = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MiB))
            sha.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    return sha.hexdigest()


def _signed(fake, body: bytes, *, secret: str | None = None) -> dict:
    wid = "msg_" + uuid.uuid4().hex
    ts = int(time.time())
    return {"Content-Type": "application/json", "webhook-id": wid, "webhook-timestamp": str(ts),
            "webhook-signature": verify.sign(secret or fake.webhook_secret, wid, ts, body)}


def _delivery() -> bytes:
    return json.dumps({"id": "p_" + uuid.uuid4().hex[:20], "status": "processing", "logs": "step 1"}).encode()


def test_signed_webhooks_pass_unsigned_and_forged_fail(proxy, fake, tls_cert):
    http = session_from(CLIENT_IP, tls_cert[0])
    url = f"{proxy.https_url}/api/webhooks/replicate"
    body = _delivery()
    ok = http.post(url, data=body, headers=_signed(fake, body), timeout=30)
    assert ok.status_code == 200 and ok.json()["outcome"] == "ignored", ok.text
    unsigned = http.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert unsigned.status_code == 401, unsigned.text
    forged = http.post(url, data=body, headers=_signed(fake, body, secret="whsec_" + "QUJD" * 8), timeout=30)
    assert forged.status_code == 401, forged.text
    tampered_headers = _signed(fake, body)
    tampered = http.post(url, data=body.replace(b"step 1", b"step 9"), headers=tampered_headers, timeout=30)
    assert tampered.status_code == 401


def test_the_allowlist_sees_the_client_through_the_proxy_only_when_trusted(proxy, backend, fake, tls_cert):
    url = f"{proxy.https_url}/api/webhooks/replicate"
    body = _delivery()
    allowed = session_from(CLIENT_IP, tls_cert[0]).post(url, data=body, headers=_signed(fake, body), timeout=30)
    assert allowed.status_code == 200, allowed.text

    # The proxy lets 127.0.0.3 through; stcloud's own allowlist (127.0.0.2 only) refuses it,
    # also when it claims to be 127.0.0.2 in its own X-Forwarded-For.
    other = session_from(OTHER_IP, tls_cert[0])
    body = _delivery()
    refused = other.post(url, data=body, headers=_signed(fake, body), timeout=30)
    assert refused.status_code == 403 and OTHER_IP in refused.json()["detail"], refused.text
    body = _delivery()
    forged = other.post(url, data=body, headers={**_signed(fake, body), "X-Forwarded-For": CLIENT_IP}, timeout=30)
    assert forged.status_code == 403 and OTHER_IP in forged.json()["detail"], forged.text

    # The proxy itself refuses a source outside its allowlist.
    body = _delivery()
    outside = session_from(OUTSIDE_IP, tls_cert[0]).post(url, data=body, headers=_signed(fake, body), timeout=30)
    assert outside.status_code == 403 and "application/problem+json" not in outside.headers.get("Content-Type", "")

    # Without the proxy in trusted_proxies, stcloud sees the proxy's own address.
    backend.configure(trusted_proxies=[])
    try:
        body = _delivery()
        untrusted = session_from(CLIENT_IP, tls_cert[0]).post(url, data=body, headers=_signed(fake, body), timeout=30)
        assert untrusted.status_code == 403 and "127.0.0.1" in untrusted.json()["detail"], untrusted.text
    finally:
        backend.configure(trusted_proxies=["127.0.0.1/32"])


def _s3(proxy, keys, cert):
    return boto3.client("s3", endpoint_url=f"{proxy.https_url}/api/cloud/storage", region_name="us-east-1",
                        aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"],
                        verify=str(cert), config=Config(retries={"max_attempts": 1}, read_timeout=300))


def test_multipart_sigv4_upload_through_the_proxy(proxy, s3_keys, tls_cert, tmp_path):
    s3 = _s3(proxy, s3_keys, tls_cert[0])
    bucket = f"mp-{proxy.kind}"
    s3.create_bucket(Bucket=bucket)
    src = tmp_path / "weights.bin"
    sha = _random_file(src, 50 * MiB)
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)
    s3.upload_file(str(src), bucket, "run/weights.bin", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="run/weights.bin")
    assert head["ContentLength"] == 50 * MiB and head["ETag"].strip('"').endswith("-7")
    got = tmp_path / "back.bin"
    s3.download_file(bucket, "run/weights.bin", str(got))
    assert hashlib.sha256(got.read_bytes()).hexdigest() == sha


def test_a_150_mib_upload_is_not_cut_by_the_proxy(proxy, s3_keys, tls_cert, tmp_path):
    s3 = _s3(proxy, s3_keys, tls_cert[0])
    bucket = f"big-{proxy.kind}"
    s3.create_bucket(Bucket=bucket)
    src = tmp_path / "big.bin"
    _random_file(src, 150 * MiB)
    started = time.monotonic()
    with open(src, "rb") as fh:
        s3.put_object(Bucket=bucket, Key="big.bin", Body=fh)  # one PUT: the whole body in one request
    elapsed = time.monotonic() - started
    assert s3.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == 150 * MiB
    print(f"\n{proxy.kind}: 150 MiB single PUT over HTTPS in {elapsed:.1f} s ({150 / elapsed:.0f} MiB/s)")


def test_https_redirect_and_secure_session_cookie(proxy, tls_cert, backend):
    http = session_from(CLIENT_IP, tls_cert[0])
    redirect = http.get(f"{proxy.http_url}/jobs?x=1", allow_redirects=False, timeout=30)
    assert redirect.status_code in (301, 308)
    # Caddy leaves its own https_port out of the redirect (it assumes that port is what a
    # port-forward maps 443 to); on 443 both give https://<host>/jobs?x=1.
    expected = {f"{proxy.https_url}/jobs?x=1"} | ({"https://127.0.0.1/jobs?x=1"} if proxy.kind == "caddy" else set())
    assert redirect.headers["Location"] in expected
    http.headers["Authorization"] = f"Bearer {backend.admin.headers['Authorization'].split()[1]}"
    page = http.get(f"{proxy.https_url}/jobs", timeout=30)
    assert page.status_code == 200, page.text[:300]
    cookie = page.headers.get("Set-Cookie", "")
    assert cookie.startswith("session=") and "Secure" in cookie and "HttpOnly" in cookie, cookie


def test_forwarded_proto_is_believed_only_from_trusted_proxies(backend):
    headers = {"Authorization": backend.admin.headers["Authorization"], "X-Forwarded-Proto": "https"}
    # 127.0.0.1 is in trusted_proxies: its X-Forwarded-Proto makes the request HTTPS.
    trusted = session_from("127.0.0.1").get(f"{backend.url}/jobs", headers=headers, timeout=30)
    assert trusted.status_code == 200 and "Secure" in trusted.headers["Set-Cookie"]
    # From any other address the header is ignored.
    untrusted = session_from(OTHER_IP).get(f"{backend.url}/jobs", headers=headers, timeout=30)
    assert untrusted.status_code == 200 and "Secure" not in untrusted.headers["Set-Cookie"]


def test_metrics_sum_the_gunicorn_workers(backend, s3_keys):
    def received() -> float:
        text = session_from("127.0.0.1").get(f"{backend.url}/metrics", timeout=30).text
        return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "stcloud_s3_received_bytes_total")

    s3 = boto3.client("s3", endpoint_url=f"{backend.url}/api/cloud/storage", region_name="us-east-1",
                      aws_access_key_id=s3_keys["access_key_id"], aws_secret_access_key=s3_keys["secret_access_key"])
    s3.create_bucket(Bucket="metrics")
    before = received()
    for i in range(6):  # several requests: both workers get some
        s3.put_object(Bucket="metrics", Key=f"k{i}", Body=b"m" * MiB)
    after = {received() for _ in range(6)}  # whichever worker answers, the same sum
    assert len(after) == 1 and after.pop() - before >= 6 * MiB
    assert session_from(OTHER_IP).get(f"{backend.url}/metrics", timeout=30).status_code == 200  # loopback
