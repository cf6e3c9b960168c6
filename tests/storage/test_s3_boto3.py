"""Stock boto3 against the built-in endpoint (HTTP and HTTPS) and, with the same checks,
against moto's S3 server — so the checks themselves are proven on a real S3 implementation.

Over HTTP boto3 signs the payload hash and sends the CRC32 as a header; over HTTPS it sends
``aws-chunked`` bodies with an unsigned-payload trailer carrying the CRC32 (boto3 >= 1.36):
the ``stcloud-tls`` target covers that path.
"""
from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import botocore.auth
import pytest
import requests
from botocore.exceptions import ClientError

VARIANTS = ["default", "when_required"]
MiB = 1024 * 1024


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def status_of(excinfo) -> int:
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def needs_auth(target):
    if not target.enforces_auth:
        pytest.skip("moto's S3 server accepts any credentials and does not scope keys; this check is ours only")


@pytest.fixture(scope="session")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "model-50mib.bin"
    with open(path, "wb") as fh:
        for _ in range(50):
            fh.write(os.urandom(MiB))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    yield path, digest
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_put_get_head_delete(s3target, bucket_name, variant):
    c = s3target.client(variant=variant)
    c.create_bucket(Bucket=bucket_name)
    body = os.urandom(300_000)
    put = c.put_object(Bucket=bucket_name, Key="dir/file.bin", Body=body, ContentType="application/x-test",
                       Metadata={"step": "100", "note": "hello"})
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = c.get_object(Bucket=bucket_name, Key="dir/file.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"step": "100", "note": "hello"}
    assert got["ContentLength"] == len(body)
    head = c.head_object(Bucket=bucket_name, Key="dir/file.bin")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
    c.put_object(Bucket=bucket_name, Key="page.html.gz", Body=b"\x1f\x8b fake", ContentEncoding="gzip",
                 ContentType="text/html", ContentDisposition='attachment; filename="page.html"', CacheControl="no-cache")
    zipped = c.head_object(Bucket=bucket_name, Key="page.html.gz")
    assert zipped["ContentEncoding"] == "gzip" and zipped["ContentType"] == "text/html"
    assert zipped["ContentDisposition"] == 'attachment; filename="page.html"' and zipped["CacheControl"] == "no-cache"
    c.delete_object(Bucket=bucket_name, Key="page.html.gz")
    c.put_object(Bucket=bucket_name, Key="empty", Body=b"")
    assert c.get_object(Bucket=bucket_name, Key="empty")["Body"].read() == b""
    c.delete_object(Bucket=bucket_name, Key="dir/file.bin")
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=bucket_name, Key="dir/file.bin")
    assert error_code(e) == "404"
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=bucket_name, Key="dir/file.bin")
    assert error_code(e) == "NoSuchKey" and status_of(e) == 404
    c.delete_object(Bucket=bucket_name, Key="dir/file.bin")  # deleting a missing key is not an error
    with pytest.raises(ClientError) as e:
        c.delete_bucket(Bucket=bucket_name)
    assert error_code(e) == "BucketNotEmpty"
    c.delete_object(Bucket=bucket_name, Key="empty")
    c.delete_bucket(Bucket=bucket_name)
    with pytest.raises(ClientError) as e:
        c.list_objects_v2(Bucket=bucket_name)
    assert error_code(e) == "NoSuchBucket"
    assert bucket_name not in [b["Name"] for b in c.list_buckets()["Buckets"]]


@pytest.mark.parametrize("variant", VARIANTS)
def test_upload_and_download_50mib_multipart(s3target, bucket_name, variant, big_file, tmp_path):
    src, digest = big_file
    c = s3target.client(variant=variant)
    c.create_bucket(Bucket=bucket_name)
    c.upload_file(str(src), bucket_name, "big/model.safetensors")  # > 8 MiB: multipart
    head = c.head_object(Bucket=bucket_name, Key="big/model.safetensors")
    assert head["ContentLength"] == 50 * MiB
    assert head["ETag"].endswith('-7"')  # 8 MiB parts
    dst = tmp_path / "down.bin"
    c.download_file(bucket_name, "big/model.safetensors", str(dst))  # ranged GETs in parallel
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == digest
    dst.unlink()
    c.delete_object(Bucket=bucket_name, Key="big/model.safetensors")


