"""SigV4 and aws-chunked, checked against the vectors AWS publishes in the S3 API reference
(examples in "Authenticating Requests (AWS Signature Version 4)"; secret
``wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY``, 2013-05-24T00:00:00Z)."""
from __future__ import annotations

import base64
import hashlib
import io
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from stcloud.storage import chunked, sigv4
from stcloud.storage.errors import S3Error

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = datetime(2013, 5, 24, 0, 0, 5, tzinfo=UTC)
CRED = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
CHUNK_SIGS = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
              "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
              "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]


def req(method, path, headers, query=""):
    return sigv4.HttpRequest(method, path.encode(), sigv4.parse_query(query), headers)


def get_object_request(signature="f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", **extra):
    headers = {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9",
               "x-amz-content-sha256": sigv4.EMPTY_SHA256, "x-amz-date": "20130524T000000Z",
               "authorization": f"AWS4-HMAC-SHA256 Credential={CRED},SignedHeaders=host;range;"
                                f"x-amz-content-sha256;x-amz-date,Signature={signature}"}
    headers.update(extra)
    return req("GET", "/test.txt", headers)


def streaming_request(payload=sigv4.STREAMING_SIGNED):
    return req("PUT", "/examplebucket/chunkObject.txt", {
        "host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z", "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": payload, "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "66560", "content-length": "66824",
        "authorization": f"AWS4-HMAC-SHA256 Credential={CRED},SignedHeaders=content-encoding;content-length;host;"
                         f"x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
                         f"Signature={SEED}"})


def aws_chunked_body(sigs=CHUNK_SIGS, corrupt=False) -> bytes:
    out = b""
    for size, sig in zip((65536, 1024, 0), sigs, strict=False):
        data = b"a" * size
        if corrupt and size == 1024:
            data = b"b" + data[1:]
        out += f"{size:x};chunk-signature={sig}\r\n".encode() + data + b"\r\n"
    return out


def read_all(reader, n=7000) -> bytes:
    out = bytearray()
    while True:
        data = reader.read(n)
        if not data:
            return bytes(out)
        out += data


def test_header_auth_vector():
    r = get_object_request()
    parsed = sigv4.parse(r)
    assert parsed.kind == "header" and parsed.credential.access_key_id == "AKIAIOSFODNN7EXAMPLE"
    ctx = sigv4.verify(r, parsed, SECRET, WHEN)
    assert ctx.seed_signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def test_wrong_secret_and_tampering_fail():
    r = get_object_request()
    with pytest.raises(S3Error) as e:
        sigv4.verify(r, sigv4.parse(r), SECRET + "x", WHEN)
    assert e.value.code == "SignatureDoesNotMatch" and e.value.status == 403
    assert "CanonicalRequest" in e.value.fields and "StringToSign" in e.value.fields
    tampered = get_object_request(range="bytes=0-99")
    with pytest.raises(S3Error) as e:
        sigv4.verify(tampered, sigv4.parse(tampered), SECRET, WHEN)
    assert e.value.code == "SignatureDoesNotMatch"
    garbage = get_object_request(signature="not-hex")
    with pytest.raises(S3Error):
        sigv4.verify(garbage, sigv4.parse(garbage), SECRET, WHEN)


def test_clock_skew():
    r = get_object_request()
    with pytest.raises(S3Error) as e:
        sigv4.verify(r, sigv4.parse(r), SECRET, WHEN + timedelta(minutes=16))
    assert e.value.code == "RequestTimeTooSkewed" and e.value.status == 403
    sigv4.verify(r, sigv4.parse(r), SECRET, WHEN + timedelta(minutes=14))
    with pytest.raises(S3Error):
        sigv4.verify(r, sigv4.parse(r), SECRET, WHEN - timedelta(minutes=16))


def test_unsigned_amz_header_is_refused():
    r = get_object_request(**{"x-amz-meta-evil": "1"})
    with pytest.raises(S3Error) as e:
        sigv4.verify(r, sigv4.parse(r), SECRET, WHEN)
    assert e.value.code == "AccessDenied" and "x-amz-meta-evil" in e.value.fields["HeadersNotSigned"]


