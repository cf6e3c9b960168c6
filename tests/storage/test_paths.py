"""Keys can never leave the bucket directory: ``..``, absolute paths, encoded dots, symlinks.
Odd but legal keys (``a//b``, ``dir/``, ``.``) are stored under escaped names and round-trip."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from stcloud.storage import backend as bk
from stcloud.storage.errors import S3Error
from tests.storage.s3util import send, sign


@pytest.fixture
def ours(app, live_server, home):
    from stcloud.storage import credentials

    with app.app_context():
        creds = credentials.mint(bucket="safe", ttl_seconds=3600)
    return live_server + "/api/cloud/storage", creds, Path(home) / "cloud_outputs"


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("raw_key,stored", [
    ("../../../escape.txt", "safe/.~2e2e/.~2e2e/.~2e2e/escape.txt"),
    ("..", "safe/.~2e2e"),
    ("/etc/passwd", "safe/.~/etc/passwd"),
    ("a/./b", "safe/a/.~2e/b"),
    ("a//b", "safe/a/.~/b"),
    ("dir/", "safe/dir/.~"),
    (".~tricky", "safe/.~2e7e747269636b79"),
])
def test_traversal_keys_stay_inside_the_bucket(ours, raw_key, stored):
    url, creds, root = ours
    outside_before = {p for p in root.parent.rglob("*") if root not in p.parents and p != root}
    target = f"{url}/safe/{raw_key}"
    body = b"" if raw_key.endswith("/") else b"payload"
    status, _, resp = send("PUT", target, sign("PUT", target, creds, {}, "UNSIGNED-PAYLOAD"), body)
    assert status == 200, resp
    assert stored in files_under(root)
    outside_after = {p for p in root.parent.rglob("*") if root not in p.parents and p != root}
    assert outside_after == outside_before  # nothing appeared next to cloud_outputs/
    status, _, got = send("GET", target, sign("GET", target, creds, {}, "UNSIGNED-PAYLOAD"))
    assert status == 200 and got == body
    listing = f"{url}/safe?list-type=2"
    status, _, xml = send("GET", listing, sign("GET", listing, creds, {}, "UNSIGNED-PAYLOAD"))
    from xml.sax.saxutils import escape

    assert f"<Key>{escape(raw_key)}</Key>".encode() in xml
    status, _, _ = send("DELETE", target, sign("DELETE", target, creds, {}, "UNSIGNED-PAYLOAD"))
    assert status == 204
    assert not any(f.startswith("safe/") for f in files_under(root))


def test_encoded_dots_are_keys_too(ours):
    url, creds, root = ours
    target = f"{url}/safe/%2e%2e/%2E%2E/x"  # decoded by the server: the key "../../x"
    status, _, resp = send("PUT", target, sign("PUT", f"{url}/safe/../../x", creds, {}, "UNSIGNED-PAYLOAD"), b"z")
    assert status == 200, resp
    assert "safe/.~2e2e/.~2e2e/x" in files_under(root)


@pytest.mark.parametrize("bucket", ["..", ".stcloud", "a", "UPPER", "credentials", "x" * 64])
def test_bucket_names_cannot_reach_outside(app, live_server, bucket):
    from stcloud.storage import credentials

    with app.app_context():
        creds = credentials.mint(bucket="*", ttl_seconds=3600)
    url = f"{live_server}/api/cloud/storage/{bucket}"
    status, _, resp = send("PUT", url, sign("PUT", url, creds, {}, "UNSIGNED-PAYLOAD"), b"")
    assert status == 400 and b"InvalidBucketName" in resp
    status, _, resp = send("PUT", url + "/k", sign("PUT", url + "/k", creds, {}, "UNSIGNED-PAYLOAD"), b"x")
    assert status in (400, 404) and (b"NoSuchBucket" in resp or b"InvalidBucketName" in resp), resp


def test_backend_paths_and_symlinks(tmp_path):
    b = bk.Backend(tmp_path / "store")
    b.create_bucket("bkt")
    for key in ["../x", "/abs", "a/../../b", "\x00nul", ".", "a/./b"]:
        path = b.object_path("bkt", key)
        assert (tmp_path / "store" / "bkt") in path.parents, key
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "store" / "bkt" / "link")
    with pytest.raises(S3Error) as e:
        b.object_path("bkt", "link/secret")
    assert e.value.code == "AccessDenied"
    assert [k for k, *_ in b.iter_keys("bkt")] == []  # symlinks are not part of the store
    with pytest.raises(S3Error) as e:
        b.object_path("bkt", "x" * 256)
    assert e.value.code == "KeyTooLongError"
    with pytest.raises(S3Error) as e:
        b.object_path("bkt", "a/" * 600)
    assert e.value.code == "KeyTooLongError"
    with pytest.raises(S3Error) as e:
        b.head("..", "x")
    assert e.value.code == "NoSuchBucket"


def test_segment_encoding_round_trips():
    for seg in ["", ".", "..", ".~x", "a\x00b", "normal", "ü", "with space", "+%"]:
        assert bk.decode_segment(bk.encode_segment(seg)) == seg
    assert bk.encode_segment("normal") == "normal"
    assert bk.decode_segment(".~zz") is None
