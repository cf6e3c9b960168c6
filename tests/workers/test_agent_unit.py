"""Agent pieces without processes: command building, safe unzip, log batches across blips."""
import random
import zipfile

import pytest

from stcloud.workers import agent as agent_mod
from stcloud.workers.agent import JobFailed, LogShipper, Transient, build_command, safe_extract
from tests.workers.helpers import get_job, queue_job


def test_build_command_default_and_placeholders():
    paths = {"config": "/w/config.json", "dataloader": "/w/dl.json", "output_dir": "/w/out", "job_id": "job_1",
             "work_dir": "/w"}
    cmd = build_command(None, paths)
    assert cmd[1:] == ["-m", "stcloud.trainer", "--config", "/w/config.json", "--dataloader", "/w/dl.json"]
    assert build_command("simpletuner train --config {config} --out '{output_dir}/x y'", paths) == [
        "simpletuner", "train", "--config", "/w/config.json", "--out", "/w/out/x y"]


def test_safe_extract_refuses_escapes(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("datasets/a/1.txt", "hi")
        zf.writestr("datasets/a/", "")
    assert safe_extract(good, tmp_path / "out") == 1
    assert (tmp_path / "out/datasets/a/1.txt").read_text() == "hi"
    for name in ("../evil.txt", "/abs.txt", "datasets/../../evil.txt"):
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr(name, "x")
        with pytest.raises(JobFailed):
            safe_extract(bad, tmp_path / "out2")
    assert not (tmp_path / "evil.txt").exists()
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("datasets/l")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(JobFailed):
        safe_extract(link, tmp_path / "out3")


class FlakyApi:
    """The worker API through the Flask test client; fails like a bad network: sometimes
    before the request reaches the server, sometimes after (the answer is lost)."""

    def __init__(self, client, token, rng):
        self.client, self.h, self.rng = client, {"Authorization": f"Bearer {token}"}, rng
        self.sent = 0

    def request(self, method, path, *, json_body=None, timeout=None, stream=False):
        roll = self.rng.random()
        if roll < 0.25:
            raise Transient("connection refused")
        resp = self.client.open(path, method=method, json=json_body, headers=self.h)
        self.sent += 1
        if roll < 0.5:
            raise Transient("read timeout")  # the server stored it; we never heard back
        if resp.status_code == 403:
            raise agent_mod.NotHeld("not held")
        assert resp.status_code < 400, resp.get_json()
        return resp


def test_log_batches_survive_blips_without_duplicates(app, client, monkeypatch):
    w = client.post("/api/cloud/workers", json={"name": "flaky"}).get_json()
    h = {"Authorization": f"Bearer {w['token']}"}
    client.post("/api/workers/register", json={}, headers=h)
    jid = queue_job(app, archive=False)
    assert client.post("/api/workers/claim", headers=h).get_json()["job"]["id"] == jid
    monkeypatch.setattr(agent_mod, "BATCH_LINES", 37)
    monkeypatch.setattr(agent_mod, "backoff_delays", lambda *a, **k: iter(lambda: 0.001, None))
    api = FlakyApi(client, w["token"], random.Random(1234))
    shipper = LogShipper(api, jid, first_seq=1, interval=0.01)
    shipper.start()
    lines = [f"step {i}/1000 loss={1 / i:.6f} lr=1.00e-03" for i in range(1, 1001)]
    for i, line in enumerate(lines):
        shipper.add(line)
        if i % 97 == 0:
            shipper.flush(5)
    shipper.close(30)
    assert not shipper.lost and shipper.idle()
    text = client.get(f"/api/cloud/jobs/{jid}/logs").get_json()["text"]
    assert text.splitlines() == lines  # every line once, in order
    job = get_job(app, jid)
    assert job.progress["step"] == 1000 and api.sent > job.log_seq  # there were real retries


def test_shipper_stops_when_the_job_is_no_longer_held(app, client):
    w = client.post("/api/cloud/workers", json={"name": "w"}).get_json()
    api = FlakyApi(client, w["token"], random.Random(0))
    api.rng = type("R", (), {"random": staticmethod(lambda: 0.9)})()
    shipper = LogShipper(api, "job_unknown", first_seq=1, interval=0.01)
    shipper.start()
    shipper.add("hello")
    assert shipper.flush(5)
    assert shipper.lost
    shipper.close(1)