def _keys_1200() -> list[str]:
    keys = [f"data/part-{i:04d}.bin" for i in range(1000)]
    keys += [f"data/sub{i % 5}/x{i:03d}" for i in range(150)]
    keys += [f"other/{i:02d}" for i in range(50)]
    return keys


def test_listing_1200_keys(s3target, bucket_name):
    c = s3target.client()
    c.create_bucket(Bucket=bucket_name)
    keys = _keys_1200()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: c.put_object(Bucket=bucket_name, Key=k, Body=k.encode()), keys))
    expected = sorted(keys)

    pages = list(c.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, PaginationConfig={"PageSize": 250}))
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == expected
    assert len(pages) == 5 and all(p["KeyCount"] <= 250 for p in pages)
    assert pages[0]["IsTruncated"] and not pages[-1]["IsTruncated"]

    v1 = list(c.get_paginator("list_objects").paginate(Bucket=bucket_name, PaginationConfig={"PageSize": 300}))
    assert [o["Key"] for p in v1 for o in p.get("Contents", [])] == expected
    assert len(v1) == 4

    full = c.list_objects_v2(Bucket=bucket_name)
    assert full["KeyCount"] == 1000 and full["IsTruncated"]

    root = c.list_objects_v2(Bucket=bucket_name, Delimiter="/")
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["data/", "other/"]
    assert "Contents" not in root and not root["IsTruncated"]

    contents, prefixes = [], []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix="data/", Delimiter="/",
                                                            PaginationConfig={"PageSize": 300}):
        contents += [o["Key"] for o in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert prefixes == [f"data/sub{i}/" for i in range(5)]
    assert contents == sorted(k for k in keys if k.startswith("data/part-"))

    v1pre, v1con = [], []
    for page in c.get_paginator("list_objects").paginate(Bucket=bucket_name, Prefix="data/", Delimiter="/",
                                                         PaginationConfig={"PageSize": 400}):
        v1con += [o["Key"] for o in page.get("Contents", [])]
        v1pre += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert v1con == contents
    if s3target.name == "moto":
        # moto repeats the CommonPrefixes on every v1 page; S3 rolls each prefix up once, in key order
        assert sorted(set(v1pre)) == prefixes
    else:
        assert v1pre == prefixes

    r = c.list_objects_v2(Bucket=bucket_name, Prefix="other/", StartAfter="other/10", MaxKeys=5)
    assert [o["Key"] for o in r["Contents"]] == [f"other/{i}" for i in range(11, 16)] and r["IsTruncated"]
    r = c.list_objects(Bucket=bucket_name, Prefix="other/", Marker="other/47")
    assert [o["Key"] for o in r["Contents"]] == ["other/48", "other/49"] and not r["IsTruncated"]
    r = c.list_objects_v2(Bucket=bucket_name, Prefix="data/sub3/", MaxKeys=1000)
    assert r["KeyCount"] == 30 and all(o["Size"] == len(o["Key"]) for o in r["Contents"])
    assert r["Contents"][0]["ETag"] == f'"{hashlib.md5(b"data/sub3/x003").hexdigest()}"'

    # ListObjectVersions on an unversioned bucket: every object, VersionId "null"
    versions = c.list_object_versions(Bucket=bucket_name, Prefix="other/")
    assert [v["Key"] for v in versions["Versions"]] == sorted(k for k in keys if k.startswith("other/"))
    assert {v["VersionId"] for v in versions["Versions"]} == {"null"}

    # DeleteObjects in batches of 1000 (the API's maximum)
    for i in range(0, len(keys), 1000):
        res = c.delete_objects(Bucket=bucket_name, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
        assert not res.get("Errors")
    assert c.list_objects_v2(Bucket=bucket_name)["KeyCount"] == 0
    c.delete_bucket(Bucket=bucket_name)


def test_ranges(s3target, bucket_name):
    c = s3target.client()
    c.create_bucket(Bucket=bucket_name)
    body = bytes(range(256)) * 40
    c.put_object(Bucket=bucket_name, Key="r.bin", Body=body)
    cases = {"bytes=0-9": body[:10], "bytes=100-": body[100:], "bytes=-16": body[-16:],
             "bytes=10000-20000": body[10000:]}
    for header, want in cases.items():
        got = c.get_object(Bucket=bucket_name, Key="r.bin", Range=header)
        assert got["Body"].read() == want, header
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"].endswith(f"/{len(body)}")
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=bucket_name, Key="r.bin", Range="bytes=20000-")
    assert error_code(e) == "InvalidRange" and status_of(e) == 416
    etag = c.head_object(Bucket=bucket_name, Key="r.bin")["ETag"]
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=bucket_name, Key="r.bin", IfNoneMatch=etag)
    assert status_of(e) == 304
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=bucket_name, Key="r.bin", IfMatch='"0123"')
    assert error_code(e) == "PreconditionFailed" and status_of(e) == 412


