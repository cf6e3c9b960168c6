"""The built-in S3-compatible endpoint (``/api/cloud/storage``) and the credentials JSON API.

URL space::

    /api/cloud/storage                          S3 service (ListBuckets)
    /api/cloud/storage/<bucket>[/]              S3 bucket operations
    /api/cloud/storage/<bucket>/<key...>        S3 object operations
    /api/cloud/storage/credentials[/<id>]       JSON API (admin): mint, list, revoke keys

``credentials`` is therefore a reserved bucket name (CreateBucket refuses it).

Authentication on the S3 blueprint (a machine route: no session auth, no CSRF):
- AWS SigV4 (header or presigned query) with an access key from ``credentials``: the key's
  scope (bucket, prefix, read-only) decides; the signature is recomputed and compared in
  constant time; signed payload hashes, chunk signatures and checksums are verified before
  an object becomes visible.
- No SigV4 at all, GET/HEAD only: the dashboard. A signed-in user (session or bearer API key,
  or the admin token) may read what their role allows (``auth.may_read_stored``): admins and
  viewers everything, members their own jobs' files; with ``STCLOUD_AUTH=off`` everything.
  Writes never work this way — the Storage page deletes through its own CSRF-protected form.
  Object GETs carry ``Content-Security-Policy: sandbox`` and ``nosniff`` (dashboard reads are
  also ``attachment``) so an uploaded HTML file cannot run script on the dashboard's origin.

Bodies are read from ``request.stream`` in 1 MiB pieces into a temp file (never
``request.data``). Chunked transfer bodies need ``wsgi.input_terminated`` from the server
(werkzeug's dev server and gunicorn set it); without it the body would read as empty, so such
a request is refused instead of storing an empty object.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from urllib.parse import quote, unquote

from flask import Blueprint, Response, g, jsonify, render_template, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import http_date, parse_date
from werkzeug.routing import BaseConverter

from stcloud.storage import backend as bk
from stcloud.storage import chunked, credentials, service, sigv4
from stcloud.storage.errors import S3Error
from stcloud.web import auth
from stcloud.web.params import json_body

log = logging.getLogger(__name__)

PREFIX = "/api/cloud/storage"
ALL_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]
OWNER = {"id": "stcloud", "name": "stcloud"}
MAX_XML_BODY = 4 * 1024 * 1024
STREAM_CHUNK = 1024 * 1024
ADMIN = credentials.Principal("dashboard", "*", "", read_only=True, admin=True)

# Sub-resources we do not implement: answered NotImplemented rather than mistaken for a
# listing or a plain object operation.
UNSUPPORTED_SUBRESOURCES = {
    "accelerate", "analytics", "cors", "encryption", "intelligent-tiering", "inventory", "lifecycle",
    "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
    "publicAccessBlock", "replication", "requestPayment", "tagging", "website", "legal-hold", "retention",
    "torrent", "restore", "select", "attributes", "renameObject",
}

s3 = Blueprint("s3", __name__, url_prefix=PREFIX)
auth.machine(s3)
api = Blueprint("storage_api", __name__, url_prefix=PREFIX + "/credentials")


class _AnyPath(BaseConverter):
    """Everything after the prefix, empty and repeated slashes included (S3 keys may hold
    ``//`` and end in ``/``); the view re-reads the raw path itself."""

    part_isolating = False
    regex = ".*"
    weight = 400  # after static routes such as /credentials


# ---- request plumbing -----------------------------------------------------------------------

def _http_request() -> sigv4.HttpRequest:
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


def _bucket_and_key() -> tuple[str, str | None]:
    raw = request.environ.get("PATH_INFO", "").encode("latin-1")
    prefix = PREFIX.encode()
    rest = raw[len(prefix):] if raw.startswith(prefix) else b""
    rest = rest[1:] if rest.startswith(b"/") else rest
    try:
        text = rest.decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "Couldn't parse the specified URI: the path is not valid UTF-8.",
                      status=400) from None
    bucket, sep, key = text.partition("/")
    return bucket, (key if sep and key else None)


def _dashboard_admin() -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    bucket, key = _bucket_and_key()
    access = auth.stored_access(service.job_of_key(bucket, key) if key else None)
    if access == "hidden":  # another member's job: it does not exist for this member
        raise S3Error("NoSuchKey", "The specified key does not exist.", status=404)
    return access == "yes"


