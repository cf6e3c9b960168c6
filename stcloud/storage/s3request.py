"""Request parsing for the S3 endpoint: the raw path into bucket and key, headers as signed,
sub-resources, query arguments, bodies (streamed, aws-chunked, checksummed) and small XML
bodies. Nothing here decides what an operation does; that is ``s3_buckets``/``s3_objects``.
"""
from __future__ import annotations

import base64
import binascii
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import quote, unquote

from flask import request

from stcloud.storage import backend as bk
from stcloud.storage import chunked, credentials, service, sigv4
from stcloud.storage.errors import S3Error

PREFIX = "/api/cloud/storage"
MAX_XML_BODY = 4 * 1024 * 1024
STREAM_CHUNK = 1024 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0

# Listing arguments of GET/HEAD on a bucket (not sub-resources of their own).
LIST_ARGS = {"list-type", "prefix", "delimiter", "max-keys", "marker", "continuation-token", "start-after",
             "encoding-type", "fetch-owner"}


@dataclass(frozen=True)
class S3Call:
    """One authenticated S3 request, as the handlers see it."""

    method: str
    bucket: str
    key: str | None
    sub: frozenset[str]
    principal: credentials.Principal
    signing: sigv4.SigningContext | None
    parsed: sigv4.ParsedAuth | None


# ---- path, headers, query -------------------------------------------------------------------

def http_request() -> sigv4.HttpRequest:
    """The request as signed: method, raw path bytes, query and headers as sent."""
    env = request.environ
    path = (env.get("SCRIPT_NAME", "") + env.get("PATH_INFO", "")).encode("latin-1")
    headers: dict[str, str] = {}
    for key, value in env.items():
        if key.startswith("HTTP_"):
            name = key[5:].lower().replace("_", "-")
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if value == "":
                continue
            name = key.lower().replace("_", "-")
        else:
            continue
        # WSGI hands header bytes over as latin-1; signatures are over the bytes.
        headers[name] = str(value).encode("latin-1", "replace").decode("utf-8", "surrogateescape")
    return sigv4.HttpRequest(request.method, path, sigv4.parse_query(env.get("QUERY_STRING", "")), headers)


def bucket_and_key(prefix: str = PREFIX) -> tuple[str, str | None]:
    """Bucket and key from the raw path below ``prefix`` (``//`` and a trailing ``/`` kept)."""
    raw = request.environ.get("PATH_INFO", "").encode("latin-1")
    mount = prefix.encode()
    rest = raw[len(mount):] if raw.startswith(mount) else b""
    rest = rest[1:] if rest.startswith(b"/") else rest
    try:
        text = rest.decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "Couldn't parse the specified URI: the path is not valid UTF-8.",
                      status=400) from None
    bucket, sep, key = text.partition("/")
    return bucket, (key if sep and key else None)


def subresources() -> frozenset[str]:
    # Not sub-resources: presigned-URL parameters (v4 and v2), response overrides, and x-id
    # (botocore names the operation in the query for some calls).
    ignored = ("x-id", "AWSAccessKeyId", "Signature", "Expires")
    return frozenset(k for k in request.args
                     if not k.startswith(("X-Amz-", "x-amz-", "response-")) and k not in ignored)


def v2_resource_paths(hreq: sigv4.HttpRequest) -> list[str]:
    """The paths a SigV2 presigner may have signed for this request."""
    env = request.environ
    raw = (env.get("RAW_URI") or env.get("REQUEST_URI") or "").split("?", 1)[0]
    candidates = [raw] if raw.startswith("/") else []
    candidates.append(quote(hreq.path, safe="/~"))
    mount = (env.get("SCRIPT_NAME", "") + PREFIX)
    out = []
    for c in candidates:
        for path in (c, c[len(mount):] if c.startswith(mount + "/") else None):
            # botocore signs a bucket-level path as "/bucket/" when it could address it
            # virtual-host style.
            for variant in (path, path + "/" if path and path.count("/") == 1 else None):
                if variant and variant not in out:
                    out.append(variant)
    return out


def int_header(name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None or raw == "":
        return None
    if not raw.strip().isdigit():
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer", ArgumentName=name,
                      ArgumentValue=raw[:100])
    return int(raw)


def max_arg(name: str, default: int = 1000) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range",
                      ArgumentName=name, ArgumentValue=raw[:100]) from None
    if value < 0 or value > 2 ** 31 - 1:
        raise S3Error("InvalidArgument", f"Argument {name} must be an integer between 0 and 2147483647",
                      ArgumentName=name, ArgumentValue=raw[:100])
    return min(value, 1000)


def encoder():
    """(encoding-type to echo, function encoding keys in a listing)."""
    encoding = request.args.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      ArgumentName="encoding-type", ArgumentValue=encoding[:100])
    if encoding == "url":
        return encoding, (lambda s: quote(s or "", safe="/"))
    return None, (lambda s: s or "")


