"""aws-chunked bodies over HTTP, in every variant: signed chunks, signed trailer, unsigned
trailer with CRC32C / SHA1 / SHA256, inside Content-Length or HTTP chunked transfer — and the
ways they go wrong, none of which may leave an object behind."""
from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

from tests.storage.s3util import aws_chunked, checksum, send, sign

CHUNKS = [os.urandom(65536), os.urandom(65536), os.urandom(100)]
DATA = b"".join(CHUNKS)


@pytest.fixture
def ours(app, live_server):
    from stcloud.storage import credentials

    with app.app_context():
        creds = credentials.mint(bucket="chunky", ttl_seconds=3600)
    return live_server + "/api/cloud/storage", creds


@pytest.fixture(params=["stcloud", "moto"])
def endpoint(request):
    """(endpoint URL, credentials) for the good-path checks, against us and moto."""
    if request.param == "moto":
        import boto3

        url = request.getfixturevalue("moto_server")
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="chunky")
        return url, {"access_key_id": "testing", "secret_access_key": "testing"}
    return request.getfixturevalue("ours")


def put(url, creds, key, payload, _unused, extra=None, **kw):
    # Content-Length is left unsigned: http.client adds it from the body it is given.
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(DATA)), **(extra or {})}
    signed = sign("PUT", f"{url}/chunky/{key}", creds, headers, payload)
    if kw.pop("corrupt_seed", False):
        signed["Authorization"] = signed["Authorization"][:-4] + "0000"
    return signed, (lambda b: send("PUT", f"{url}/chunky/{key}", signed, b, **kw))


def get(url, creds, key):
    return send("GET", f"{url}/chunky/{key}", sign("GET", f"{url}/chunky/{key}", creds, {}, "UNSIGNED-PAYLOAD"))


