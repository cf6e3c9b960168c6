"""The Replicate adapter on the official client, against the fake over loopback (no app)."""
from __future__ import annotations

import json
import zipfile

import pytest

from stcloud.providers.base import CloudJobStatus
from stcloud.providers.replicate import (
    JOB_ID_INPUT,
    ReplicateAPIError,
    ReplicateService,
)
from tests.providers.fixtures import TOKEN

pytestmark = pytest.mark.timeout(60)


def svc(fake, token=TOKEN, **kw) -> ReplicateService:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("retry_after_cap", 0)
    kw.setdefault("timeout", 5)
    kw.setdefault("connect_timeout", 2)
    return ReplicateService(token, base_url=fake.base_url, **kw)


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "job_x.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("datasets/a/1.txt", "hello")
        zf.writestr("datasets/a/1.png", b"\x89PNG" + b"0" * 300_000)
    return path


def test_no_token_is_a_clear_error():
    svc = ReplicateService(None)  # it still says what it is
    assert svc.not_ready_reason().startswith("REPLICATE_API_TOKEN not set")
    with pytest.raises(ReplicateAPIError, match="REPLICATE_API_TOKEN not set"):
        svc.validate_credentials()


def test_validate_credentials_good_and_bad(fake):
    assert svc(fake).validate_credentials()["username"] == "stcloud-test"
    with pytest.raises(ReplicateAPIError) as err:
        svc(fake, token="r8_wrong").validate_credentials()
    assert err.value.kind == "auth" and str(err.value).startswith("invalid token")
    assert "r8_wrong" not in str(err.value)


def test_versions_newest_first_and_resolve(fake):
    s = svc(fake)
    versions = s.list_versions()
    assert [v["id"] for v in versions] == [v["id"] for v in reversed(fake.versions["simpletuner/advanced-trainer"])]
    assert s.resolve_version() == fake.latest_version_id()
    pinned = versions[-1]["id"]
    assert svc(fake, version=pinned).resolve_version() == pinned


def test_versions_follow_next_pages(fake):
    fake.page_size = 2
    assert len(svc(fake).list_versions()) == 3


def test_upload_streams_with_progress(fake, archive):
    seen = []
    up = svc(fake).upload_file(archive, job_id="job_x", progress=lambda d, t: seen.append((d, t)))
    size = archive.stat().st_size
    assert up.size == size and up.url == fake.files[up.id]["urls"]["get"]
    assert fake.files[up.id]["metadata"] == {JOB_ID_INPUT: "job_x"}
    assert seen[-1] == (size, size) and len(seen) > 1  # streamed in chunks
    assert fake.file_bytes(up.id) == archive.read_bytes()


def test_upload_too_large_error(fake, archive):
    fake.max_file_bytes = 1000
    with pytest.raises(ReplicateAPIError) as err:
        svc(fake).upload_file(archive)
    assert err.value.kind == "too_large" and "archive too large" in str(err.value)


def test_build_input_uses_json_strings():
    inp = ReplicateService.build_input({"a": 1}, [{"id": "x"}], {"images": "http://f", "hub_model_id": "u/m"})
    assert inp == {"config_json": '{"a": 1}', "dataloader_json": '[{"id": "x"}]',
                   "images": "http://f", "hub_model_id": "u/m"}


def test_create_sets_job_id_and_webhook(fake):
    res = svc(fake).create_prediction(job_id="job_1", input={"config_json": "{}"},
                                      webhook="https://x.example/api/webhooks/replicate")
    assert not res.adopted and res.attempts == 1
    sent = fake.requests_to("POST", r"^/v1/predictions$")[0].json()
    assert sent["input"][JOB_ID_INPUT] == "job_1"
    assert sent["webhook"] == "https://x.example/api/webhooks/replicate"
    assert sent["webhook_events_filter"] == ["start", "output", "logs", "completed"]
    assert sent["version"] == fake.latest_version_id()


def test_create_429_waits_retry_after_then_succeeds(fake):
    slept = []
    fake.inject("POST", r"^/v1/predictions$", "429", times=2, retry_after=7)
    res = svc(fake, sleep=slept.append).create_prediction(job_id="job_2", input={})
    assert slept == [7.0, 7.0]  # Retry-After honoured (the original, not the capped value)
    assert fake.create_calls == 3 and fake.predictions_created == 1 and res.attempts == 3


def test_create_429_with_a_long_retry_after_gives_up(fake):
    fake.inject("POST", r"^/v1/predictions$", "429", times=None, retry_after=3600)
    with pytest.raises(ReplicateAPIError) as err:
        svc(fake, sleep=lambda s: None).create_prediction(job_id="job_3", input={})
    assert err.value.kind == "rate_limited" and err.value.retry_after == 3600
    assert fake.predictions_created == 0 and fake.create_calls == 1