def _authenticate(hreq: sigv4.HttpRequest):
    """(principal, signing context or None, parsed auth or None). Raises S3Error."""
    parsed = sigv4.parse(hreq)
    v2 = sigv4.parse_v2_query(hreq) if parsed is None else None
    if v2 is not None:
        return _authenticate_v2(hreq, v2), None, None
    if parsed is None:
        if _dashboard_admin():
            return ADMIN, None, None
        raise S3Error("AccessDenied", "Anonymous access is not allowed: sign requests with AWS Signature V4 "
                                      "using an access key from stcloud.")
    akid = parsed.credential.access_key_id
    found = credentials.lookup(akid)
    if found is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=akid)
    if found.state == "revoked":
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided has been revoked.",
                      AWSAccessKeyId=akid)
    ctx = sigv4.verify(hreq, parsed, found.secret)
    if found.state == "expired":
        raise S3Error("ExpiredToken", "The provided token has expired.", AWSAccessKeyId=akid)
    return found.principal, ctx, parsed


def _v2_resource_paths(hreq: sigv4.HttpRequest) -> list[str]:
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


def _authenticate_v2(hreq: sigv4.HttpRequest, v2: sigv4.ParsedV2) -> credentials.Principal:
    found = credentials.lookup(v2.access_key_id)
    if found is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=v2.access_key_id)
    if found.state == "revoked":
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided has been revoked.",
                      AWSAccessKeyId=v2.access_key_id)
    sigv4.verify_v2(hreq, v2, found.secret, _v2_resource_paths(hreq))
    if found.state == "expired":
        raise S3Error("ExpiredToken", "The provided token has expired.", AWSAccessKeyId=v2.access_key_id)
    return found.principal


def _deny(message: str = "Access Denied") -> S3Error:
    return S3Error("AccessDenied", message)