def test_copy_multipart_parts_and_abort(s3target, bucket_name):
    c = s3target.client()
    c.create_bucket(Bucket=bucket_name)
    c.put_object(Bucket=bucket_name, Key="src/a.txt", Body=b"copy me", Metadata={"k": "v"}, ContentType="text/plain")
    c.copy_object(Bucket=bucket_name, Key="dst/b.txt", CopySource={"Bucket": bucket_name, "Key": "src/a.txt"})
    got = c.get_object(Bucket=bucket_name, Key="dst/b.txt")
    assert got["Body"].read() == b"copy me" and got["Metadata"] == {"k": "v"} and got["ContentType"] == "text/plain"
    c.copy_object(Bucket=bucket_name, Key="dst/c.txt", CopySource=f"{bucket_name}/src/a.txt",
                  MetadataDirective="REPLACE", Metadata={"new": "1"}, ContentType="application/json")
    head = c.head_object(Bucket=bucket_name, Key="dst/c.txt")
    assert head["Metadata"] == {"new": "1"} and head["ContentType"] == "application/json"
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket=bucket_name, Key="src/a.txt", CopySource=f"{bucket_name}/src/a.txt")
    assert error_code(e) == "InvalidRequest"

    up = c.create_multipart_upload(Bucket=bucket_name, Key="mp/obj")
    uid = up["UploadId"]
    p1 = c.upload_part(Bucket=bucket_name, Key="mp/obj", UploadId=uid, PartNumber=1, Body=b"a" * (5 * MiB))
    p2 = c.upload_part(Bucket=bucket_name, Key="mp/obj", UploadId=uid, PartNumber=2, Body=b"b" * (5 * MiB))
    parts = c.list_parts(Bucket=bucket_name, Key="mp/obj", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, 5 * MiB, p1["ETag"]),
                                                                       (2, 5 * MiB, p2["ETag"])]
    uploads = c.list_multipart_uploads(Bucket=bucket_name)["Uploads"]
    assert [u["UploadId"] for u in uploads] == [uid]
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket=bucket_name, Key="mp/obj", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": p1["ETag"]},
                      {"PartNumber": 2, "ETag": '"00000000000000000000000000000000"'}]})
    assert error_code(e) == "InvalidPart"
    if s3target.name != "moto":  # moto sorts an unordered part list instead of refusing it as S3 does
        with pytest.raises(ClientError) as e:
            c.complete_multipart_upload(Bucket=bucket_name, Key="mp/obj", UploadId=uid, MultipartUpload={
                "Parts": [{"PartNumber": 2, "ETag": p2["ETag"]}, {"PartNumber": 1, "ETag": p1["ETag"]}]})
        assert error_code(e) == "InvalidPartOrder"
    done = c.complete_multipart_upload(Bucket=bucket_name, Key="mp/obj", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
    assert done["ETag"].endswith('-2"')
    assert c.get_object(Bucket=bucket_name, Key="mp/obj", Range="bytes=5242878-5242881")["Body"].read() == b"aabb"

    up2 = c.create_multipart_upload(Bucket=bucket_name, Key="mp/aborted")
    c.upload_part(Bucket=bucket_name, Key="mp/aborted", UploadId=up2["UploadId"], PartNumber=1, Body=b"x")
    c.abort_multipart_upload(Bucket=bucket_name, Key="mp/aborted", UploadId=up2["UploadId"])
    with pytest.raises(ClientError) as e:
        c.list_parts(Bucket=bucket_name, Key="mp/aborted", UploadId=up2["UploadId"])
    assert error_code(e) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=bucket_name, Key="mp/aborted")
    assert error_code(e) == "404"
    assert c.get_bucket_location(Bucket=bucket_name).get("LocationConstraint") in (None, "")
    assert c.get_bucket_acl(Bucket=bucket_name)["Grants"][0]["Permission"] == "FULL_CONTROL"


