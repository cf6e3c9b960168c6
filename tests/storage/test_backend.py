"""The filesystem store on its own: S3 key order, delimiters, markers, atomic visibility,
conflicts a filesystem cannot hold, sidecars that do not match their file, multipart rules."""
from __future__ import annotations

import hashlib
import io
import os
import time

import pytest

from stcloud.storage import backend as bk
from stcloud.storage.errors import S3Error


@pytest.fixture
def store(tmp_path):
    b = bk.Backend(tmp_path / "store")
    b.create_bucket("bkt")
    return b


def put(b, key, data=b"x", **expect):
    return b.put("bkt", key, io.BytesIO(data), bk.Expectations(**expect), {"content_type": "text/plain"})


def keys(b, **kw):
    return [k for k, *_ in b.iter_keys("bkt", **kw)]


def test_order_is_s3_order_not_directory_order(store):
    names = ["a/b", "a-c", "a0", "b/", "b/c", "ü", "z", "A", "a/bb/c", "a/bb/d/e", "a/b-", "a/b.x", "a//x"]
    for k in names:
        put(store, k, b"" if k.endswith("/") else b"x")
    expected = sorted(names, key=lambda k: k.encode())
    assert keys(store) == expected
    assert keys(store, prefix="a/") == [k for k in expected if k.startswith("a/")]
    assert keys(store, prefix="a/b") == [k for k in expected if k.startswith("a/b")]
    assert keys(store, after="a/bb/c") == [k for k in expected if k > "a/bb/c"]
    assert keys(store, after="a/") == [k for k in expected if k > "a/"]


def test_delimiters_markers_and_max_keys(store):
    for k in ["logs/2024-01/a", "logs/2024-01/b", "logs/2024-02/a", "logs/readme", "x-1", "x-2", "y"]:
        put(store, k)
    r = store.list_objects("bkt", delimiter="/")
    assert r.common_prefixes == ["logs/"] and [o.key for o in r.contents] == ["x-1", "x-2", "y"]
    r = store.list_objects("bkt", delimiter="-")
    assert r.common_prefixes == ["logs/2024-", "x-"] and [o.key for o in r.contents] == ["logs/readme", "y"]
    r = store.list_objects("bkt", prefix="logs/", delimiter="/", max_keys=1)
    assert r.common_prefixes == ["logs/2024-01/"] and r.truncated and r.next_marker == "logs/2024-01/"
    r = store.list_objects("bkt", prefix="logs/", delimiter="/", after=r.next_marker, max_keys=1)
    assert r.common_prefixes == ["logs/2024-02/"] and r.truncated
    r = store.list_objects("bkt", prefix="logs/", delimiter="/", after=r.next_marker)
    assert [o.key for o in r.contents] == ["logs/readme"] and not r.common_prefixes and not r.truncated
    assert store.list_objects("bkt", max_keys=0).contents == []
    r = store.list_objects("bkt", max_keys=7)
    assert len(r.contents) == 7 and not r.truncated


def test_conflicts_a_filesystem_cannot_hold(store):
    put(store, "a")
    with pytest.raises(S3Error) as e:
        put(store, "a/b")
    assert e.value.code == "ParentIsObject"
    put(store, "d/e")
    with pytest.raises(S3Error) as e:
        put(store, "d")
    assert e.value.code == "ObjectExistsAsDirectory"
    store.delete("bkt", "d/e")
    put(store, "d")  # the empty directory left behind is pruned / replaced
    assert keys(store) == ["a", "d"]


def test_failed_upload_leaves_nothing(store):
    class Boom:
        def __init__(self):
            self.n = 0

        def read(self, n=-1):
            self.n += 1
            if self.n > 3:
                raise S3Error("IncompleteBody")
            return b"y" * 1000

    put(store, "k", b"old")
    with pytest.raises(S3Error):
        store.put("bkt", "k", Boom(), bk.Expectations(), {})
    info, fh = store.open("bkt", "k")
    with fh:
        assert fh.read() == b"old"
    with pytest.raises(S3Error) as e:
        put(store, "k2", b"abc", sha256_hex=hashlib.sha256(b"abd").hexdigest())
    assert e.value.code == "XAmzContentSHA256Mismatch"
    with pytest.raises(S3Error) as e:
        put(store, "k3", b"abc" * 10, max_size=10)
    assert e.value.code == "EntityTooLarge"
    assert keys(store) == ["k"]
    assert os.listdir(store.tmp) == []