def continuation_token(token: str) -> str:
    try:
        after = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)).decode("utf-8")
        if not after:
            raise ValueError
    except (ValueError, binascii.Error):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token") from None
    return after


def part_number() -> int:
    raw = request.args.get("partNumber", "")
    if not raw.isdigit():
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=raw[:50])
    return int(raw)


def copy_source() -> tuple[str, str]:
    raw = request.headers.get("x-amz-copy-source", "")
    source, _, query = raw.partition("?")
    if query and not query.startswith("versionId=null"):
        raise S3Error("InvalidArgument", "Buckets here are not versioned: versionId must be null.",
                      ArgumentName="x-amz-copy-source")
    text = unquote(source).lstrip("/")
    bucket, sep, key = text.partition("/")
    if not bucket or not sep or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      ArgumentName="x-amz-copy-source", ArgumentValue=raw[:200])
    return bucket, key


def copy_source_range(size: int) -> tuple[int, int] | None:
    raw_range = request.headers.get("x-amz-copy-source-range")
    if not raw_range:
        return None
    m = re.fullmatch(r"bytes=(\d+)-(\d+)", raw_range.strip())
    if not m or int(m.group(2)) < int(m.group(1)) or int(m.group(2)) >= size:
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form "
                                         "bytes=first-last where first and last are the zero-based offsets "
                                         "of the first and last bytes to copy",
                      ArgumentName="x-amz-copy-source-range", ArgumentValue=raw_range[:100])
    return int(m.group(1)), int(m.group(2))