@pytest.mark.parametrize("auth,code", [
    ("AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request", "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKID/2013/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=ab",
     "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/ec2/aws4_request,SignedHeaders=host,Signature=ab",
     "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKID/20130523/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=ab",
     "AuthorizationHeaderMalformed"),
    ("AWS4-ECDSA-P256-SHA256 Credential=AKID/20130524/s3/aws4_request", "InvalidRequest"),
    ("AWS AKID:c2lnbmF0dXJl", "InvalidRequest"),
])
def test_malformed_authorization(auth, code):
    r = req("GET", "/b/k", {"host": "h", "x-amz-date": "20130524T000000Z", "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                            "authorization": auth})
    with pytest.raises(S3Error) as e:
        sigv4.parse(r)
    assert e.value.code == code


def test_missing_payload_hash_and_bad_payload_value():
    r = req("GET", "/b/k", {"host": "h", "x-amz-date": "20130524T000000Z",
                            "authorization": f"AWS4-HMAC-SHA256 Credential={CRED},SignedHeaders=host,Signature=ab"})
    with pytest.raises(S3Error) as e:
        sigv4.parse(r)
    assert e.value.code == "InvalidRequest" and "x-amz-content-sha256" in e.value.message
    r = req("GET", "/b/k", {"host": "h", "x-amz-date": "20130524T000000Z", "x-amz-content-sha256": "nonsense",
                            "authorization": f"AWS4-HMAC-SHA256 Credential={CRED},SignedHeaders=host,Signature=ab"})
    with pytest.raises(S3Error) as e:
        sigv4.parse(r)
    assert e.value.code == "InvalidArgument"


def test_presigned_vector_and_expiry():
    q = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
         "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
         "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    r = req("GET", "/test.txt", {"host": "examplebucket.s3.amazonaws.com"}, q)
    parsed = sigv4.parse(r)
    assert parsed.kind == "query" and parsed.expires == 86400 and parsed.payload_hash == "UNSIGNED-PAYLOAD"
    sigv4.verify(r, parsed, SECRET, WHEN + timedelta(hours=23))
    with pytest.raises(S3Error) as e:
        sigv4.verify(r, parsed, SECRET, WHEN + timedelta(hours=25))
    assert e.value.code == "AccessDenied" and e.value.message == "Request has expired"
    assert e.value.fields["X-Amz-Expires"] == "86400"
    week = q.replace("X-Amz-Expires=86400", "X-Amz-Expires=604801")
    with pytest.raises(S3Error) as e:
        sigv4.parse(req("GET", "/test.txt", {"host": "h"}, week))
    assert e.value.code == "AuthorizationQueryParametersError"
    with pytest.raises(S3Error) as e:
        sigv4.parse(req("GET", "/test.txt", {"host": "h"}, "X-Amz-Algorithm=AWS4-HMAC-SHA256"))
    assert e.value.code == "AuthorizationQueryParametersError"


def test_canonical_query_keeps_plus_and_sorts():
    r = req("GET", "/b/a b+c", {"host": "h", "x-amz-date": "20130524T000000Z", "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                                "authorization": f"AWS4-HMAC-SHA256 Credential={CRED},SignedHeaders=host,Signature=ab"},
            "prefix=a%2Bb&delimiter=%2F&acl")
    canonical = sigv4.canonical_request(r, sigv4.parse(r))
    lines = canonical.split("\n")
    assert lines[1] == "/b/a%20b%2Bc"
    assert lines[2] == "acl=&delimiter=%2F&prefix=a%2Bb"


def test_streaming_signed_vector():
    r = streaming_request()
    ctx = sigv4.verify(r, sigv4.parse(r), SECRET, WHEN)
    assert ctx.seed_signature == SEED
    reader = chunked.AwsChunkedReader(io.BytesIO(aws_chunked_body()), signing=ctx, decoded_length=66560)
    assert read_all(reader) == b"a" * 66560
    assert [chunked.AwsChunkedReader] and reader.total == 66560


@pytest.mark.parametrize("n", [1, 13, 65536, 1 << 20])
def test_streaming_decoder_read_sizes(n):
    r = streaming_request()
    ctx = sigv4.verify(r, sigv4.parse(r), SECRET, WHEN)
    assert read_all(chunked.AwsChunkedReader(io.BytesIO(aws_chunked_body()), signing=ctx), n) == b"a" * 66560


def test_streaming_bad_chunk_signature_and_truncation():
    r = streaming_request()
    ctx = sigv4.verify(r, sigv4.parse(r), SECRET, WHEN)
    with pytest.raises(S3Error) as e:
        read_all(chunked.AwsChunkedReader(io.BytesIO(aws_chunked_body(corrupt=True)), signing=ctx))
    assert e.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as e:
        read_all(chunked.AwsChunkedReader(io.BytesIO(aws_chunked_body()[:60000]), signing=ctx))
    assert e.value.code == "IncompleteBody"
    with pytest.raises(S3Error) as e:
        read_all(chunked.AwsChunkedReader(io.BytesIO(aws_chunked_body()), signing=ctx, decoded_length=5))
    assert e.value.code == "IncompleteBody"
    unsigned = aws_chunked_body().replace(b";chunk-signature=" + CHUNK_SIGS[0].encode(), b"")
    with pytest.raises(S3Error) as e:
        read_all(chunked.AwsChunkedReader(io.BytesIO(unsigned), signing=ctx))
    assert e.value.code == "SignatureDoesNotMatch"


def test_trailer_signature_vector():
    r = streaming_request()
    ctx = sigv4.verify(r, sigv4.parse(r), SECRET, WHEN)
    assert sigv4.trailer_signature(ctx, CHUNK_SIGS[2], b"first:1st\nsecond:2nd\nthird:3rd\n") == \
        "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"
    # the same trailers in a signed -TRAILER body are accepted, and rejected when altered
    body = aws_chunked_body()[:-2] + b"first:1st\r\nsecond:2nd\r\nthird:3rd\r\nx-amz-trailer-signature:" \
        b"df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c\r\n\r\n"
    reader = chunked.AwsChunkedReader(io.BytesIO(body), signing=ctx, trailer=True, trailer_signed=True)
    assert read_all(reader) == b"a" * 66560
    assert reader.trailers == {"first": "1st", "second": "2nd", "third": "3rd"}
    with pytest.raises(S3Error) as e:
        read_all(chunked.AwsChunkedReader(io.BytesIO(body.replace(b"2nd", b"2ND")), signing=ctx, trailer=True,
                                          trailer_signed=True))
    assert e.value.code == "SignatureDoesNotMatch"


def test_unsigned_trailer_body_as_boto3_sends_it():
    data = b"hello world" * 1000
    crc = base64.b64encode((zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big"))
    body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(data), data, crc)
    reader = chunked.AwsChunkedReader(io.BytesIO(body), trailer=True)
    assert read_all(reader, 4096) == data
    assert reader.trailers == {"x-amz-checksum-crc32": crc.decode()}


def test_checksums():
    assert chunked.b64(chunked.new_checksum("crc32c").digest()) == "AAAAAA=="
    h = chunked.new_checksum("crc32c")
    h.update(b"hello ")
    h.update(b"world")
    assert h.digest().hex() == "c99465aa"
    table = chunked._crc32c_table()  # the pure-Python fallback agrees with the C package
    crc = 0xFFFFFFFF
    for b in b"123456789":
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    assert crc ^ 0xFFFFFFFF == 0xE3069283 == chunked.crc32c_update(b"123456789")
    for algo, fn in (("sha1", hashlib.sha1), ("sha256", hashlib.sha256)):
        h = chunked.new_checksum(algo)
        h.update(b"abc")
        assert h.digest() == fn(b"abc").digest()
    assert chunked.new_checksum("crc64nvme") is None
    with pytest.raises(S3Error):
        chunked.validate_checksum_value("crc32", "not base64!")
    with pytest.raises(S3Error):
        chunked.validate_checksum_value("crc32", base64.b64encode(b"12345").decode())


def test_presigned_v2():
    import hmac as hmac_mod

    expires = int((WHEN + timedelta(minutes=5)).timestamp())
    sts = f"GET\n\n\n{expires}\n/bucket/key%20x?response-content-type=text/plain"
    sig = base64.b64encode(hmac_mod.new(SECRET.encode(), sts.encode(), hashlib.sha1).digest()).decode()
    from urllib.parse import quote

    q = f"AWSAccessKeyId=AKID&Expires={expires}&Signature={quote(sig, safe='')}&response-content-type=text%2Fplain"
    r = req("GET", "/api/cloud/storage/bucket/key x", {"host": "h"}, q)
    v2 = sigv4.parse_v2_query(r)
    sigv4.verify_v2(r, v2, SECRET, ["/api/cloud/storage/bucket/key%20x", "/bucket/key%20x"], now=WHEN)
    with pytest.raises(S3Error) as e:
        sigv4.verify_v2(r, v2, SECRET + "x", ["/bucket/key%20x"], now=WHEN)
    assert e.value.code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as e:
        sigv4.verify_v2(r, v2, SECRET, ["/bucket/key%20x"], now=WHEN + timedelta(minutes=6))
    assert e.value.code == "AccessDenied" and "expired" in e.value.message