def _s3time(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _xml(template: str, status: int = 200, **ctx) -> Response:
    body = render_template(f"s3/{template}", owner=OWNER, **ctx)
    return Response(body, status=status, mimetype="application/xml")


def _error_response(err: S3Error) -> Response:
    fields = dict(err.fields)
    bucket, key = None, None
    try:
        bucket, key = _bucket_and_key()
    except S3Error:
        pass
    if err.code == "NoSuchBucket" and bucket:
        fields.setdefault("BucketName", bucket)
    if err.code == "NoSuchKey" and key:
        fields.setdefault("Key", key)
    fields = {k: v for k, v in fields.items() if re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", k)}
    body = render_template("s3/error.xml", code=err.code, message=err.message, fields=fields,
                           request_id=g.get("s3_request_id", ""), host_id=g.get("s3_host_id", ""))
    resp = Response(body, status=err.status, mimetype="application/xml")
    if err.code == "InvalidRange" and "ActualObjectSize" in err.fields:
        resp.headers["Content-Range"] = f"bytes */{err.fields['ActualObjectSize']}"
    return resp


@s3.before_request
def _request_ids():
    g.s3_request_id = secrets.token_hex(8).upper()
    g.s3_host_id = base64.b64encode(secrets.token_bytes(24)).decode()


@s3.after_request
def _common_headers(resp: Response):
    resp.headers["x-amz-request-id"] = g.get("s3_request_id", "")
    resp.headers["x-amz-id-2"] = g.get("s3_host_id", "")
    resp.headers.setdefault("Server", "stcloud")
    return resp


# ---- entry point ----------------------------------------------------------------------------

DRAIN_LIMIT = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0


def _drain_body() -> None:
    """Read what is left of the request body before an error answer. A client still sending
    its body when the server closes gets a reset (over TLS: an EOF) instead of our S3 error —
    and boto3 then retries and reports a connection error. Bounded in bytes and time."""
    import time

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


def s3_entry(rest: str = ""):
    try:
        return _dispatch()
    except S3Error as err:
        if err.status >= 500:
            log.error("s3 %s %s: %s", request.method, request.path, err)
        _drain_body()
        return _error_response(err)
    except ClientDisconnected:
        return _error_response(S3Error("IncompleteBody"))
    except Exception:  # noqa: BLE001 - an S3 client expects S3 XML, even for our bugs
        log.exception("s3: unhandled error on %s %s", request.method, request.path)
        _drain_body()
        return _error_response(S3Error("InternalError"))


def _subresources() -> set[str]:
    # Not sub-resources: presigned-URL parameters (v4 and v2), response overrides, and x-id
    # (botocore names the operation in the query for some calls).
    ignored = ("x-id", "AWSAccessKeyId", "Signature", "Expires")
    return {k for k in request.args if not k.startswith(("X-Amz-", "x-amz-", "response-")) and k not in ignored}


def _dispatch() -> Response:
    bucket, key = _bucket_and_key()
    hreq = _http_request()
    principal, signing, parsed = _authenticate(hreq)
    method = request.method
    sub = _subresources()
    unsupported = sub & UNSUPPORTED_SUBRESOURCES
    if unsupported:
        raise S3Error("NotImplemented", f"The {sorted(unsupported)[0]} sub-resource is not implemented by this "
                                        "endpoint.")
    if not bucket:
        if method in ("GET", "HEAD"):
            return _list_buckets(principal)
        raise S3Error("MethodNotAllowed", Method=method, ResourceType="SERVICE")
    if key is None:
        return _bucket_op(method, bucket, sub, principal, signing, parsed)
    return _object_op(method, bucket, key, sub, principal, signing, parsed)


def _bucket_op(method, bucket, sub, principal, signing, parsed) -> Response:
    b = service.backend()
    if method in ("GET", "HEAD") and not sub - {"list-type", "prefix", "delimiter", "max-keys", "marker",
                                                 "continuation-token", "start-after", "encoding-type",
                                                 "fetch-owner"}:
        if method == "HEAD":
            if not principal.bucket_ok(bucket):
                raise _deny()
            b.bucket_info(bucket)
            return Response(status=200, headers={"x-amz-bucket-region": credentials.REGION})
        return _list_objects(bucket, principal)
    if method == "GET":
        if not principal.bucket_ok(bucket):
            raise _deny()
        if "location" in sub:
            b.bucket_info(bucket)
            return _xml("location.xml")
        if "acl" in sub:
            b.bucket_info(bucket)
            return _xml("acl.xml")
        if "versioning" in sub:
            b.bucket_info(bucket)
            return _xml("versioning.xml")
        if "versions" in sub:
            return _list_versions(bucket, principal)
        if "uploads" in sub:
            return _list_uploads(bucket, principal)
        raise S3Error("NotImplemented", f"GET ?{sorted(sub)[0]} is not implemented by this endpoint.")
    if method == "PUT":
        if "acl" in sub:
            if not principal.bucket_ok(bucket) or principal.read_only or principal.admin:
                raise _deny()
            b.bucket_info(bucket)
            _accept_private_acl(signing, parsed)
            return Response(status=200)
        if sub:
            raise S3Error("NotImplemented", f"PUT ?{sorted(sub)[0]} is not implemented by this endpoint.")
        if not principal.can_admin_buckets():
            raise _deny("This access key may not create buckets.")
        bk.check_new_bucket_name(bucket)
        _read_small_body(signing, parsed)  # CreateBucketConfiguration: any region is fine
        b.create_bucket(bucket)
        return Response(status=200, headers={"Location": f"/{bucket}"})
    if method == "DELETE":
        if sub:
            raise S3Error("NotImplemented", f"DELETE ?{sorted(sub)[0]} is not implemented by this endpoint.")
        if not principal.can_admin_buckets():
            raise _deny("This access key may not delete buckets.")
        b.delete_bucket(bucket)
        return Response(status=204)
    if method == "POST" and "delete" in sub:
        return _delete_objects(bucket, principal, signing, parsed)
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="BUCKET")


def _object_op(method, bucket, key, sub, principal, signing, parsed) -> Response:
    if method in ("GET", "HEAD"):
        if not principal.can_read(bucket, key):
            raise _deny()
        if "acl" in sub:
            service.backend().head(bucket, key)
            return _xml("acl.xml")
        if "uploadId" in sub:
            return _list_parts(bucket, key)
        return _get_object(bucket, key, principal, head=(method == "HEAD"))
    if method == "PUT":
        if not principal.can_write(bucket, key):
            raise _deny()
        if "acl" in sub:
            service.backend().head(bucket, key)
            _accept_private_acl(signing, parsed)
            return Response(status=200)
        if "partNumber" in sub or "uploadId" in sub:
            return _upload_part(bucket, key, principal, signing, parsed)
        if request.headers.get("x-amz-copy-source"):
            return _copy_object(bucket, key, principal)
        return _put_object(bucket, key, signing, parsed)
    if method == "POST":
        if not principal.can_write(bucket, key):
            raise _deny()
        if "uploads" in sub:
            return _create_upload(bucket, key)
        if "uploadId" in sub:
            return _complete_upload(bucket, key, signing, parsed)
        raise S3Error("MethodNotAllowed", Method=method, ResourceType="OBJECT")
    if method == "DELETE":
        if not principal.can_write(bucket, key):
            raise _deny()
        if "uploadId" in sub:
            service.backend().abort_upload(bucket, key, request.args.get("uploadId", ""))
            return Response(status=204)
        service.backend().delete(bucket, key)
        service.after_write(bucket, key)
        return Response(status=204)
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="OBJECT")


