"""The agent's start of a job: the cache of extracted datasets (stcloud/workers/dataset_cache.py)
— the second job on the same data neither downloads nor extracts it, a job's writes stay in
its own tree — and the log shipper's pacing (the first step is shipped without delay)."""
import hashlib
import time
import zipfile

from stcloud.workers import dataset_cache
from stcloud.workers.agent import QUICK_FLUSH, Agent, LogShipper, safe_extract


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_store_lookup_link(tmp_path):
    sha = _zip(tmp_path / "a.zip", {"datasets/d/x.png": b"one", "datasets/d/x.txt": b"cap"})
    root = tmp_path / "cache"
    assert dataset_cache.lookup(root, sha) is None
    assert dataset_cache.lookup(root, "../etc") is None
    cached = dataset_cache.store(root, sha, tmp_path / "a.zip", safe_extract)
    assert dataset_cache.lookup(root, sha) == cached
    job = tmp_path / "job"
    assert dataset_cache.link_tree(cached, job) == 2
    assert (job / "datasets/d/x.png").read_bytes() == b"one"
    assert not (job / dataset_cache.MARKER).exists()
    (job / "datasets/d/new.json").write_text("{}")  # a trainer's file next to its data
    assert not (cached / "datasets/d/new.json").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp left


def test_prune_keeps_the_most_recent(tmp_path):
    root = tmp_path / "cache"
    shas = []
    for i in range(dataset_cache.KEEP + 2):
        sha = _zip(tmp_path / f"{i}.zip", {f"datasets/d/{i}.png": bytes([i])})
        dataset_cache.store(root, sha, tmp_path / f"{i}.zip", safe_extract)
        shas.append(sha)
    kept = {p.name for p in root.iterdir()}
    assert len(kept) == dataset_cache.KEEP and shas[-1] in kept and shas[0] not in kept


def test_second_job_on_the_same_data_is_not_downloaded(tmp_path, monkeypatch):
    sha = _zip(tmp_path / "a.zip", {"datasets/d/x.png": b"one"})
    agent = Agent("http://127.0.0.1:9", "stw_x", work_dir=tmp_path / "work")
    downloads = []

    def download(job_id, archive, dest, say):
        downloads.append(job_id)
        dest.write_bytes((tmp_path / "a.zip").read_bytes())

    monkeypatch.setattr(agent, "_download_archive", download)
    said = []
    for job_id in ("j1", "j2"):
        job = {"id": job_id, "config": {}, "archive": {"url": f"/api/workers/jobs/{job_id}/archive", "sha256": sha}}
        agent._prepare(job, tmp_path / "work" / job_id, None, said.append)
        assert (tmp_path / "work" / job_id / "datasets/d/x.png").read_bytes() == b"one"
    assert downloads == ["j1"]
    assert any("from this worker's cache" in m for m in said)


class _RecordingApi:
    def __init__(self):
        self.sent = []

    def request(self, method, path, *, json_body=None, timeout=None, stream=False):
        self.sent.append((time.monotonic(), list(json_body["lines"])))


def test_log_shipper_sends_a_burst_after_a_pause_at_once_and_paces_a_stream():
    """The first step shows without waiting out the interval; a steady stream still makes
    at most about one request per interval."""
    api = _RecordingApi()
    shipper = LogShipper(api, "j", 1, interval=0.5)
    shipper.start()
    try:
        started = time.monotonic()
        for line in ("stage: training", "step 1/100 loss=0.1"):
            shipper.add(line)
        deadline = time.monotonic() + 5
        while not api.sent and time.monotonic() < deadline:
            time.sleep(0.005)
        assert api.sent and api.sent[0][1] == ["stage: training", "step 1/100 loss=0.1"]
        assert api.sent[0][0] - started < 0.3  # not the 0.5 s interval
        n = len(api.sent)
        stream_started = time.monotonic()
        while time.monotonic() - stream_started < 2.0:  # a line every 20 ms for 2 s
            shipper.add("step")
            time.sleep(0.02)
        assert len(api.sent) - n <= 6  # ~1 per 0.5 s, not one per line
        shipper.flush(5)
        assert sum(len(lines) for _, lines in api.sent) == 2 + sum(1 for _, lines in api.sent for x in lines if x == "step")
    finally:
        shipper.close(5)


def test_log_shipper_ships_the_first_step_line_even_mid_stream():
    """Right after the worker's own lines went out (no quiet spell) the trainer's first step
    line still goes within QUICK_FLUSH, while the lines stream on; later steps wait out the
    interval. No thread: the shipper's schedule is read directly."""
    shipper = LogShipper(_RecordingApi(), "j", 1, interval=100.0)
    shipper._sent_at = time.monotonic()  # "[stcloud worker] running: ..." was just shipped
    shipper.add("stage: training")
    assert shipper._due() > 50  # an ordinary line waits for the interval
    shipper.add("step 1/10 loss=0.1 lr=1e-3")
    for _ in range(20):
        shipper.add("step 2/10 loss=0.1 lr=1e-3")
    assert shipper._due() <= QUICK_FLUSH
    seq, lines = shipper._next_batch()
    assert lines[:2] == ["stage: training", "step 1/10 loss=0.1 lr=1e-3"] and len(lines) == 22
    shipper._pending.clear()
    shipper._sent_at = time.monotonic()
    shipper.add("step 3/10 loss=0.1 lr=1e-3")
    assert shipper._due() > 50  # only the first step line is urgent
