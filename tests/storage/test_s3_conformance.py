"""Behaviours ceph's s3-tests exposed (see docs/storage.md, "S3 conformance"), each checked
here with stock boto3 against a live server — the suite itself is not part of this repository.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from stcloud.storage import credentials, service
from tests.storage.s3util import sign

MiB = 1024 * 1024


@pytest.fixture
def s3c(app, live_server):
    with app.app_context():
        creds = credentials.mint(bucket="*", ttl_seconds=3600)
    url = live_server + "/api/cloud/storage"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id=creds["access_key_id"], aws_secret_access_key=creds["secret_access_key"],
                          config=Config(retries={"max_attempts": 1}))
    client.create_bucket(Bucket="conf")
    return client, creds, url


def err(excinfo) -> tuple[str, int]:
    r = excinfo.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def test_list_object_versions_then_delete_objects_by_version_empties_a_bucket(s3c):
    """The suite's bucket clean-up: ListObjectVersions in pages, DeleteObjects with VersionId
    and Quiet, then DeleteBucket."""
    c, _, _ = s3c
    for key in ("a", "b/c", "b/d", "e"):
        c.put_object(Bucket="conf", Key=key, Body=key.encode())
    seen, kwargs = [], {"Bucket": "conf", "MaxKeys": 3}
    while True:
        page = c.list_object_versions(**kwargs)
        assert all(v["VersionId"] == "null" and v["IsLatest"] for v in page.get("Versions", []))
        assert "DeleteMarkers" not in page
        seen += [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", [])]
        if not page["IsTruncated"]:
            break
        kwargs.update(KeyMarker=page["NextKeyMarker"], VersionIdMarker=page["NextVersionIdMarker"])
    assert [s["Key"] for s in seen] == ["a", "b/c", "b/d", "e"]
    out = c.delete_objects(Bucket="conf", Delete={"Objects": seen, "Quiet": True})
    assert "Deleted" not in out and "Errors" not in out
    assert c.list_objects_v2(Bucket="conf")["KeyCount"] == 0
    c.delete_bucket(Bucket="conf")


def test_delete_objects_echoes_version_ids_and_refuses_other_versions(s3c):
    c, _, _ = s3c
    for key in ("x", "y", "z"):
        c.put_object(Bucket="conf", Key=key, Body=b"1")
    out = c.delete_objects(Bucket="conf", Delete={"Objects": [
        {"Key": "x", "VersionId": "null"}, {"Key": "y"}, {"Key": "z", "VersionId": "3HL4kqtJlcpXroDTDmJ"}]})
    assert sorted((d["Key"], d.get("VersionId")) for d in out["Deleted"]) == [("x", "null"), ("y", None)]
    assert [(e["Key"], e["VersionId"], e["Code"]) for e in out["Errors"]] == [
        ("z", "3HL4kqtJlcpXroDTDmJ", "NoSuchVersion")]
    assert [o["Key"] for o in c.list_objects_v2(Bucket="conf")["Contents"]] == ["z"]
    quiet = c.delete_objects(Bucket="conf", Delete={"Objects": [{"Key": "z"}, {"Key": "gone"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet


def test_version_id_null_is_the_object_and_other_ids_do_not_exist(s3c):
    c, _, _ = s3c
    c.put_object(Bucket="conf", Key="v", Body=b"body")
    assert c.get_object(Bucket="conf", Key="v", VersionId="null")["Body"].read() == b"body"
    for call in (c.get_object, c.head_object, c.delete_object):
        with pytest.raises(ClientError) as e:
            call(Bucket="conf", Key="v", VersionId="some-version")
        assert err(e)[1] == 404
    c.delete_object(Bucket="conf", Key="v", VersionId="null")
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket="conf", Key="v")
    assert err(e)[1] == 404


@pytest.mark.parametrize("sent,stored", [
    ("gzip", "gzip"), ("deflate, gzip", "deflate, gzip"), ("gzip, aws-chunked", "gzip"),
    ("aws-chunked, gzip", "gzip"), ("aws-chunked", None), ("aws-chunked, aws-chunked", None)])
def test_content_encoding_loses_only_aws_chunked(s3c, sent, stored):
    """``aws-chunked`` is a transfer detail S3 drops; the rest comes back exactly as sent —
    even when the body is plain (a label alone does not make a body aws-chunked)."""
    c, _, _ = s3c
    c.put_object(Bucket="conf", Key="enc", Body=b"payload", ContentEncoding=sent)
    head = c.head_object(Bucket="conf", Key="enc")
    assert head.get("ContentEncoding") == stored
    assert c.get_object(Bucket="conf", Key="enc")["Body"].read() == b"payload"


def test_list_buckets_in_pages(s3c):
    c, _, _ = s3c
    for name in ("page-b", "page-a", "page-c"):
        c.create_bucket(Bucket=name)
    first = c.list_buckets(MaxBuckets=2, Prefix="page-")
    assert [b["Name"] for b in first["Buckets"]] == ["page-a", "page-b"] and first["Prefix"] == "page-"
    rest = c.list_buckets(MaxBuckets=2, Prefix="page-", ContinuationToken=first["ContinuationToken"])
    assert [b["Name"] for b in rest["Buckets"]] == ["page-c"] and "ContinuationToken" not in rest
    assert "ContinuationToken" not in c.list_buckets(MaxBuckets=10)
    assert {"conf", "page-a", "page-b", "page-c"} <= {b["Name"] for b in c.list_buckets()["Buckets"]}


def test_recreating_an_owned_bucket_follows_the_us_east_1_rule(s3c, live_server):
    c, creds, url = s3c
    c.create_bucket(Bucket="conf")  # no LocationConstraint: us-east-1 answers 200
    other = boto3.client("s3", endpoint_url=url, region_name="eu-west-1", aws_access_key_id=creds["access_key_id"],
                         aws_secret_access_key=creds["secret_access_key"], config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        other.create_bucket(Bucket="conf", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert err(e) == ("BucketAlreadyOwnedByYou", 409)


def test_get_and_head_by_part_number(s3c):
    c, _, _ = s3c
    sizes = [5 * MiB, 5 * MiB, 1 * MiB]
    data = [os.urandom(s) for s in sizes]
    uid = c.create_multipart_upload(Bucket="conf", Key="mp")["UploadId"]
    parts = [{"PartNumber": i + 1, "ETag": c.upload_part(Bucket="conf", Key="mp", UploadId=uid, PartNumber=i + 1,
                                                         Body=d)["ETag"]} for i, d in enumerate(data)]
    with pytest.raises(ClientError) as e:  # not an object before Complete
        c.get_object(Bucket="conf", Key="mp", PartNumber=1)
    assert err(e) == ("NoSuchKey", 404)
    done = c.complete_multipart_upload(Bucket="conf", Key="mp", UploadId=uid, MultipartUpload={"Parts": parts})
    for number, (size, body) in enumerate(zip(sizes, data, strict=False), start=1):
        head = c.head_object(Bucket="conf", Key="mp", PartNumber=number)
        assert head["PartsCount"] == 3 and head["ETag"] == done["ETag"] and head["ContentLength"] == size
        got = c.get_object(Bucket="conf", Key="mp", PartNumber=number)
        assert got["PartsCount"] == 3 and got["ETag"] == done["ETag"]
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206 and got["Body"].read() == body
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket="conf", Key="mp", PartNumber=4)
    assert err(e) == ("InvalidPart", 400)
    put = c.put_object(Bucket="conf", Key="single", Body=b"body")  # a plain object is one part
    one = c.get_object(Bucket="conf", Key="single", PartNumber=1)
    assert one["ETag"] == put["ETag"] and one["Body"].read() == b"body"
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket="conf", Key="single", PartNumber=2)
    assert err(e) == ("InvalidPart", 400)


def test_complete_again_and_a_resent_part_listed_twice(s3c):
    c, _, _ = s3c
    uid = c.create_multipart_upload(Bucket="conf", Key="twice")["UploadId"]
    old = c.upload_part(Bucket="conf", Key="twice", UploadId=uid, PartNumber=1, Body=b"B" * 8)["ETag"]
    new = c.upload_part(Bucket="conf", Key="twice", UploadId=uid, PartNumber=1, Body=b"A" * 8)["ETag"]
    parts = [{"PartNumber": 1, "ETag": old}, {"PartNumber": 1, "ETag": new}]  # the last entry counts
    done = c.complete_multipart_upload(Bucket="conf", Key="twice", UploadId=uid, MultipartUpload={"Parts": parts})
    assert c.get_object(Bucket="conf", Key="twice")["Body"].read() == b"A" * 8
    again = c.complete_multipart_upload(Bucket="conf", Key="twice", UploadId=uid, MultipartUpload={"Parts": parts})
    assert again["ETag"] == done["ETag"]
    with pytest.raises(ClientError) as e:  # another part list is not the same completion
        c.complete_multipart_upload(Bucket="conf", Key="twice", UploadId=uid,
                                    MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": new}]})
    assert err(e) == ("NoSuchUpload", 404)
    c.put_object(Bucket="conf", Key="twice", Body=b"overwritten")  # no longer the object it made
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket="conf", Key="twice", UploadId=uid, MultipartUpload={"Parts": parts})
    assert err(e) == ("NoSuchUpload", 404)


def test_unsigned_requests_are_refused_like_s3(s3c, live_server):
    """An unauthenticated client (no signature at all) gets 403 AccessDenied on reads, lists,
    writes and ListBuckets."""
    from botocore import UNSIGNED

    c, _, url = s3c
    c.put_object(Bucket="conf", Key="k", Body=b"v")
    anon = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    calls = [lambda: anon.get_object(Bucket="conf", Key="k"), lambda: anon.list_objects(Bucket="conf"),
             lambda: anon.put_object(Bucket="conf", Key="k", Body=b"x"), anon.list_buckets,
             lambda: anon.list_object_versions(Bucket="conf")]
    for call in calls:
        with pytest.raises(ClientError) as e:
            call()
        assert err(e) == ("AccessDenied", 403)


def test_an_interrupted_upload_leaves_no_object(s3c, app):
    """A client that dies half-way through a PUT body: the old object stays whole, no partial
    object appears, and no temp file is left behind."""
    c, creds, url = s3c
    c.put_object(Bucket="conf", Key="model.bin", Body=b"old")
    with app.app_context():
        tmp = service.backend().tmp
    body = os.urandom(2 * MiB)
    for key, sent in (("model.bin", MiB), ("fresh.bin", 1000)):  # an overwrite and a new key
        target = f"{url}/conf/{key}"
        headers = sign("PUT", target, creds, {"Content-Length": str(len(body))}, hashlib.sha256(body).hexdigest())
        parts = urlsplit(target)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            sock.sendall(f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}\r\n".encode())
            sock.sendall(body[:sent])
            deadline = time.monotonic() + 10  # the server is writing the body to a temp file
            while not any(tmp.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert any(tmp.iterdir())
        # the connection is gone: the temp file goes, nothing is renamed into place
    deadline = time.monotonic() + 10
    while any(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(tmp.iterdir())
    assert c.get_object(Bucket="conf", Key="model.bin")["Body"].read() == b"old"
    assert [o["Key"] for o in c.list_objects_v2(Bucket="conf")["Contents"]] == ["model.bin"]