# ---- bodies ---------------------------------------------------------------------------------

_TRAILER_RE = re.compile(r"x-amz-checksum-(crc32|crc32c|sha1|sha256|crc64nvme)")


def _int_header(name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None or raw == "":
        return None
    if not raw.strip().isdigit():
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer", ArgumentName=name,
                      ArgumentValue=raw[:100])
    return int(raw)


def _body_reader(signing: sigv4.SigningContext | None, parsed: sigv4.ParsedAuth | None, *, required: bool):
    """A reader over the decoded body and the Expectations to verify, from the headers."""
    env = request.environ
    te = request.headers.get("Transfer-Encoding", "").lower()
    http_chunked = "chunked" in te
    length = _int_header("Content-Length")
    if http_chunked and not env.get("wsgi.input_terminated"):
        # Without this flag werkzeug hands out an empty stream: refusing beats storing nothing.
        raise S3Error("MissingContentLength", "This server cannot read a chunked request body "
                                              "(the WSGI server does not terminate the input); send Content-Length.")
    if required and length is None and not http_chunked:
        raise S3Error("MissingContentLength")
    raw = request.stream
    payload = parsed.payload_hash if parsed else sigv4.UNSIGNED_PAYLOAD
    encodings = [e.strip().lower() for e in request.headers.get("Content-Encoding", "").split(",") if e.strip()]
    aws_chunked = payload in sigv4.STREAMING_MODES or "aws-chunked" in encodings
    decoded_length = _int_header("x-amz-decoded-content-length")
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


def _read_small_body(signing, parsed, limit: int = MAX_XML_BODY) -> bytes:
    """A small (XML) body, verified like an object body, into memory."""
    reader, expect = _body_reader(signing, parsed, required=False)
    expect.max_size = limit
    b = service.backend()
    try:
        received = b.receive(reader, expect)
    except S3Error as err:
        if err.code == "EntityTooLarge":
            raise S3Error("MaxMessageLengthExceeded") from None
        raise
    try:
        return received.path.read_bytes()
    finally:
        received.path.unlink(missing_ok=True)


def _parse_xml(data: bytes) -> ET.Element:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise S3Error("MalformedXML")
    try:
        return ET.fromstring(data)
    except ET.ParseError:
        raise S3Error("MalformedXML") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _child_text(el: ET.Element, name: str) -> str | None:
    for c in el:
        if _local(c.tag) == name:
            return (c.text or "").strip()
    return None


def _object_meta() -> dict:
    headers = {}
    for name in ("Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control", "Expires"):
        value = request.headers.get(name)
        if name == "Content-Encoding" and value:
            value = ",".join(e.strip() for e in value.split(",") if e.strip() and e.strip().lower() != "aws-chunked")
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


def _accept_private_acl(signing, parsed) -> None:
    canned = (request.headers.get("x-amz-acl") or "").strip().lower()
    grants = [h for h in request.headers.keys() if h.lower().startswith("x-amz-grant-")]
    body = _read_small_body(signing, parsed)
    public = canned not in ("", "private", "bucket-owner-full-control") or grants or b"AllUsers" in body \
        or b"AuthenticatedUsers" in body
    if public:
        raise S3Error("NotImplemented", "Buckets and objects here are private; only the private ACL is supported.")


def _checksum_headers(info: bk.ObjectInfo) -> dict:
    return {f"x-amz-checksum-{a}": v for a, v in info.checksums.items() if "-" not in v}


# ---- service & bucket operations ------------------------------------------------------------

def _list_buckets(principal) -> Response:
    buckets = [bi for bi in service.backend().list_buckets() if principal.bucket_ok(bi.name)]
    return _xml("list_buckets.xml", buckets=buckets)


def _max_arg(name: str, default: int = 1000) -> int:
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


def _encoder():
    encoding = request.args.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      ArgumentName="encoding-type", ArgumentValue=encoding[:100])
    if encoding == "url":
        return encoding, (lambda s: quote(s or "", safe="/"))
    return None, (lambda s: s or "")


