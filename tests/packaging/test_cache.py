"""The content-addressed archive cache (stcloud/packaging/cache.py): a hit on an unchanged
dataset packages nothing, any change misses, and an edited file never gets a stale archive."""
import os
import time
import zipfile

import pytest

from stcloud.packaging import archive as archive_mod
from stcloud.packaging import cache


def _config(data):
    return [{"id": "d", "type": "local", "instance_data_dir": str(data)}]


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "a.png").write_bytes(b"\x89PNG one" * 100)
    (d / "a.txt").write_text("a red circle")
    old = time.time() - 60  # written a while ago (not "racily clean")
    for p in d.iterdir():
        os.utime(p, (old, old))
    return d


def _build(tmp_path, data, name):
    return cache.build_archive(_config(data), tmp_path / "uploads", archive_name=name,
                               cache_dir=tmp_path / "cache")


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_hit_on_rerun_packages_nothing(tmp_path, data, monkeypatch):
    first = _build(tmp_path, data, "job1.zip")
    assert first.path == tmp_path / "uploads" / "job1.zip"
    cached = tmp_path / "cache" / f"{first.sha256}.zip"
    assert cached.is_file() and os.path.samefile(cached, first.path)  # a link, not a copy
    assert first.sha256 == archive_mod.sha256_file(first.path)

    def no_packaging(*a, **k):
        raise AssertionError("an unchanged dataset was packaged again")

    monkeypatch.setattr(archive_mod, "build_archive", no_packaging)
    second = _build(tmp_path, data, "job2.zip")
    assert second.sha256 == first.sha256 and second.size == first.size
    assert second.dataloader_config == first.dataloader_config
    assert _members(second.path) == _members(first.path)
    # the job's own file can go without touching the cache
    first.path.unlink()
    assert cached.is_file() and _build(tmp_path, data, "job3.zip").sha256 == first.sha256


def test_added_file_misses(tmp_path, data):
    first = _build(tmp_path, data, "job1.zip")
    (data / "b.png").write_bytes(b"\x89PNG two")
    second = _build(tmp_path, data, "job2.zip")
    assert second.sha256 != first.sha256
    assert "datasets/d/b.png" in _members(second.path)
    assert "datasets/d/b.png" not in _members(first.path)


def test_edit_of_same_size_gives_no_stale_archive(tmp_path, data):
    first = _build(tmp_path, data, "job1.zip")
    # same size, new bytes, right away: the file is newer than the entry's build, so the
    # entry is not trusted whatever the timestamp granularity
    (data / "a.txt").write_text("a big circle")
    second = _build(tmp_path, data, "job2.zip")
    assert _members(second.path)["datasets/d/a.txt"] == b"a big circle"
    assert second.sha256 != first.sha256
    assert _members(first.path)["datasets/d/a.txt"] == b"a red circle"  # the old job keeps its data


def test_racily_clean_entry_is_rebuilt_to_the_same_archive(tmp_path, data, monkeypatch):
    now = time.time()
    for p in data.iterdir():
        os.utime(p, (now + 5, now + 5))  # newer than any build start: never trusted
    first = _build(tmp_path, data, "job1.zip")
    calls = []
    real = archive_mod.build_archive
    monkeypatch.setattr(archive_mod, "build_archive", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = _build(tmp_path, data, "job2.zip")
    assert calls == [1]  # packaged again ...
    assert second.sha256 == first.sha256  # ... to the same content-addressed archive


def test_size_limit_applies_to_a_hit(tmp_path, data):
    first = _build(tmp_path, data, "job1.zip")
    with pytest.raises(cache.ArchiveTooLargeError):
        cache.build_archive(_config(data), tmp_path / "uploads", archive_name="job2.zip",
                            cache_dir=tmp_path / "cache", max_bytes=first.size - 1)
    assert not (tmp_path / "uploads" / "job2.zip").exists()


def test_prune_keeps_the_cache_under_its_size(tmp_path, data):
    first = _build(tmp_path, data, "job1.zip")
    (data / "b.png").write_bytes(os.urandom(4000))
    second = _build(tmp_path, data, "job2.zip")
    os.utime(tmp_path / "cache" / f"{first.sha256}.zip", (time.time() - 100, time.time() - 100))
    assert cache.prune(tmp_path / "cache", max_bytes=second.size) == 1
    assert not (tmp_path / "cache" / f"{first.sha256}.zip").exists()
    assert (tmp_path / "cache" / f"{second.sha256}.zip").exists()
    assert first.path.is_file()  # the job's link keeps its bytes
    assert [p.name for p in (tmp_path / "cache" / "index").iterdir()] != []
    # the pruned entry's index is gone: the old data would be packaged again, not looked up
    assert all(cache._read_index(p)["sha256"] != first.sha256 for p in (tmp_path / "cache" / "index").iterdir())