_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) or None for the whole object. A malformed or multi-range header
    is ignored, as S3 does; an unsatisfiable one raises InvalidRange."""
    if not header:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    first, last = m.group(1), m.group(2)
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            raise S3Error("InvalidRange", RangeRequested=header, ActualObjectSize=str(size))
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise S3Error("InvalidRange", RangeRequested=header, ActualObjectSize=str(size))
    return start, min(end, size - 1)


def object_meta() -> dict:
    """Content type, stored headers and user metadata of a PUT, copy (REPLACE) or upload."""
    headers = {}
    for name in ("Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control", "Expires"):
        value = request.headers.get(name)
        if name == "Content-Encoding" and value:
            value = content_encoding(value)
        if value:
            headers[name] = value
    metadata = {}
    for name, value in request.headers.items():
        low = name.lower()
        if low.startswith("x-amz-meta-"):
            metadata[low[len("x-amz-meta-"):]] = value
    if sum(len(k) + len(v) for k, v in metadata.items()) > bk.MAX_USER_METADATA:
        raise S3Error("MetadataTooLarge", Size=str(sum(len(k) + len(v) for k, v in metadata.items())),
                      MaxSizeAllowed=str(bk.MAX_USER_METADATA))
    return {"content_type": request.headers.get("Content-Type") or bk.DEFAULT_CONTENT_TYPE,
            "headers": headers, "metadata": metadata}


def content_encoding(value: str) -> str:
    """The Content-Encoding to store: ``aws-chunked`` (a transfer detail) removed, the rest as
    sent (``deflate, gzip`` stays ``deflate, gzip``; ``aws-chunked, gzip`` becomes ``gzip``)."""
    codings = [e.strip() for e in value.split(",")]
    if not any(c.lower() == "aws-chunked" for c in codings):
        return value.strip()
    return ", ".join(c for c in codings if c and c.lower() != "aws-chunked")


def version_id() -> str | None:
    """``versionId`` of an object request. Buckets here are unversioned: every object is the
    version ``null``; any other id names a version that does not exist."""
    value = request.args.get("versionId")
    if value is not None and value != "null":
        raise S3Error("NoSuchVersion", Key=None, VersionId=value[:200])
    return value


# ---- bodies ---------------------------------------------------------------------------------

_TRAILER_RE = re.compile(r"x-amz-checksum-(crc32|crc32c|sha1|sha256|crc64nvme)")


def body_reader(signing: sigv4.SigningContext | None, parsed: sigv4.ParsedAuth | None, *, required: bool):
    """A reader over the decoded body and the Expectations to verify, from the headers."""
    env = request.environ
    te = request.headers.get("Transfer-Encoding", "").lower()
    http_chunked = "chunked" in te
    length = int_header("Content-Length")
    if http_chunked and not env.get("wsgi.input_terminated"):
        # Without this flag werkzeug hands out an empty stream: refusing beats storing nothing.
        raise S3Error("MissingContentLength", "This server cannot read a chunked request body "
                                              "(the WSGI server does not terminate the input); send Content-Length.")
    if required and length is None and not http_chunked:
        raise S3Error("MissingContentLength")
    raw = request.stream
    payload = parsed.payload_hash if parsed else sigv4.UNSIGNED_PAYLOAD
    encodings = [e.strip().lower() for e in request.headers.get("Content-Encoding", "").split(",") if e.strip()]
    decoded_length = int_header("x-amz-decoded-content-length")
    # An aws-chunked body is announced by a STREAMING-* payload hash, or (clients that sign
    # UNSIGNED-PAYLOAD) by aws-chunked with its decoded length. "aws-chunked" in the encoding
    # alone is only a label: S3 stores such a body as sent.
    aws_chunked = payload in sigv4.STREAMING_MODES or ("aws-chunked" in encodings and decoded_length is not None)
    expect = bk.Expectations()
    trailer_header = request.headers.get("x-amz-trailer", "").strip().lower()
    if trailer_header:
        m = _TRAILER_RE.fullmatch(trailer_header)
        if not m:
            raise S3Error("InvalidRequest", f"Unsupported x-amz-trailer {trailer_header!r}.")
        expect.trailer_algorithm = m.group(1)
    if aws_chunked:
        signed_chunks = payload in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER)
        if signed_chunks and signing is None:
            raise S3Error("InvalidRequest", "Signed aws-chunked bodies need header authentication.")
        has_trailer = payload in (sigv4.STREAMING_SIGNED_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER) \
            or bool(trailer_header)
        if payload in (sigv4.STREAMING_SIGNED_TRAILER, sigv4.STREAMING_UNSIGNED_TRAILER) and not trailer_header:
            raise S3Error("InvalidRequest", "A -TRAILER payload needs the x-amz-trailer header.")
        inner = chunked.LengthCheckedReader(raw, None if http_chunked else length)
        reader = chunked.AwsChunkedReader(inner, signing=signing if signed_chunks else None, trailer=has_trailer,
                                          trailer_signed=payload == sigv4.STREAMING_SIGNED_TRAILER,
                                          decoded_length=decoded_length)
    else:
        if trailer_header:
            raise S3Error("InvalidRequest", "x-amz-trailer needs an aws-chunked body.")
        reader = chunked.LengthCheckedReader(raw, None if http_chunked else length)
        if payload not in (sigv4.UNSIGNED_PAYLOAD,) and not payload.startswith("STREAMING-"):
            expect.sha256_hex = payload
    md5 = request.headers.get("Content-MD5")
    if md5 is not None:
        try:
            ok = len(base64.b64decode(md5, validate=True)) == 16
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise S3Error("InvalidDigest")
        expect.md5_b64 = md5
    for algorithm in chunked.CHECKSUM_ALGORITHMS:
        value = request.headers.get(f"x-amz-checksum-{algorithm}")
        if value:
            expect.checksums[algorithm] = chunked.validate_checksum_value(algorithm, value.strip())
    requested = (request.headers.get("x-amz-checksum-algorithm")
                 or request.headers.get("x-amz-sdk-checksum-algorithm") or "").strip().lower()
    if requested:
        if requested not in chunked.CHECKSUM_ALGORITHMS:
            raise S3Error("InvalidRequest", f"Checksum algorithm {requested!r} is not supported.")
        expect.extra_algorithms = (requested,)
    return reader, expect


def declared_size() -> int | None:
    return int_header("x-amz-decoded-content-length") or int_header("Content-Length")


def read_small_body(call: S3Call, limit: int = MAX_XML_BODY) -> bytes:
    """A small (XML) body, verified like an object body, into memory."""
    reader, expect = body_reader(call.signing, call.parsed, required=False)
    expect.max_size = limit
    b = service.backend()
    try:
        received = b.receive(reader, expect, durable=False)
    except S3Error as err:
        if err.code == "EntityTooLarge":
            raise S3Error("MaxMessageLengthExceeded") from None
        raise
    try:
        return received.path.read_bytes()
    finally:
        received.path.unlink(missing_ok=True)


def drain_body() -> None:
    """Read what is left of the request body before an error answer. A client still sending
    its body when the server closes gets a reset (over TLS: an EOF) instead of our S3 error —
    and boto3 then retries and reports a connection error. Bounded in bytes and time."""
    length = request.content_length
    if length is None and "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return
    if length is not None and length > DRAIN_LIMIT:
        return
    deadline = time.monotonic() + DRAIN_SECONDS
    total = 0
    try:
        while total < DRAIN_LIMIT and time.monotonic() < deadline:
            data = request.stream.read(STREAM_CHUNK)
            if not data:
                break
            total += len(data)
    except Exception:  # noqa: BLE001 - a broken body: nothing more to save
        pass


# ---- XML bodies -----------------------------------------------------------------------------

def parse_xml(data: bytes) -> ET.Element:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise S3Error("MalformedXML")
    try:
        return ET.fromstring(data)
    except ET.ParseError:
        raise S3Error("MalformedXML") from None


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if local(c.tag) == name]


def child_text(el: ET.Element, name: str) -> str | None:
    for c in el:
        if local(c.tag) == name:
            return (c.text or "").strip()
    return None