def _list_objects(bucket: str, principal) -> Response:
    prefix = request.args.get("prefix", "")
    delimiter = request.args.get("delimiter", "")
    if not principal.can_list(bucket, prefix):
        raise _deny()
    max_keys = _max_arg("max-keys")
    encoding_type, enc = _encoder()
    b = service.backend()
    if request.args.get("list-type") == "2":
        token = request.args.get("continuation-token")
        start_after = request.args.get("start-after", "")
        after = start_after
        if token is not None:
            try:
                after = base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)).decode("utf-8")
                if not after:
                    raise ValueError
            except (ValueError, binascii.Error):
                raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                              ArgumentName="continuation-token") from None
        result = b.list_objects(bucket, prefix=prefix, delimiter=delimiter, after=after, max_keys=max_keys)
        next_token = (base64.urlsafe_b64encode(result.next_marker.encode()).decode().rstrip("=")
                      if result.truncated and result.next_marker else None)
        return _xml("list_objects_v2.xml", bucket=bucket, prefix=prefix, delimiter=delimiter, result=result,
                    max_keys=max_keys, encoding_type=encoding_type, enc=enc, start_after=start_after,
                    continuation_token=token, next_token=next_token,
                    fetch_owner=request.args.get("fetch-owner") == "true")
    if request.args.get("list-type") not in (None, "1"):
        raise S3Error("InvalidArgument", "list-type must be 1 or 2", ArgumentName="list-type")
    marker = request.args.get("marker", "")
    result = b.list_objects(bucket, prefix=prefix, delimiter=delimiter, after=marker, max_keys=max_keys)
    return _xml("list_objects.xml", bucket=bucket, prefix=prefix, delimiter=delimiter, marker=marker, result=result,
                max_keys=max_keys, encoding_type=encoding_type, enc=enc)


def _list_versions(bucket: str, principal) -> Response:
    prefix = request.args.get("prefix", "")
    if not principal.can_list(bucket, prefix):
        raise _deny()
    max_keys = _max_arg("max-keys")
    encoding_type, enc = _encoder()
    key_marker = request.args.get("key-marker", "")
    result = service.backend().list_objects(bucket, prefix=prefix, delimiter=request.args.get("delimiter", ""),
                                            after=key_marker, max_keys=max_keys)
    return _xml("list_versions.xml", bucket=bucket, prefix=prefix, delimiter=request.args.get("delimiter", ""),
                key_marker=key_marker, version_id_marker=request.args.get("version-id-marker", ""),
                result=result, max_keys=max_keys, encoding_type=encoding_type, enc=enc)


def _list_uploads(bucket: str, principal) -> Response:
    prefix = request.args.get("prefix", "")
    if not principal.can_list(bucket, prefix):
        raise _deny()
    encoding_type, enc = _encoder()
    b = service.backend()
    b.bucket_info(bucket)
    uploads = b.list_uploads(bucket, prefix)[:1000]
    return _xml("list_uploads.xml", bucket=bucket, prefix=prefix, uploads=uploads, max_uploads=1000,
                encoding_type=encoding_type, enc=enc)


def _delete_objects(bucket: str, principal, signing, parsed) -> Response:
    b = service.backend()
    if not principal.bucket_ok(bucket) or principal.read_only or principal.admin:
        raise _deny()
    b.bucket_info(bucket)
    root = _parse_xml(_read_small_body(signing, parsed))
    if _local(root.tag) != "Delete":
        raise S3Error("MalformedXML")
    quiet = (_child_text(root, "Quiet") or "").lower() == "true"
    objects = _children(root, "Object")
    if not objects or len(objects) > 1000:
        raise S3Error("MalformedXML", "The request must contain between 1 and 1000 objects to delete.")
    deleted, errors = [], []
    for obj in objects:
        key = _child_text(obj, "Key")
        if not key:
            raise S3Error("MalformedXML", "Every Object needs a Key.")
        if not principal.can_write(bucket, key):
            errors.append({"key": key, "code": "AccessDenied", "message": "Access Denied"})
            continue
        try:
            b.delete(bucket, key)
            service.after_write(bucket, key)
        except S3Error as err:
            errors.append({"key": key, "code": err.code, "message": err.message})
            continue
        if not quiet:
            deleted.append(key)
    return _xml("delete_result.xml", deleted=deleted, errors=errors)


# ---- objects --------------------------------------------------------------------------------

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
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


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    plain = etag.strip('"')
    return any(t == "*" or t.strip('"').removeprefix("W/").strip('"') == plain for t in tags)


