"""Datasets over Replicate's 100 MiB file limit (stcloud/jobs/dataset_url.py): with a public
URL the fake Replicate receives a presigned link to the built-in S3 endpoint instead of a
file, downloads the archive through it, and the job completes; the stored object is shared
by a re-run and deleted once no unfinished job uses it. Without a public URL: 413, saying
how to lift it."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from stcloud.jobs import dataset_url
from stcloud.packaging import sha256_file
from tests.conftest import serve_in_thread
from tests.providers.fixtures import (  # noqa: F401 - fixtures
    TOKEN,
    dataloader_for,
    dump,
    fake,
    job_of,
    poll,
    rapp,
    rclient,
    set_consent,
    submit_body,
)

pytestmark = pytest.mark.timeout(600)

SUBMIT = "/api/cloud/jobs/submit"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory) -> Path:
    """150 MiB of incompressible images (+ captions): over Replicate's 100 MiB limit."""
    root = tmp_path_factory.mktemp("big") / "photos"
    root.mkdir()
    for i in range(3):
        with open(root / f"img_{i}.png", "wb") as fh:
            for _ in range(50):
                fh.write(os.urandom(MiB))
        (root / f"img_{i}.txt").write_text(f"photo {i}\n")
    return root


def _files_calls(fake) -> int:
    return len(fake.requests_to("POST", r"/v1/files$"))


def _only_prediction(fake) -> dict:
    preds = list(fake.predictions.values())
    assert len(preds) == 1, preds
    return preds[0]


def test_over_the_limit_goes_by_presigned_url(rapp, rclient, fake, big_dataset):
    with serve_in_thread(rapp) as url:
        rapp.config["STCLOUD_PUBLIC_URL"] = url
        set_consent(rclient, "ask")
        # the consent summary says where the data goes
        r = rclient.post(SUBMIT, json=submit_body(big_dataset))
        assert r.status_code == 409, dump(r)
        dest = r.get_json()["summary"]["destination"]
        assert "presigned link" in dest and f"{url}/api/cloud/storage" in dest
        assert "presigned link" in r.get_json()["detail"]

        r = rclient.post(SUBMIT, json=submit_body(big_dataset, data_consent=True))
        assert r.status_code == 201, dump(r)
        job = r.get_json()["job"]
        assert _files_calls(fake) == 0  # no file upload
        pred = _only_prediction(fake)
        link = pred["input"]["images"]
        parts = urlsplit(link)
        assert link.startswith(f"{url}/api/cloud/storage/{dataset_url.BUCKET}/{job['dataset_sha256']}.zip?")
        assert "X-Amz-Signature=" in parts.query and "X-Amz-Expires=86400" in parts.query
        # the link is the authorisation: without its signature the endpoint refuses
        assert requests.get(f"{parts.scheme}://{parts.netloc}{parts.path}", timeout=30).status_code == 403

        got = fake.fetch_input(pred["id"])  # what the trainer's container does
        assert got["status"] == 200 and got["sha256"] == job["dataset_sha256"]
        assert got["size"] > 150 * MiB
        assert not list((Path(rapp.config["STCLOUD_HOME"]) / "uploads").glob("*.zip"))  # not kept there

        fake.start_prediction(pred["id"], logs="step 1/10\n")
        fake.succeed(pred["id"], output=[], predict_time=12.0)
        poll(rapp)
        assert job_of(rclient, job["id"])["status"] == "completed"

        # a re-run of the same data reuses the stored object
        stored = Path(rapp.config["STCLOUD_HOME"]) / "cloud_outputs"
        with rapp.app_context():
            from stcloud.storage import service as storage_service

            obj = storage_service.backend().object_path(dataset_url.BUCKET, f"{job['dataset_sha256']}.zip")
            assert obj.is_file() and sha256_file(obj) == job["dataset_sha256"]
            first_mtime = obj.stat().st_mtime_ns
        r = rclient.post(SUBMIT, json=submit_body(big_dataset, data_consent=True, name="again"))
        assert r.status_code == 201, dump(r)
        second = r.get_json()["job"]
        assert second["dataset_sha256"] == job["dataset_sha256"]
        assert obj.stat().st_mtime_ns == first_mtime  # not written again
        pred2 = [p for p in fake.predictions.values() if p["id"] != pred["id"]][0]
        assert fake.fetch_input(pred2["id"])["sha256"] == job["dataset_sha256"]

        with rapp.app_context():
            assert dataset_url.cleanup() == 0  # the re-run still uses it
        fake.fail(pred2["id"], error="boom")
        poll(rapp)
        assert job_of(rclient, second["id"])["status"] == "failed"
        with rapp.app_context():
            assert dataset_url.cleanup() == 1  # no unfinished job left: deleted
        assert not obj.exists() and stored.is_dir()


def test_without_public_url_it_stays_413(rapp, rclient, fake, big_dataset):
    set_consent(rclient, "allow")
    r = rclient.post(SUBMIT, json=submit_body(big_dataset))
    assert r.status_code == 413, dump(r)
    body = r.get_json()
    assert "accepts at most 100 MiB" in body["detail"]
    assert "Set the public URL" in body["detail"]
    assert _files_calls(fake) == 0 and not fake.predictions