def test_signed_chunks(endpoint):
    url, creds = endpoint
    headers, go = put(url, creds, "signed.bin", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", b"")
    status, _, body = go(aws_chunked(CHUNKS, signed_headers=headers, creds=creds))
    assert status == 200, body
    assert get(url, creds, "signed.bin")[2] == DATA


@pytest.mark.parametrize("algorithm", ["crc32c", "sha1", "sha256", "crc32"])
def test_unsigned_trailer_checksums(endpoint, algorithm):
    url, creds = endpoint
    name = f"x-amz-checksum-{algorithm}"
    headers, go = put(url, creds, f"trailer-{algorithm}.bin", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", b"",
                      {"x-amz-trailer": name})
    status, _, body = go(aws_chunked(CHUNKS, trailer=(name, checksum(algorithm, DATA))))
    assert status == 200, body
    assert get(url, creds, f"trailer-{algorithm}.bin")[2] == DATA


def test_signed_trailer(endpoint):
    url, creds = endpoint
    name = "x-amz-checksum-crc32c"
    headers, go = put(url, creds, "signed-trailer.bin", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", b"",
                      {"x-amz-trailer": name})
    status, _, body = go(aws_chunked(CHUNKS, signed_headers=headers, creds=creds,
                                     trailer=(name, checksum("crc32c", DATA)), sign_trailer=True))
    assert status == 200, body
    assert get(url, creds, "signed-trailer.bin")[2] == DATA


def test_aws_chunked_inside_http_chunked_transfer(ours):
    url, creds = ours
    name = "x-amz-checksum-crc32"
    headers, go = put(url, creds, "te.bin", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", b"", {"x-amz-trailer": name},
                      chunked_transfer=True)
    status, _, body = go(aws_chunked(CHUNKS, trailer=(name, checksum("crc32", DATA))))
    assert status == 200, body
    assert get(url, creds, "te.bin")[2] == DATA


def absent(url, creds, key):
    status, _, body = get(url, creds, key)
    return status == 404 and b"NoSuchKey" in body


def test_bad_chunk_signature(ours):
    url, creds = ours
    headers, go = put(url, creds, "bad-sig.bin", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", b"")
    status, _, body = go(aws_chunked(CHUNKS, signed_headers=headers, creds=creds, corrupt_chunk=1))
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body
    assert absent(url, creds, "bad-sig.bin")


def test_bad_trailer_signature(ours):
    url, creds = ours
    name = "x-amz-checksum-crc32c"
    headers, go = put(url, creds, "bad-trailer-sig.bin", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", b"",
                      {"x-amz-trailer": name})
    body = aws_chunked(CHUNKS, signed_headers=headers, creds=creds, trailer=(name, checksum("crc32c", DATA)),
                       sign_trailer=True)
    body = body.replace(b"x-amz-trailer-signature:", b"x-amz-trailer-signature:0")[:-3] + b"\r\n\r\n"
    status, _, resp = go(body)
    assert status == 403 and b"SignatureDoesNotMatch" in resp
    assert absent(url, creds, "bad-trailer-sig.bin")


@pytest.mark.parametrize("algorithm", ["crc32c", "sha1", "sha256", "crc32"])
def test_wrong_trailing_checksum_is_bad_digest(ours, algorithm):
    url, creds = ours
    name = f"x-amz-checksum-{algorithm}"
    headers, go = put(url, creds, "bad-sum.bin", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", b"", {"x-amz-trailer": name})
    status, _, body = go(aws_chunked(CHUNKS, trailer=(name, checksum(algorithm, DATA + b"x"))))
    assert status == 400 and b"<Code>BadDigest</Code>" in body
    assert absent(url, creds, "bad-sum.bin")


def test_announced_trailer_missing(ours):
    url, creds = ours
    headers, go = put(url, creds, "no-trailer.bin", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", b"",
                      {"x-amz-trailer": "x-amz-checksum-crc32"})
    status, _, body = go(aws_chunked(CHUNKS))
    assert status == 400 and b"InvalidRequest" in body
    assert absent(url, creds, "no-trailer.bin")


def test_truncated_chunks_and_wrong_decoded_length(ours):
    url, creds = ours
    headers, go = put(url, creds, "cut.bin", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", b"")
    full = aws_chunked(CHUNKS, signed_headers=headers, creds=creds)
    status, _, body = go(full[:70000])
    assert status == 400 and b"IncompleteBody" in body
    headers, go = put(url, creds, "cut.bin", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", b"",
                      {"x-amz-decoded-content-length": "5"})
    status, _, body = go(aws_chunked(CHUNKS, signed_headers=headers, creds=creds))
    assert status == 400 and b"IncompleteBody" in body
    assert absent(url, creds, "cut.bin")


def test_plain_body_digests(ours):
    import base64
    import hashlib

    url, creds = ours
    body = b"plain body"
    target = f"{url}/chunky/plain.txt"
    wrong_hash = hashlib.sha256(b"other").hexdigest()
    status, _, resp = send("PUT", target, sign("PUT", target, creds, {}, wrong_hash), body)
    assert status == 400 and b"XAmzContentSHA256Mismatch" in resp
    for headers, code in (({"Content-MD5": base64.b64encode(hashlib.md5(b"x").digest()).decode()}, b"BadDigest"),
                          ({"Content-MD5": "nope"}, b"InvalidDigest"),
                          ({"x-amz-checksum-crc32": checksum("crc32", b"x")}, b"BadDigest"),
                          ({"x-amz-checksum-sha256": "short"}, b"InvalidRequest")):
        h = sign("PUT", target, creds, headers, "UNSIGNED-PAYLOAD")
        status, _, resp = send("PUT", target, h, body)
        assert status == 400 and code in resp, (headers, resp)
    assert absent(url, creds, "plain.txt")
    good = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
            "x-amz-checksum-sha1": checksum("sha1", body)}
    status, headers, resp = send("PUT", target, sign("PUT", target, creds, good, hashlib.sha256(body).hexdigest()), body)
    assert status == 200 and headers["x-amz-checksum-sha1"] == checksum("sha1", body)


def test_put_without_length_is_refused(ours):
    url, creds = ours
    target = f"{url}/chunky/nolength"
    headers = sign("PUT", target, creds, {}, "UNSIGNED-PAYLOAD")
    parts = urlsplit(target)
    lines = ([f"PUT {parts.path} HTTP/1.1", f"Host: {parts.netloc}"] + [f"{k}: {v}" for k, v in headers.items()]
             + ["Connection: close", "", ""])
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411") and b"MissingContentLength" in answer