def _check_conditions(info: bk.ObjectInfo, headers: dict, *, for_get: bool, prefix: str = "") -> int | None:
    """412 via PreconditionFailed, or 304 (returned) for GET/HEAD."""
    modified = info.last_modified.replace(microsecond=0)
    if_match = headers.get(f"{prefix}If-Match")
    if_unmod = parse_date(headers.get(f"{prefix}If-Unmodified-Since"))
    if_none = headers.get(f"{prefix}If-None-Match")
    if_mod = parse_date(headers.get(f"{prefix}If-Modified-Since"))
    if if_match is not None:
        if not _etag_matches(if_match, info.etag):
            raise S3Error("PreconditionFailed", Condition=f"{prefix}If-Match")
    elif if_unmod is not None and modified > if_unmod:
        raise S3Error("PreconditionFailed", Condition=f"{prefix}If-Unmodified-Since")
    if if_none is not None:
        if _etag_matches(if_none, info.etag):
            if for_get:
                return 304
            raise S3Error("PreconditionFailed", Condition=f"{prefix}If-None-Match")
    elif if_mod is not None and modified <= if_mod:
        if for_get:
            return 304
        raise S3Error("PreconditionFailed", Condition=f"{prefix}If-Modified-Since")
    return None


_OVERRIDES = {"response-content-type": "Content-Type", "response-content-language": "Content-Language",
              "response-expires": "Expires", "response-cache-control": "Cache-Control",
              "response-content-disposition": "Content-Disposition",
              "response-content-encoding": "Content-Encoding"}


def _get_object(bucket: str, key: str, principal, *, head: bool) -> Response:
    info, fh = service.backend().open(bucket, key)
    try:
        status = _check_conditions(info, request.headers, for_get=True)
        headers = {"ETag": info.etag, "Last-Modified": http_date(info.last_modified), "Accept-Ranges": "bytes",
                   "Content-Type": info.content_type, "X-Content-Type-Options": "nosniff",
                   "Content-Security-Policy": "sandbox; default-src 'none'"}
        headers.update(info.headers)
        for name, value in info.metadata.items():
            headers[f"x-amz-meta-{name}"] = value
        if info.parts:
            headers["x-amz-mp-parts-count"] = str(info.parts)
        if principal.admin:
            name = key.rsplit("/", 1)[-1] or "download"
            headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
            headers["Cache-Control"] = "private, no-store"
        for param, header in _OVERRIDES.items():
            value = request.args.get(param)
            if value is not None:
                headers[header] = value
        if status == 304:
            fh.close()
            return Response(status=304, headers={k: v for k, v in headers.items()
                                                 if k in ("ETag", "Last-Modified")})
        byte_range = _parse_range(request.headers.get("Range"), info.size)
        if byte_range is None:
            start, length, code = 0, info.size, 200
            if request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
                headers.update({f"x-amz-checksum-{a}": v for a, v in info.checksums.items()})
        else:
            start, end = byte_range
            length, code = end - start + 1, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        headers["Content-Length"] = str(length)
        if head:
            fh.close()
            return Response(status=code, headers=headers)
        return Response(_file_iter(fh, start, length), status=code, headers=headers, direct_passthrough=True)
    except BaseException:
        fh.close()
        raise