ODD_KEYS = ["with space.txt", "ünïcödé/日本語.bin", "plus+sign", "percent%20literal%", "a/b/c/d/e/f/g/h/deep.txt",
            "tilde~and!bang'(paren)*", "semi;colon,comma=eq&amp", "dir/", "q?mark#hash"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_odd_keys_round_trip(s3target, bucket_name, variant):
    c = s3target.client(variant=variant)
    c.create_bucket(Bucket=bucket_name)
    for key in ODD_KEYS:
        body = b"" if key.endswith("/") else key.encode()
        c.put_object(Bucket=bucket_name, Key=key, Body=body)
        assert c.get_object(Bucket=bucket_name, Key=key)["Body"].read() == body, key
    listed = [o["Key"] for o in c.list_objects_v2(Bucket=bucket_name)["Contents"]]
    assert listed == sorted(ODD_KEYS, key=lambda k: k.encode())
    listed_v1 = [o["Key"] for o in c.list_objects(Bucket=bucket_name)["Contents"]]
    assert listed_v1 == listed
    res = c.delete_objects(Bucket=bucket_name, Delete={"Objects": [{"Key": k} for k in ODD_KEYS]})
    assert sorted(d["Key"] for d in res["Deleted"]) == sorted(ODD_KEYS)


def test_presigned_get_put_and_expired(s3target, bucket_name):
    creds = s3target.mint(bucket="*")
    stock = s3target.client(creds)  # stock boto3 presigns with signature version 2 for us-east-1
    v4 = s3target.client(creds, signature_version="s3v4")
    stock.create_bucket(Bucket=bucket_name)
    verify = s3target.verify if s3target.verify is not None else True
    for name, c in (("v2", stock), ("v4", v4)):
        key = f"presigned/{name} file.txt"
        url = c.generate_presigned_url("put_object", Params={"Bucket": bucket_name, "Key": key}, ExpiresIn=300)
        r = requests.put(url, data=f"body {name}".encode(), timeout=10, verify=verify)
        assert r.status_code == 200, r.text
        url = c.generate_presigned_url("get_object", Params={"Bucket": bucket_name, "Key": key}, ExpiresIn=300)
        r = requests.get(url, timeout=10, verify=verify)
        assert r.status_code == 200 and r.content == f"body {name}".encode()
        url = c.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket_name, "Prefix": "presigned/"},
                                       ExpiresIn=300)
        r = requests.get(url, timeout=10, verify=verify)
        assert r.status_code == 200 and f"<Key>presigned/{name}%20file.txt</Key>" in r.text, r.text
    if not s3target.enforces_auth:
        return  # moto's server does not enforce X-Amz-Expires / Expires on presigned URLs
    expired = [c.generate_presigned_url("get_object", Params={"Bucket": bucket_name, "Key": "presigned/v4 file.txt"},
                                        ExpiresIn=1) for c in (stock, v4)]
    time.sleep(2.2)
    for url in expired:
        r = requests.get(url, timeout=10, verify=verify)
        assert r.status_code == 403, url
        assert "<Code>AccessDenied</Code>" in r.text and "expired" in r.text


