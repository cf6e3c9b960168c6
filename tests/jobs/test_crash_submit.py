"""kill -9 of a real ``stcloud serve`` at each step of the submit pipeline, then a restart.

The fake Replicate API runs in this test process; the server is a separate process talking to
it over loopback. Each test stops the submit at one step — packaging (a hook loaded through
PYTHONPATH, ``crash_hook/sitecustomize.py``), the file upload or the prediction create (the
fake keeps the request in flight: ``hold_after_create``), after the create answered (the hook)
— kills the server with SIGKILL there, restarts it on the same home and proves, within a few
reconcile intervals (``STCLOUD_RECONCILE_SECONDS=1``): no untracked remote job, no job stuck
in pending/uploading, no upload left on the provider that no job uses, no archive left on
disk, the spend counted once.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fakes.replicate_fake import FakeReplicate
from tests.providers.fixtures import CONFIG, TOKEN, dataloader_for, make_dataset

pytestmark = pytest.mark.timeout(180)

HOOK_DIR = Path(__file__).parent / "crash_hook"
PREDICT_SECONDS = 50.0


@pytest.fixture
def fake():
    f = FakeReplicate(tokens=(TOKEN,))
    f.start()
    yield f
    f.stop()


class Crash:
    """One server home, its dataset, and the server process of the moment."""

    def __init__(self, serve_process, fake: FakeReplicate, tmp_path: Path):
        self.serve_process, self.fake = serve_process, fake
        self.home = tmp_path / "home"
        self.pause_dir = tmp_path / "pause"
        self.pause_dir.mkdir()
        self.dataset = make_dataset(self.home / "datasets" / "photos")
        self.server = None
        self.submit_thread: threading.Thread | None = None

    def env(self, pause_at: str | None = None) -> dict:
        env = {"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": self.fake.base_url,
               "STCLOUD_RECONCILE_SECONDS": "1"}
        if pause_at:
            env.update(STCLOUD_TEST_PAUSE_AT=pause_at, STCLOUD_TEST_PAUSE_DIR=str(self.pause_dir),
                       PYTHONPATH=os.pathsep.join(p for p in (str(HOOK_DIR), os.environ.get("PYTHONPATH")) if p))
        return env

    def start(self, pause_at: str | None = None):
        self.server = self.serve_process(home=self.home, env=self.env(pause_at))
        return self.server

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, self.server.url + path, timeout=30, **kw)

    def body(self) -> dict:
        return {"provider": "replicate", "name": "crash", "config": dict(CONFIG),
                "dataloader_config": dataloader_for(self.dataset), "idempotency_key": "crash-once"}

    def submit_in_background(self) -> None:
        r = self.api("PUT", "/api/cloud/settings/consent", json={"consent": "allow"})
        assert r.status_code == 200, r.text
        body = self.body()

        def post():
            try:
                requests.post(self.server.url + "/api/cloud/jobs/submit", json=body, timeout=120)
            except requests.RequestException:
                pass  # the server is killed under it

        self.submit_thread = threading.Thread(target=post, daemon=True)
        self.submit_thread.start()

    def wait_marker(self, step: str, timeout: float = 60) -> None:
        marker = self.pause_dir / f"{step}.reached"
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert time.monotonic() < deadline, f"the submit never reached {step}: {self.log()}"
            time.sleep(0.05)

    def only_job_id(self) -> str:
        jobs = self.api("GET", "/api/cloud/jobs").json()["jobs"]
        assert len(jobs) == 1, jobs
        return jobs[0]["id"]

    def kill(self) -> None:
        proc = self.server.proc
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        if self.submit_thread is not None:
            self.submit_thread.join(30)

    def job(self, job_id: str) -> dict:
        r = self.api("GET", f"/api/cloud/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()["job"]

    def events(self, job_id: str) -> list[dict]:
        return self.api("GET", f"/api/cloud/jobs/{job_id}/events").json()["events"]

    def wait_until(self, what: str, check, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}; server log: {self.log()}"
            time.sleep(0.2)

    def settled(self, job_id: str) -> dict:
        """The job once it left pending/uploading (a few reconcile intervals at most)."""
        return self.wait_until("the job to leave pending/uploading",
                               lambda: (j := self.job(job_id))["status"] not in ("pending", "uploading") and j,
                               timeout=15)

    def spent(self) -> float:
        return self.api("GET", "/api/cloud/cost-limit/status?provider=replicate").json()["spent_usd"]

    def archives_on_disk(self) -> list[str]:
        folder = self.home / "uploads"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def log(self) -> str:
        try:
            return self.server.log_path.read_text()[-3000:]
        except (OSError, AttributeError):
            return ""

    def assert_no_untracked_remote_job(self) -> None:
        """Every prediction is either cancelled or the remote job of an active/ended job."""
        tracked = {j["provider_job_id"] for j in self.api("GET", "/api/cloud/jobs").json()["jobs"]}
        for pred in self.fake.predictions.values():
            assert pred["status"] == "canceled" or pred["id"] in tracked, pred


@pytest.fixture
def crash(serve_process, fake, tmp_path):
    c = Crash(serve_process, fake, tmp_path)
    yield c
    fake.clear_faults()


def _adopted_job_runs_is_billed_once_and_loses_its_upload(crash: Crash, job_id: str, pred_id: str) -> None:
    fake = crash.fake
    job = crash.settled(job_id)
    assert job["status"] == "queued" and job["provider_job_id"] == pred_id
    assert any(e["source"] == "reconciler" and "adopted Replicate job" in (e["detail"] or "")
               for e in crash.events(job_id))
    assert fake.predictions_created == 1 and fake.create_calls == 1  # no second create after the restart
    # the client, which never got its answer, submits again with its idempotency key: the same job
    r = crash.api("POST", "/api/cloud/jobs/submit", json=crash.body())
    assert r.status_code == 200 and r.json()["idempotent"] is True and r.json()["job"]["id"] == job_id, r.text
    assert fake.predictions_created == 1
    crash.assert_no_untracked_remote_job()
    assert len(fake.files) == 1  # the running prediction reads it
    fake.start(pred_id, logs="step 10/200\n")
    fake.succeed(pred_id, predict_time=PREDICT_SECONDS)
    job = crash.wait_until("the poller to see the end",
                           lambda: (j := crash.job(job_id))["status"] == "completed" and j)
    rate = job["rate_usd_per_second"]
    assert job["cost_usd"] == pytest.approx(PREDICT_SECONDS * rate, abs=1e-6)
    assert crash.spent() == pytest.approx(PREDICT_SECONDS * rate, abs=1e-4)  # counted once (rounded to 4 places)
    crash.wait_until("the upload to be deleted", lambda: fake.files == {})
    crash.wait_until("no archive left on disk", lambda: crash.archives_on_disk() == [])


def test_kill_while_packaging(crash):
    crash.start(pause_at="package")
    crash.submit_in_background()
    crash.wait_marker("package")
    job_id = crash.only_job_id()
    partial = crash.archives_on_disk()
    assert len(partial) == 1 and partial[0].startswith(f".stcloud-archive-{job_id}.zip.")  # half-written
    crash.kill()
    crash.start()
    job = crash.settled(job_id)
    assert job["status"] == "failed" and "interrupted while packaging the datasets" in job["error"]
    crash.wait_until("the half-written archive to go", lambda: crash.archives_on_disk() == [])
    assert crash.fake.files == {} and crash.fake.predictions == {}
    assert not crash.fake.requests_to("POST", r"^/v1/files$")


def test_kill_during_file_upload(crash):
    hold = crash.fake.inject("POST", r"^/v1/files$", "hold_after_create")
    crash.start()
    crash.submit_in_background()
    assert hold.arrived.wait(60), crash.log()
    job_id = crash.only_job_id()
    assert len(crash.fake.files) == 1  # Replicate has the file; stcloud never heard back
    crash.kill()
    hold.release()
    crash.start()
    job = crash.settled(job_id)
    assert job["status"] == "failed" and "interrupted while uploading the dataset" in job["error"]
    crash.wait_until("the orphan upload to be deleted", lambda: crash.fake.files == {})
    crash.wait_until("no archive left on disk", lambda: crash.archives_on_disk() == [])
    assert crash.fake.predictions == {} and crash.spent() == 0


def test_kill_with_the_create_in_flight_adopts_the_prediction(crash):
    hold = crash.fake.inject("POST", r"^/v1/predictions$", "hold_after_create")
    crash.start()
    crash.submit_in_background()
    assert hold.arrived.wait(60), crash.log()
    job_id = crash.only_job_id()
    (pred_id,) = list(crash.fake.predictions)  # created on Replicate, its answer still in flight
    crash.kill()
    hold.release()
    crash.start()
    _adopted_job_runs_is_billed_once_and_loses_its_upload(crash, job_id, pred_id)


def test_kill_with_the_create_in_flight_cancels_it_when_told(crash):
    hold = crash.fake.inject("POST", r"^/v1/predictions$", "hold_after_create")
    crash.start()
    r = crash.api("PUT", "/api/cloud/settings/recovery", json={"orphan_policy": "cancel"})
    assert r.status_code == 200, r.text
    crash.submit_in_background()
    assert hold.arrived.wait(60), crash.log()
    job_id = crash.only_job_id()
    (pred_id,) = list(crash.fake.predictions)
    crash.kill()
    hold.release()
    crash.start()
    job = crash.settled(job_id)
    assert job["status"] == "cancelled" and job["provider_job_id"] == pred_id
    assert crash.fake.get_prediction(pred_id)["status"] == "canceled"
    crash.wait_until("the upload to be deleted", lambda: crash.fake.files == {})
    crash.assert_no_untracked_remote_job()
    crash.wait_until("no archive left on disk", lambda: crash.archives_on_disk() == [])


def test_kill_after_the_create_answered(crash):
    crash.start(pause_at="record")
    crash.submit_in_background()
    crash.wait_marker("record")
    job_id = crash.only_job_id()
    (pred_id,) = list(crash.fake.predictions)
    assert crash.job(job_id)["status"] == "uploading"  # created remotely, not yet recorded
    crash.kill()
    crash.start()
    _adopted_job_runs_is_billed_once_and_loses_its_upload(crash, job_id, pred_id)