def test_create_dropped_after_create_is_adopted(fake):
    fake.inject("POST", r"^/v1/predictions$", "after_create_drop", times=1)
    res = svc(fake).create_prediction(job_id="job_4", input={})
    assert res.adopted and fake.predictions_created == 1 and fake.create_calls == 1
    assert res.prediction["input"][JOB_ID_INPUT] == "job_4"


def test_create_drop_before_processing_is_retried(fake):
    fake.inject("POST", r"^/v1/predictions$", "drop", times=1)
    res = svc(fake).create_prediction(job_id="job_5", input={})
    assert not res.adopted and fake.create_calls == 2 and fake.predictions_created == 1


def test_create_uncertain_when_lookup_fails(fake):
    fake.inject("POST", r"^/v1/predictions$", "after_create_500", times=1)
    fake.inject("GET", r"^/v1/predictions$", "500", times=None)
    with pytest.raises(ReplicateAPIError) as err:
        svc(fake).create_prediction(job_id="job_6", input={})
    assert err.value.kind == "uncertain"
    assert fake.create_calls == 1  # never retried blind


def test_create_non_retryable_errors(fake):
    fake.inject("POST", r"^/v1/predictions$", "402", times=1)
    with pytest.raises(ReplicateAPIError) as err:
        svc(fake).create_prediction(job_id="job_7", input={})
    assert err.value.kind == "payment" and "insufficient credit" in str(err.value)
    assert fake.create_calls == 1
    with pytest.raises(ReplicateAPIError) as err:
        svc(fake, version="0" * 64).create_prediction(job_id="job_8", input={})
    assert err.value.kind == "invalid" and err.value.status == 422


def test_find_prediction_pages_through(fake):
    fake.page_size = 2
    s = svc(fake)
    target = s.create_prediction(job_id="job_old", input={}).prediction["id"]
    for i in range(5):
        s.create_prediction(job_id=f"job_{i}", input={})
    assert s.find_prediction_for_job("job_old")["id"] == target
    assert s.find_prediction_for_job("job_none") is None


def test_status_logs_cancel_and_aborted(fake):
    s = svc(fake)
    pid = s.create_prediction(job_id="job_9", input={}).prediction["id"]
    assert s.get_job_status(pid).status == CloudJobStatus.QUEUED
    fake.start(pid, logs="step 1/10\n")
    info = s.get_job_status(pid)
    assert info.status == CloudJobStatus.RUNNING and s.get_job_logs(pid) == "step 1/10\n"
    assert s.cancel_job(pid) is True
    assert fake.get_prediction(pid)["status"] == "canceled"
    assert s.cancel_job("doesnotexist") is False
    pid2 = s.create_prediction(job_id="job_10", input={}).prediction["id"]
    fake.abort(pid2)  # the client's pydantic model cannot parse "aborted": raw fallback
    info = s.get_job_status(pid2)
    assert info.raw_status == "aborted" and info.status == CloudJobStatus.FAILED


def test_get_429_keeps_the_original_retry_after(fake):
    s = svc(fake)
    pid = s.create_prediction(job_id="job_11", input={}).prediction["id"]
    fake.inject("GET", rf"^/v1/predictions/{pid}$", "429", times=None, retry_after=90)
    with pytest.raises(ReplicateAPIError) as err:
        s.get_prediction(pid)
    assert err.value.kind == "rate_limited" and err.value.retry_after == 90


def test_connection_refused_is_a_connection_error():
    s = ReplicateService(TOKEN, base_url="http://127.0.0.1:9", connect_timeout=1)
    with pytest.raises(ReplicateAPIError) as err:
        s.validate_credentials()
    assert err.value.kind == "connection" and "127.0.0.1:9" in str(err.value)


def test_run_job_uploads_and_creates(fake, archive):
    from stcloud.providers.base import RunRequest

    info = svc(fake).run_job(RunRequest(job_id="job_12", name="n", config={"x": 1},
                                        dataloader_config=[{"id": "a"}], archive_path=str(archive)))
    pred = fake.get_prediction(info.provider_job_id)
    assert json.loads(pred["input"]["config_json"]) == {"x": 1}
    assert pred["input"]["images"].startswith(fake.base_url + "/v1/files/")


def test_upload_has_a_timeout_although_the_client_passes_none(archive):
    import socket
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # accepts at the TCP level, never answers
    try:
        s = ReplicateService(TOKEN, base_url=f"http://127.0.0.1:{srv.getsockname()[1]}", connect_timeout=1,
                             upload_timeout=1, backoff=0.01)
        t0 = time.monotonic()
        with pytest.raises(ReplicateAPIError) as err:
            s.upload_file(archive, attempts=1)
        assert err.value.kind == "timeout" and time.monotonic() - t0 < 10
    finally:
        srv.close()