def test_wrong_secret_unknown_key_skew(s3target, bucket_name, monkeypatch):
    needs_auth(s3target)
    creds = s3target.mint(bucket=bucket_name)
    bad = s3target.client({"access_key_id": creds["access_key_id"], "secret_access_key": "x" * 40})
    with pytest.raises(ClientError) as e:
        bad.put_object(Bucket=bucket_name, Key="k", Body=b"x")
    assert error_code(e) == "SignatureDoesNotMatch" and status_of(e) == 403
    unknown = s3target.client({"access_key_id": "STCNOSUCHKEY00000000", "secret_access_key": "x" * 40})
    with pytest.raises(ClientError) as e:
        unknown.list_objects_v2(Bucket=bucket_name)
    assert error_code(e) == "InvalidAccessKeyId" and status_of(e) == 403
    good = s3target.client(creds, retries={"max_attempts": 1})
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: real(*a, **k) - timedelta(minutes=20))
    with pytest.raises(ClientError) as e:
        good.list_objects_v2(Bucket=bucket_name)
    assert error_code(e) == "RequestTimeTooSkewed" and status_of(e) == 403


def test_scope_outside_prefix_read_only_and_expired(s3target, bucket_name):
    needs_auth(s3target)
    creds = s3target.mint(bucket=bucket_name, prefix="job_1/")
    c = s3target.client(creds)
    c.put_object(Bucket=bucket_name, Key="job_1/out.bin", Body=b"ok")
    for call in (lambda: c.put_object(Bucket=bucket_name, Key="job_2/out.bin", Body=b"no"),
                 lambda: c.get_object(Bucket=bucket_name, Key="job_2/out.bin"),
                 lambda: c.list_objects_v2(Bucket=bucket_name),
                 lambda: c.list_objects_v2(Bucket=bucket_name, Prefix="job_"),
                 lambda: c.create_bucket(Bucket=bucket_name + "-other"),
                 lambda: c.list_objects_v2(Bucket="outputs", Prefix="job_1/")):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "AccessDenied" and status_of(e) == 403
    assert [o["Key"] for o in c.list_objects_v2(Bucket=bucket_name, Prefix="job_1/")["Contents"]] == ["job_1/out.bin"]
    res = c.delete_objects(Bucket=bucket_name, Delete={"Objects": [{"Key": "job_1/out.bin"}, {"Key": "elsewhere"}]})
    assert [d["Key"] for d in res["Deleted"]] == ["job_1/out.bin"]
    assert [(x["Key"], x["Code"]) for x in res["Errors"]] == [("elsewhere", "AccessDenied")]

    ro = s3target.client(s3target.mint(bucket=bucket_name, read_only=True))
    with pytest.raises(ClientError) as e:
        ro.put_object(Bucket=bucket_name, Key="x", Body=b"x")
    assert error_code(e) == "AccessDenied"
    ro.list_objects_v2(Bucket=bucket_name)

    from stcloud import db
    from stcloud.models import StorageCredential, utcnow
    from stcloud.storage import credentials

    expiring = s3target.mint(bucket=bucket_name)
    with s3target.app.app_context():
        with db.transaction() as s:
            s.get(StorageCredential, expiring["access_key_id"]).expires_at = utcnow() - timedelta(seconds=1)
    with pytest.raises(ClientError) as e:
        s3target.client(expiring).list_objects_v2(Bucket=bucket_name)
    assert error_code(e) == "ExpiredToken" and status_of(e) == 403

    revoked = s3target.mint(bucket=bucket_name)
    with s3target.app.app_context():
        credentials.revoke(revoked["access_key_id"])
    with pytest.raises(ClientError) as e:
        s3target.client(revoked).list_objects_v2(Bucket=bucket_name)
    assert error_code(e) == "InvalidAccessKeyId" and status_of(e) == 403