def _file_iter(fh, start: int, length: int):
    try:
        fh.seek(start)
        left = length
        while left > 0:
            data = fh.read(min(STREAM_CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        fh.close()


def _check_put_conditions(bucket: str, key: str) -> None:
    if_none = request.headers.get("If-None-Match")
    if_match = request.headers.get("If-Match")
    if if_none is None and if_match is None:
        return
    try:
        info = service.backend().head(bucket, key)
    except S3Error as err:
        if err.code != "NoSuchKey":
            raise
        info = None
    if if_none is not None and info is not None and _etag_matches(if_none, info.etag):
        raise S3Error("PreconditionFailed", Condition="If-None-Match")
    if if_match is not None and (info is None or not _etag_matches(if_match, info.etag)):
        if info is None:
            raise S3Error("NoSuchKey", Key=key)
        raise S3Error("PreconditionFailed", Condition="If-Match")


def _put_object(bucket: str, key: str, signing, parsed) -> Response:
    b = service.backend()
    meta = _object_meta()
    b.bucket_info(bucket)
    _check_put_conditions(bucket, key)
    reader, expect = _body_reader(signing, parsed, required=True)
    expect.max_size = b.max_put_size
    declared = _int_header("x-amz-decoded-content-length") or _int_header("Content-Length")
    if declared is not None and declared > expect.max_size:
        raise S3Error("EntityTooLarge", ProposedSize=str(declared), MaxSizeAllowed=str(expect.max_size))
    info = b.put(bucket, key, reader, expect, meta)
    service.after_write(bucket, key)
    return Response(status=200, headers={"ETag": info.etag, **_checksum_headers(info)})


def _copy_source() -> tuple[str, str]:
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


def _copy_object(bucket: str, key: str, principal) -> Response:
    src_bucket, src_key = _copy_source()
    if not principal.can_read(src_bucket, src_key):
        raise _deny()
    b = service.backend()
    directive = (request.headers.get("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.", ArgumentName="x-amz-metadata-directive",
                      ArgumentValue=directive)
    source = b.head(src_bucket, src_key)
    _check_conditions(source, request.headers, for_get=False, prefix="x-amz-copy-source-")
    if (src_bucket, src_key) == (bucket, key) and directive == "COPY":
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to "
                                        "itself without changing the object's metadata, storage class, website "
                                        "redirect location or encryption attributes.")
    if source.size > bk.MAX_PUT_SIZE:
        raise S3Error("InvalidRequest", "The specified copy source is larger than the maximum allowable size for a "
                                        "copy source: 5368709120")
    meta = _object_meta() if directive == "REPLACE" else None
    info = b.copy(src_bucket, src_key, bucket, key, meta=meta)
    service.after_write(bucket, key)
    return _xml("copy_result.xml", element="CopyObjectResult", last_modified=info.last_modified, etag=info.etag,
                checksums={a: v for a, v in info.checksums.items() if "-" not in v})


def _create_upload(bucket: str, key: str) -> Response:
    b = service.backend()
    meta = _object_meta()
    algorithm = (request.headers.get("x-amz-checksum-algorithm") or "").strip().lower() or None
    if algorithm and algorithm not in chunked.CHECKSUM_ALGORITHMS:
        raise S3Error("InvalidRequest", f"Checksum algorithm {algorithm!r} is not supported.")
    upload_id = b.create_upload(bucket, key, meta, algorithm)
    headers = {"x-amz-checksum-algorithm": algorithm.upper()} if algorithm else {}
    resp = _xml("initiate_multipart.xml", bucket=bucket, key=key, upload_id=upload_id)
    resp.headers.update(headers)
    return resp


def _part_number() -> int:
    raw = request.args.get("partNumber", "")
    if not raw.isdigit():
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=raw[:50])
    return int(raw)


def _upload_part(bucket: str, key: str, principal, signing, parsed) -> Response:
    upload_id = request.args.get("uploadId", "")
    number = _part_number()
    b = service.backend()
    if request.headers.get("x-amz-copy-source"):
        src_bucket, src_key = _copy_source()
        if not principal.can_read(src_bucket, src_key):
            raise _deny()
        source = b.head(src_bucket, src_key)
        _check_conditions(source, request.headers, for_get=False, prefix="x-amz-copy-source-")
        byte_range = None
        raw_range = request.headers.get("x-amz-copy-source-range")
        if raw_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", raw_range.strip())
            if not m or int(m.group(2)) < int(m.group(1)) or int(m.group(2)) >= source.size:
                raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form "
                                                 "bytes=first-last where first and last are the zero-based offsets "
                                                 "of the first and last bytes to copy",
                              ArgumentName="x-amz-copy-source-range", ArgumentValue=raw_range[:100])
            byte_range = (int(m.group(1)), int(m.group(2)))
        part = b.upload_part_copy(bucket, key, upload_id, number, src_bucket, src_key, byte_range)
        return _xml("copy_result.xml", element="CopyPartResult", last_modified=part.last_modified,
                    etag=part.etag, checksums={})
    reader, expect = _body_reader(signing, parsed, required=True)
    declared = _int_header("x-amz-decoded-content-length") or _int_header("Content-Length")
    if declared is not None and declared > bk.MAX_PART_SIZE:
        raise S3Error("EntityTooLarge", ProposedSize=str(declared), MaxSizeAllowed=str(bk.MAX_PART_SIZE))
    part = b.upload_part(bucket, key, upload_id, number, reader, expect)
    headers = {"ETag": part.etag}
    headers.update({f"x-amz-checksum-{a}": v for a, v in part.checksums.items()})
    return Response(status=200, headers=headers)


