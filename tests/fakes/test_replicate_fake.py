"""Tests for the fake Replicate API, using the official ``replicate`` client over loopback."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import zipfile
from datetime import UTC

import httpx
import pytest
import replicate
from pydantic import v1 as pydantic_v1
from replicate.exceptions import ReplicateError
from replicate.pagination import Page
from replicate.version import Version
from replicate.webhook import InvalidSignatureError, Webhooks
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from .replicate_fake import TRAINER_MODEL, FakeReplicate, _QuietHandler, sign_webhook

pytestmark = pytest.mark.timeout(60)

TOKEN = "r8_test_token"


@pytest.fixture
def fake():
    with FakeReplicate(tokens=(TOKEN,)) as f:
        yield f


@pytest.fixture
def client(fake):
    c = replicate.Client(api_token=TOKEN, base_url=fake.base_url, timeout=httpx.Timeout(10.0, connect=2.0))
    c.poll_interval = 0.02
    return c


class Receiver:
    """A webhook endpoint on loopback that records what it gets and answers ``statuses`` in turn."""

    def __init__(self):
        self.received: list[dict] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.port}/hooks/replicate"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _app(self, environ, start_response):
        req = Request(environ)
        with self._lock:
            self.received.append(
                {"path": req.path, "headers": dict(req.headers), "body": req.get_data(as_text=True)}
            )
            status = self.statuses.pop(0) if self.statuses else 200
        return Response("ok", status)(environ, start_response)

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _hdrs(delivery_or_received) -> dict:
    h = delivery_or_received["headers"] if isinstance(delivery_or_received, dict) else delivery_or_received.headers
    return {k.lower(): v for k, v in h.items()}


# --------------------------------------------------------------------------- basics


def test_account(client, fake):
    acct = client.accounts.current()
    assert acct.type == "user"
    assert acct.username == fake.username
    assert acct.github_url == f"https://github.com/{fake.username}"
    req = fake.requests_to("GET", r"^/v1/account$")[-1]
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["User-Agent"].startswith("replicate-python/")


def test_hardware(client):
    skus = {h.sku: h.name for h in client.hardware.list()}
    assert "gpu-l40s" in skus and "gpu-a100-large" in skus
    assert skus["gpu-a100-large"] == "Nvidia A100 (80GB) GPU"


def test_base_url_and_token_from_environment(fake, monkeypatch):
    monkeypatch.setenv("REPLICATE_BASE_URL", fake.base_url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    c = replicate.Client(timeout=httpx.Timeout(5.0))  # env is read at the first request
    assert c.accounts.current().username == fake.username


def test_token_scheme_is_accepted(fake):
    r = httpx.get(fake.url("/v1/account"), headers={"Authorization": f"Token {TOKEN}"}, timeout=5)
    assert r.status_code == 200
    r = httpx.get(fake.url("/v1/account"), timeout=5)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {
        "title": "Unauthenticated",
        "detail": "You did not pass a valid authentication token",
        "status": 401,
    }


def test_bad_token_raises_replicate_error_401(fake):
    bad = replicate.Client(api_token="r8_wrong", base_url=fake.base_url, timeout=httpx.Timeout(5.0))
    with pytest.raises(ReplicateError) as ei:
        bad.accounts.current()
    err = ei.value
    assert err.status == 401
    assert err.title == "Unauthenticated"
    assert err.detail == "You did not pass a valid authentication token"
    assert "status: 401" in str(err)


def test_model_and_version_get(client, fake):
    model = client.models.get(TRAINER_MODEL)
    assert (model.owner, model.name) == tuple(TRAINER_MODEL.split("/"))
    assert model.latest_version.id == fake.latest_version_id()
    v = model.versions.get(fake.latest_version_id())
    assert len(v.id) == 64 and v.cog_version and v.openapi_schema["openapi"]
    with pytest.raises(ReplicateError) as ei:
        client.models.get("nobody/nothing")
    assert ei.value.status == 404


def test_versions_pagination(client, fake):
    for _ in range(3):
        fake.add_version(TRAINER_MODEL)  # 3 preloaded + 3 = 6 versions
    fake.page_size = 4
    expected = [v["id"] for v in reversed(fake.versions[TRAINER_MODEL])]  # newest first
    versions = client.models.get(TRAINER_MODEL).versions

    # Fact about replicate 1.0.7: Versions.list() takes no cursor, so it cannot be
    # handed to replicate.paginate directly.
    with pytest.raises(TypeError):
        next(replicate.paginate(versions.list))

    def list_versions(cursor):
        if cursor is ...:
            return versions.list()
        # Page.next is an absolute URL on the fake's host; the client's own httpx client
        # (auth, retry transport) fetches it, the way predictions.list(cursor) does.
        obj = client._request("GET", cursor).json()
        obj["results"] = [Version(**r) for r in obj["results"]]
        return Page[Version](**obj)

    pages = list(replicate.paginate(list_versions))
    assert [len(p) for p in pages] == [4, 2]
    assert [v.id for p in pages for v in p] == expected
    assert pages[0].next.startswith(fake.base_url + f"/v1/models/{TRAINER_MODEL}/versions?cursor=")
    assert pages[0].previous is None and pages[1].next is None
    # "previous" of page 2 leads back to page 1
    back = client._request("GET", pages[1].previous).json()
    assert [r["id"] for r in back["results"]] == expected[:4]


# --------------------------------------------------------------------------- files


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"dataset/img_{i}.txt", f"a photo of sks dog number {i}\n" * 20)
    return buf.getvalue()


def test_files_create_get_list_download_delete(client, fake, tmp_path):
    data = _zip_bytes()
    path = tmp_path / "dataset.zip"
    path.write_bytes(data)

    f = client.files.create(path, metadata={"job": "j-123"})
    assert f.name == "dataset.zip"
    assert f.content_type == "application/zip"
    assert f.size == len(data)
    assert f.checksums == {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
    assert f.etag == f.checksums["md5"]
    assert f.metadata == {"job": "j-123"}
    assert f.urls == {"get": f"{fake.base_url}/v1/files/{f.id}"}
    assert f.expires_at > f.created_at
    assert fake.file_bytes(f.id) == data
    # the multipart part is called "content"
    assert fake.requests_to("POST", r"^/v1/files$")[-1].headers["Content-Type"].startswith("multipart/form-data")

    assert client.files.get(f.id).checksums == f.checksums
    assert f.id in [x.id for x in client.files.list()]

    r = httpx.get(fake.file_download_url(f.id), timeout=5)  # signed URL, no token
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "application/zip"
    forged = fake.file_download_url(f.id).replace("signature=", "signature=AAAA")
    assert httpx.get(forged, timeout=5).status_code == 401

    assert client.files.delete(f.id) is True
    with pytest.raises(ReplicateError) as ei:
        client.files.get(f.id)
    assert ei.value.status == 404


def test_files_create_over_limit_is_413(client, fake):
    fake.max_file_bytes = 1024 * 1024
    big = io.BytesIO(b"\0" * (1024 * 1024 + 1))
    big.name = "too-big.bin"
    with pytest.raises(ReplicateError) as ei:
        client.files.create(big)
    assert ei.value.status == 413
    assert "maximum" in ei.value.detail
    assert fake.files == {}
    assert os.listdir(fake._tmpdir) == []  # the temp file was removed

    ok = io.BytesIO(b"\1" * (1024 * 1024))  # exactly at the limit is fine
    ok.name = "ok.bin"
    assert client.files.create(ok).size == 1024 * 1024


def test_proxy_html_413(client, fake):
    fake.inject("POST", r"^/v1/files$", "413_html")
    with pytest.raises(ReplicateError) as ei:
        client.files.create(io.BytesIO(b"x"))
    err = ei.value
    assert err.status == 413
    assert err.title is None and err.detail is None  # body was HTML, not JSON


# --------------------------------------------------------------------------- predictions


def test_predictions_create_get_cancel(client, fake, receiver):
    vid = fake.latest_version_id()
    p = client.predictions.create(
        version=vid,
        input={"dataset": "https://example.invalid/unknown.zip", "steps": 10},
        webhook=receiver.url,
        webhook_events_filter=["start", "completed"],
    )
    assert p.status == "starting"
    assert p.model == TRAINER_MODEL and p.version == vid
    assert p.urls["get"] == f"{fake.base_url}/v1/predictions/{p.id}"
    assert p.urls["cancel"] == f"{fake.base_url}/v1/predictions/{p.id}/cancel"
    assert p.started_at is None and p.completed_at is None and p.metrics is None
    raw = fake.predictions[p.id]
    assert raw["data_removed"] is False and raw["source"] == "api"
    body = fake.requests_to("POST", r"^/v1/predictions$")[-1].json()
    assert body["webhook_events_filter"] == ["start", "completed"] and body["webhook"] == receiver.url

    got = client.predictions.get(p.id)
    assert got.id == p.id and got.input["steps"] == 10

    fake.start(p.id)
    canceled = client.predictions.cancel(p.id)
    assert canceled.status == "canceled"
    assert canceled.completed_at is not None
    assert set(canceled.metrics) == {"predict_time", "total_time"}

    # cancelling a finished prediction leaves it alone
    q = client.predictions.create(version=f"{TRAINER_MODEL}:{vid}", input={})  # owner/name:id form
    fake.succeed(q.id, output="done")
    q.cancel()
    assert q.status == "succeeded" and q.output == "done"

    # model-scoped endpoint uses the model's latest version
    r = client.models.predictions.create(model=TRAINER_MODEL, input={"x": 1})
    assert r.version == vid
    assert fake.create_calls == 3 and fake.predictions_created == 3


def test_unknown_version_is_422(client, fake):
    with pytest.raises(ReplicateError) as ei:
        client.predictions.create(version="0" * 64, input={})
    assert ei.value.status == 422
    assert ei.value.title == "Invalid version or not permitted"
    assert fake.create_calls == 1 and fake.predictions_created == 0


def test_predictions_list_pagination(client, fake):
    fake.page_size = 2
    ids = [client.predictions.create(version=fake.latest_version_id(), input={"i": i}).id for i in range(5)]
    pages = list(replicate.paginate(client.predictions.list))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [p.id for page in pages for p in page] == list(reversed(ids))  # newest first
    assert pages[0].next.startswith(f"{fake.base_url}/v1/predictions?cursor=")
    assert pages[1].previous.startswith(f"{fake.base_url}/v1/predictions?cursor=")
    assert [p.id for p in client.predictions.list(pages[1].previous)] == list(reversed(ids))[:2]
    # a prediction created mid-iteration does not shift the cursor
    newer = client.predictions.create(version=fake.latest_version_id(), input={}).id
    assert [p.id for p in client.predictions.list(pages[0].next)] == list(reversed(ids))[2:4]
    assert client.predictions.list().results[0].id == newer


def test_wait_and_reload_follow_the_test_driven_state(client, fake):
    p = client.predictions.create(version=fake.latest_version_id(), input={})
    done = threading.Event()
    seen: list[str] = []

    def waiter():
        p.wait()  # polls GET /v1/predictions/{id} every client.poll_interval
        done.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    time.sleep(0.1)
    assert not done.is_set()
    fake.start(p.id, logs="loading model\n")
    fake.append_logs(p.id, " 50%|#####     | 5/10 [00:01<00:01]\n")
    q = client.predictions.get(p.id)
    seen.append(q.status)
    assert q.progress is not None and q.progress.current == 5 and q.progress.total == 10
    fake.set_output(p.id, ["https://example.invalid/checkpoint-5.safetensors"])
    time.sleep(0.1)
    assert not done.is_set()
    fake.succeed(p.id, output=["https://example.invalid/lora.safetensors"], predict_time=12.5)
    t.join(timeout=5)
    assert done.is_set()
    assert seen == ["processing"]
    assert p.status == "succeeded"
    assert p.output == ["https://example.invalid/lora.safetensors"]
    assert p.logs.startswith("loading model\n")
    assert p.metrics["predict_time"] == 12.5 and p.metrics["total_time"] >= 0.2
    assert p.created_at <= p.started_at <= p.completed_at
    assert len(fake.requests_to("GET", rf"^/v1/predictions/{p.id}$")) >= 3

    f = client.predictions.create(version=fake.latest_version_id(), input={})
    fake.fail(f.id, "CUDA out of memory", logs="Traceback ...\n")
    f.reload()
    assert (f.status, f.error) == ("failed", "CUDA out of memory")
    with pytest.raises(ValueError):
        fake.start(f.id)  # terminal states are final unless force=True


def test_aborted_status_is_not_understood_by_client(client, fake):
    p = client.predictions.create(version=fake.latest_version_id(), input={})
    fake.abort(p.id)
    assert fake.predictions[p.id]["status"] == "aborted"
    # replicate 1.0.7's Prediction.status Literal lacks "aborted": parsing fails
    with pytest.raises(pydantic_v1.ValidationError):
        client.predictions.get(p.id)


# --------------------------------------------------------------------------- faults


def test_429_get_is_retried_by_client_honouring_retry_after(client, fake):
    p = client.predictions.create(version=fake.latest_version_id(), input={})
    inj = fake.inject("GET", rf"^/v1/predictions/{p.id}$", "429", times=2, retry_after=1)
    t0 = time.monotonic()
    got = client.predictions.get(p.id)  # RetryTransport retries GET on 429/503/504
    elapsed = time.monotonic() - t0
    assert got.id == p.id
    assert inj.hits == 2 and inj.exhausted
    assert len(fake.requests_to("GET", rf"^/v1/predictions/{p.id}$")) == 3
    assert 2.0 <= elapsed < 5.0


def test_429_post_is_not_retried(client, fake):
    fake.inject("POST", r"^/v1/predictions$", "429", retry_after=7)
    with pytest.raises(ReplicateError) as ei:
        client.predictions.create(version=fake.latest_version_id(), input={})
    err = ei.value
    assert err.status == 429
    assert "Request was throttled" in err.detail
    assert fake.create_calls == 1 and fake.predictions_created == 0
    # the raw answer carries Retry-After and Replicate's retry_after field
    fake.inject("POST", r"^/v1/predictions$", "429", retry_after=7)
    r = httpx.post(fake.url("/v1/predictions"), json={}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.headers["Retry-After"] == "7" and r.json()["retry_after"] == 7


def test_5xx_retry_behaviour_of_client(client, fake):
    fake.inject("GET", r"^/v1/account$", "503")  # retried (short backoff without Retry-After)
    assert client.accounts.current().username == fake.username
    fake.inject("GET", r"^/v1/account$", "500")  # not retried
    with pytest.raises(ReplicateError) as ei:
        client.accounts.current()
    assert ei.value.status == 500
    fake.inject("GET", r"^/v1/account$", "502")  # not retried, HTML body
    with pytest.raises(ReplicateError) as ei:
        client.accounts.current()
    assert ei.value.status == 502 and ei.value.detail is None
    assert len(fake.requests_to("GET", r"^/v1/account$")) == 4


def test_402_insufficient_credit(client, fake):
    fake.inject("POST", r"/predictions$", "402")
    with pytest.raises(ReplicateError) as ei:
        client.models.predictions.create(model=TRAINER_MODEL, input={})
    assert ei.value.status == 402
    assert ei.value.title == "Insufficient credit"
    assert fake.predictions_created == 0


def test_drop_raises_httpx_transport_error(client, fake):
    fake.inject("GET", r"^/v1/account$", "drop")
    with pytest.raises(httpx.RemoteProtocolError) as ei:
        client.accounts.current()
    assert isinstance(ei.value, httpx.TransportError)
    assert client.accounts.current().username == fake.username  # next request is fine

    fake.inject("POST", r"^/v1/predictions$", "drop")
    with pytest.raises(httpx.TransportError):
        client.predictions.create(version=fake.latest_version_id(), input={})
    assert fake.create_calls == 1 and fake.predictions_created == 0


def test_after_create_500_creates_the_prediction(client, fake):
    fake.inject("POST", r"^/v1/predictions$", "after_create_500")
    with pytest.raises(ReplicateError) as ei:
        client.predictions.create(version=fake.latest_version_id(), input={"job": "j-1"})
    assert ei.value.status == 500
    assert fake.create_calls == 1 and fake.predictions_created == 1
    (pid,) = fake.predictions
    assert [p.id for p in client.predictions.list()] == [pid]

    fake.inject("POST", r"^/v1/predictions$", "after_create_drop")
    with pytest.raises(httpx.TransportError):
        client.predictions.create(version=fake.latest_version_id(), input={"job": "j-2"})
    assert fake.create_calls == 2 and fake.predictions_created == 2


def test_hold_keeps_a_request_in_flight_until_released(client, fake):
    """``hold``: not handled until released; ``hold_after_create``: created, answer held."""
    results: dict = {}

    def create(key, job):
        results[key] = client.predictions.create(version=fake.latest_version_id(), input={"job": job}).id

    held = fake.inject("POST", r"^/v1/predictions$", "hold")
    t = threading.Thread(target=create, args=("a", "j-1"))
    t.start()
    assert held.arrived.wait(10)
    time.sleep(0.2)
    assert fake.predictions_created == 0 and t.is_alive()
    held.release()
    t.join(10)
    assert fake.predictions_created == 1 and results["a"] in fake.predictions

    held = fake.inject("POST", r"^/v1/files$", "hold_after_create")
    t = threading.Thread(target=lambda: results.setdefault("f", client.files.create(io.BytesIO(b"data")).id))
    t.start()
    assert held.arrived.wait(10)
    assert len(fake.files) == 1 and t.is_alive()  # stored; the client has no answer yet
    held.release()
    t.join(10)
    assert list(fake.files) == [results["f"]]


def test_files_list_and_delete_remove_the_bytes(client, fake):
    f = client.files.create(io.BytesIO(b"dataset bytes"), metadata={"stcloud_job_id": "job_1"})
    path = fake.file_path(f.id)
    assert [x.id for x in client.files.list()] == [f.id] and client.files.list()[0].metadata == {"stcloud_job_id": "job_1"}
    assert client.files.delete(f.id) is True
    assert fake.files == {} and not os.path.exists(path)
    with pytest.raises(ReplicateError) as ei:
        client.files.delete(f.id)
    assert ei.value.status == 404


# --------------------------------------------------------------------------- webhooks


def test_webhook_signature_verifies_with_standardwebhooks(client, fake, receiver):
    secret = client.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    p = client.predictions.create(version=fake.latest_version_id(), input={}, webhook=receiver.url)
    fake.succeed(p.id, output=["https://example.invalid/lora.safetensors"])

    d = fake.send_webhook(p.id)
    assert d.ok and d.event == "completed" and d.msg_id.startswith("msg_")
    assert d.elapsed < 5
    got = receiver.received[-1]
    h = _hdrs(got)
    assert h["webhook-id"] == d.msg_id
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 10
    assert h["webhook-signature"].startswith("v1,")
    payload = Webhook(secret.key).verify(got["body"], got["headers"])
    assert payload == fake.predictions[p.id] and payload["status"] == "succeeded"
    # the replicate client's own validator agrees
    Webhooks.validate(headers=got["headers"], body=got["body"], secret=secret, tolerance=300)

    # stale timestamp: valid signature, but too old for the 5-minute tolerance
    fake.send_webhook(p.id, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret.key).verify(receiver.received[-1]["body"], receiver.received[-1]["headers"])
    # forged signature
    fake.send_webhook(p.id, signature="v1,Zm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2VkZm9yZ2Vk")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret.key).verify(receiver.received[-1]["body"], receiver.received[-1]["headers"])
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(headers=receiver.received[-1]["headers"], body=receiver.received[-1]["body"], secret=secret)


def test_rotate_secret_changes_the_key(client, fake, receiver):
    old = client.webhooks.default.secret().key
    new = fake.rotate_secret()
    assert new != old and client.webhooks.default.secret().key == new
    p = client.predictions.create(version=fake.latest_version_id(), input={}, webhook=receiver.url)
    fake.send_webhook(p.id)
    got = receiver.received[-1]
    Webhook(new).verify(got["body"], got["headers"])
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(got["body"], got["headers"])


def test_webhook_id_is_stable_on_redelivery(client, fake, receiver):
    p = client.predictions.create(version=fake.latest_version_id(), input={}, webhook=receiver.url)
    fake.succeed(p.id, output="ok")
    secret = client.webhooks.default.secret().key

    receiver.statuses = [500, 200]  # first attempt fails, the retry succeeds
    d = fake.send_webhook(p.id, retries=2, retry_delay=0.05)
    assert d.ok and d.attempt == 2
    first, second = receiver.received[-2:]
    assert _hdrs(first)["webhook-id"] == _hdrs(second)["webhook-id"] == d.msg_id
    assert first["body"] == second["body"]
    assert [x.status_code for x in fake.deliveries[-2:]] == [500, 200]

    again = fake.redeliver(d)  # e.g. a manual "resend" from the dashboard
    assert again.msg_id == d.msg_id and again.ok
    for got in receiver.received[-3:]:
        Webhook(secret).verify(got["body"], got["headers"])


def test_auto_webhooks_honour_events_filter(receiver):
    with FakeReplicate(tokens=(TOKEN,), auto_webhooks=True) as fake:
        c = fake.client()
        only_done = c.predictions.create(
            version=fake.latest_version_id(), input={}, webhook=receiver.url, webhook_events_filter=["completed"]
        )
        everything = c.predictions.create(version=fake.latest_version_id(), input={}, webhook=receiver.url)
        for pid in (only_done.id, everything.id):
            fake.start(pid, logs="step 1\n")
            fake.set_output(pid, ["partial"])
            fake.succeed(pid, output=["final"])
        fake.flush_webhooks(timeout=10)

        by_pred: dict[str, list[str]] = {}
        for d in fake.deliveries:
            assert d.ok
            by_pred.setdefault(d.prediction_id, []).append(d.event)
        assert by_pred[only_done.id] == ["completed"]
        assert by_pred[everything.id] == ["start", "logs", "output", "completed"]

        secret = c.webhooks.default.secret().key
        bodies = [Webhook(secret).verify(r["body"], r["headers"]) for r in receiver.received]
        last = [b for b in bodies if b["id"] == only_done.id][-1]
        assert last["status"] == "succeeded" and last["output"] == ["final"]
        statuses = [b["status"] for b in bodies if b["id"] == everything.id]
        assert statuses == ["starting", "processing", "processing", "succeeded"]
        assert len({_hdrs(r)["webhook-id"] for r in receiver.received}) == len(receiver.received)


def test_signer_matches_standardwebhooks(fake):
    from datetime import datetime

    ts = 1_700_000_000
    body = json.dumps({"id": "abc", "status": "succeeded"})
    expected = Webhook(fake.webhook_secret).sign("msg_x", datetime.fromtimestamp(ts, tz=UTC), body)
    assert sign_webhook(fake.webhook_secret, "msg_x", ts, body) == expected


def test_concurrent_creates_are_counted(client, fake):
    errors: list[BaseException] = []

    def create(i):
        try:
            client.predictions.create(version=fake.latest_version_id(), input={"i": i})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors
    assert fake.create_calls == fake.predictions_created == len(fake.predictions) == 8
    assert sorted(p["input"]["i"] for p in fake.predictions.values()) == list(range(8))


def test_requests_are_recorded(client, fake):
    client.predictions.create(version=fake.latest_version_id(), input={"k": "v"})
    rec = fake.requests_to("POST", r"^/v1/predictions$")[-1]
    assert rec.json()["input"] == {"k": "v"}
    assert rec.time <= time.time()
    assert json.loads(rec.body)["version"] == fake.latest_version_id()