def test_objects_reach_the_disk_before_the_rename(store, monkeypatch):
    """The object's bytes are fsynced before the atomic rename makes them visible, and the
    directory after it (so the rename itself survives a crash); the same for a completed
    multipart upload."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", "dir" if os.path.isdir(target) else target))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    put(store, "dur/obj", b"x" * 1000)
    target = str(store.object_path("bkt", "dur/obj"))
    i = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == target)
    assert ("fsync", events[i][1]) in events[:i]  # the temp file, before it became the object
    assert events[i + 1] == ("fsync", "dir")

    events.clear()
    uid = store.create_upload("bkt", "dur/mp", {})
    part = store.upload_part("bkt", "dur/mp", uid, 1, io.BytesIO(b"p" * 100), bk.Expectations())
    store.complete_upload("bkt", "dur/mp", uid, [(1, part.etag, {})])
    target = str(store.object_path("bkt", "dur/mp"))
    i = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == target)
    assert ("fsync", events[i][1]) in events[:i] and events[i + 1] == ("fsync", "dir")


def test_open_reader_keeps_its_version(store):
    put(store, "v", b"one" * 1000)
    info, fh = store.open("bkt", "v")
    put(store, "v", b"two")
    with fh:
        assert fh.read() == b"one" * 1000
    assert store.head("bkt", "v").size == 3


def test_sidecar_of_another_version_is_ignored(store):
    info = put(store, "s", b"hello")
    assert info.etag == f'"{hashlib.md5(b"hello").hexdigest()}"' and info.sha256 == hashlib.sha256(b"hello").hexdigest()
    path = store.object_path("bkt", "s")
    tmp = path.with_name("replacement")
    tmp.write_bytes(b"written by hand")
    os.replace(tmp, path)
    head = store.head("bkt", "s")
    assert head.size == len(b"written by hand")
    assert head.etag != info.etag and head.sha256 is None  # derived from the file, not the stale sidecar


def test_multipart_rules(store):
    uid = store.create_upload("bkt", "mp", {"content_type": "application/x"})
    small = store.upload_part("bkt", "mp", uid, 1, io.BytesIO(b"a" * 10), bk.Expectations())
    last = store.upload_part("bkt", "mp", uid, 2, io.BytesIO(b"b" * 10), bk.Expectations())
    with pytest.raises(S3Error) as e:
        store.complete_upload("bkt", "mp", uid, [(1, small.etag, {}), (2, last.etag, {})])
    assert e.value.code == "EntityTooSmall"
    with pytest.raises(S3Error) as e:
        store.upload_part("bkt", "mp", uid, 10001, io.BytesIO(b"x"), bk.Expectations())
    assert e.value.code == "InvalidArgument"
    with pytest.raises(S3Error) as e:
        store.upload_part("bkt", "other-key", uid, 1, io.BytesIO(b"x"), bk.Expectations())
    assert e.value.code == "NoSuchUpload"
    with pytest.raises(S3Error) as e:
        store.upload_part("bkt", "mp", "../../etc", 1, io.BytesIO(b"x"), bk.Expectations())
    assert e.value.code == "NoSuchUpload"
    info = store.complete_upload("bkt", "mp", uid, [(2, last.etag, {})])
    assert info.size == 10 and info.etag.endswith('-1"') and info.content_type == "application/x"
    assert store.list_uploads("bkt") == []


def test_purge_stale(store):
    uid = store.create_upload("bkt", "old", {})
    old = time.time() - 8 * 86400
    os.utime(store.uploads / uid, (old, old))
    (store.tmp / "up-stale.tmp").write_bytes(b"x")
    os.utime(store.tmp / "up-stale.tmp", (old, old))
    assert store.purge_stale() == 2
    assert store.list_uploads("bkt") == []


def test_delete_bucket_rules(store):
    put(store, "deep/er/file")
    with pytest.raises(S3Error) as e:
        store.delete_bucket("bkt")
    assert e.value.code == "BucketNotEmpty"
    store.delete("bkt", "deep/er/file")
    assert not (store.root / "bkt" / "deep").exists()  # empty parents pruned
    store.delete_bucket("bkt")
    assert store.list_buckets() == []
    with pytest.raises(S3Error) as e:
        store.create_bucket("credentials")
    assert e.value.code == "InvalidBucketName"