def _list_parts(bucket: str, key: str) -> Response:
    upload_id = request.args.get("uploadId", "")
    b = service.backend()
    b.bucket_info(bucket)
    info = b.upload_info(bucket, key, upload_id)
    raw_marker = request.args.get("part-number-marker") or "0"
    if not raw_marker.isdigit():
        raise S3Error("InvalidArgument", "part-number-marker must be an integer", ArgumentName="part-number-marker",
                      ArgumentValue=raw_marker[:50])
    marker = int(raw_marker)
    max_parts = _max_arg("max-parts")
    parts = [p for p in b.list_parts(bucket, key, upload_id) if p.number > marker]
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    return _xml("list_parts.xml", bucket=bucket, key=key, upload_id=upload_id, marker=marker,
                next_marker=parts[-1].number if truncated and parts else None, max_parts=max_parts,
                truncated=truncated, parts=parts, checksum_algorithm=info.meta.get("checksum_algorithm"))


def _complete_upload(bucket: str, key: str, signing, parsed) -> Response:
    upload_id = request.args.get("uploadId", "")
    b = service.backend()
    b.bucket_info(bucket)
    b.upload_info(bucket, key, upload_id)  # NoSuchUpload before reading the body
    root = _parse_xml(_read_small_body(signing, parsed))
    if _local(root.tag) != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    requested = []
    for part in _children(root, "Part"):
        number = _child_text(part, "PartNumber") or ""
        if not number.isdigit():
            raise S3Error("MalformedXML", "Every Part needs a numeric PartNumber.")
        sums = {}
        for algorithm in chunked.CHECKSUM_ALGORITHMS:
            value = _child_text(part, f"Checksum{algorithm.upper()}")
            if value:
                sums[algorithm] = value
        requested.append((int(number), _child_text(part, "ETag") or "", sums))
    if len(requested) > bk.MAX_PARTS:
        raise S3Error("MalformedXML", "A multipart upload has at most 10000 parts.")
    info = b.complete_upload(bucket, key, upload_id, requested)
    service.after_write(bucket, key)
    location = f"{request.host_url.rstrip('/')}{PREFIX}/{quote(bucket)}/{quote(key, safe='/')}"
    return _xml("complete_multipart.xml", location=location, bucket=bucket, key=key, info=info)


# ---- credentials JSON API (admin; normal auth + CSRF rules) --------------------------------

def _refuse_s3_client():
    """A SigV4 request routed here is an S3 client addressing a bucket named ``credentials``."""
    if sigv4.is_signed(_http_request()):
        g.s3_request_id = secrets.token_hex(8).upper()
        return _error_response(S3Error("NoSuchBucket", "The bucket name 'credentials' is reserved by this endpoint.",
                                       BucketName="credentials"))
    return None


@api.get("")
def list_keys():
    refused = _refuse_s3_client()
    if refused is not None:
        return refused
    return jsonify({"credentials": credentials.list_credentials()})


@api.post("")
def mint_key():
    refused = _refuse_s3_client()
    if refused is not None:
        return refused
    body = json_body()
    unknown = set(body) - {"bucket", "prefix", "ttl_seconds", "job_id", "read_only", "description"}
    if unknown:
        from stcloud.errors import BadRequest

        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}", extra={"field": sorted(unknown)[0]})
    out = credentials.mint(bucket=body.get("bucket"), prefix=body.get("prefix", ""),
                           ttl_seconds=body.get("ttl_seconds"), job_id=body.get("job_id"),
                           read_only=body.get("read_only", False), description=body.get("description"))
    return jsonify(out), 201


@api.delete("/<access_key_id>")
def revoke_key(access_key_id):
    refused = _refuse_s3_client()
    if refused is not None:
        return refused
    return jsonify({"credential": credentials.revoke(access_key_id)})


# merge_slashes=False: "a//b" is a different key from "a/b"; werkzeug would redirect it.
s3.add_url_rule("", "service", s3_entry, methods=ALL_METHODS, merge_slashes=False, strict_slashes=False)
s3.add_url_rule("/<s3any:rest>", "path", s3_entry, methods=ALL_METHODS, merge_slashes=False)


def init_app(app):
    # The converter must exist before the blueprint's rules are bound to the app's map.
    app.url_map.converters["s3any"] = _AnyPath
    app.jinja_env.filters["s3time"] = _s3time
    app.register_blueprint(api)
    app.register_blueprint(s3)
