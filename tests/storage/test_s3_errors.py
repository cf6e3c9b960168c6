"""Bad input on the S3 endpoint always gets an S3 XML error with the right status."""
from __future__ import annotations

import base64
import hashlib
import io

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from stcloud.storage import credentials
from tests.storage.s3util import send, sign


@pytest.fixture
def c3(app, live_server):
    with app.app_context():
        creds = credentials.mint(bucket="*", ttl_seconds=3600)
    client = boto3.client("s3", endpoint_url=live_server + "/api/cloud/storage", region_name="us-east-1",
                          aws_access_key_id=creds["access_key_id"], aws_secret_access_key=creds["secret_access_key"],
                          config=Config(retries={"max_attempts": 1}))
    client.create_bucket(Bucket="errs")
    return client, creds, live_server + "/api/cloud/storage"


def code(e):
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_entity_too_large(make_app):
    import threading

    from werkzeug.serving import make_server

    app = make_app(STCLOUD_S3_MAX_PUT_SIZE=1000)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with app.app_context():
            creds = credentials.mint(bucket="small", ttl_seconds=600)
        c = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{server.server_port}/api/cloud/storage",
                         region_name="us-east-1", aws_access_key_id=creds["access_key_id"],
                         aws_secret_access_key=creds["secret_access_key"], config=Config(retries={"max_attempts": 1}))
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket="small", Key="big", Body=b"x" * 5000)
        assert code(e) == ("EntityTooLarge", 400)
        c.put_object(Bucket="small", Key="ok", Body=b"x" * 900)
    finally:
        server.shutdown()


def test_unsupported_and_wrong_methods(c3):
    c, creds, url = c3
    with pytest.raises(ClientError) as e:
        c.get_bucket_policy(Bucket="errs")
    assert code(e) == ("NotImplemented", 501)
    with pytest.raises(ClientError) as e:
        c.put_bucket_acl(Bucket="errs", ACL="public-read")
    assert code(e) == ("NotImplemented", 501)
    c.put_bucket_acl(Bucket="errs", ACL="private")
    status, _, body = send("POST", url, sign("POST", url, creds, {}, "UNSIGNED-PAYLOAD"), b"")
    assert status == 405 and b"<Code>MethodNotAllowed</Code>" in body
    with pytest.raises(ClientError) as e:
        c.create_bucket(Bucket="errs", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert code(e) == ("BucketAlreadyOwnedByYou", 409)  # us-east-1 (no constraint) answers 200
    with pytest.raises(ClientError) as e:
        c.head_bucket(Bucket="no-such-bucket")
    assert code(e)[1] == 404
    with pytest.raises(ClientError) as e:
        c.upload_part(Bucket="errs", Key="k", UploadId="nosuchuploadnosuchupload", PartNumber=1, Body=b"x")
    assert code(e) == ("NoSuchUpload", 404)


@pytest.mark.parametrize("query,expected", [
    ("list-type=2&max-keys=abc", b"InvalidArgument"), ("list-type=2&max-keys=-1", b"InvalidArgument"),
    ("list-type=2&continuation-token=%25%25", b"InvalidArgument"), ("encoding-type=base64", b"InvalidArgument"),
    ("list-type=3", b"InvalidArgument"),
])
def test_bad_list_parameters(c3, query, expected):
    _c, creds, url = c3
    target = f"{url}/errs?{query}"
    status, headers, body = send("GET", target, sign("GET", target, creds, {}, "UNSIGNED-PAYLOAD"))
    assert status == 400 and expected in body and headers["content-type"].startswith("application/xml")


def test_malformed_xml_bodies(c3):
    _c, creds, url = c3
    for body in (b"<Delete><Object><Key>a</Key>", b"<!DOCTYPE x [<!ENTITY a 'b'>]><Delete/>", b"<Other/>",
                 b"<Delete></Delete>"):
        target = f"{url}/errs?delete"
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()}
        status, _, resp = send("POST", target, sign("POST", target, creds, headers, "UNSIGNED-PAYLOAD"), body)
        assert status == 400 and b"MalformedXML" in resp, body


def test_anonymous_and_v2_header_auth(make_app):
    app = make_app(STCLOUD_ADMIN_TOKEN="tok")
    client = app.test_client()
    r = client.put("/api/cloud/storage/errs/k", data=b"x")
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.data
    r = client.get("/api/cloud/storage/errs/k", headers={"Authorization": "AWS AKID:sig"})
    assert r.status_code == 400 and b"AWS4-HMAC-SHA256" in r.data
    r = client.get("/api/cloud/storage/errs/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x")
    assert r.status_code == 400 and b"AuthorizationQueryParametersError" in r.data


def test_chunked_body_needs_a_terminated_input(app):
    with app.app_context():
        creds = credentials.mint(bucket="chunk-b", ttl_seconds=600)
    url = "http://localhost/api/cloud/storage/chunk-b/k"
    headers = sign("PUT", url, creds, {"Transfer-Encoding": "chunked"}, "UNSIGNED-PAYLOAD")
    r = app.test_client().put("/api/cloud/storage/chunk-b/k", headers=headers, input_stream=io.BytesIO(b"x"))
    assert r.status_code == 411 and b"MissingContentLength" in r.data


def test_conditional_put_and_any_region(c3, app, live_server):
    c, creds, url = c3
    c.put_object(Bucket="errs", Key="once", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket="errs", Key="once", Body=b"2", IfNoneMatch="*")
    assert code(e) == ("PreconditionFailed", 412)
    # the region in the credential scope is whatever the client uses; the signature is
    # checked with that region
    other = boto3.client("s3", endpoint_url=url, region_name="eu-west-3", aws_access_key_id=creds["access_key_id"],
                         aws_secret_access_key=creds["secret_access_key"], config=Config(retries={"max_attempts": 1}))
    assert other.get_object(Bucket="errs", Key="once")["Body"].read() == b"1"
