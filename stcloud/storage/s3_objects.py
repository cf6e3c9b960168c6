"""S3 object operations and multipart uploads: one function per operation, each taking the
parsed ``S3Call`` (the key's read/write scope is checked by the dispatcher), calling the
backend and rendering the answer."""
from __future__ import annotations

from urllib.parse import quote

from flask import Response, request
from werkzeug.http import http_date, parse_date

from stcloud.storage import backend as bk
from stcloud.storage import chunked, s3request, service
from stcloud.storage.errors import S3Error
from stcloud.storage.s3_buckets import accept_private_acl
from stcloud.storage.s3auth import deny
from stcloud.storage.s3request import S3Call
from stcloud.storage.s3response import checksum_headers, object_body, xml

_OVERRIDES = {"response-content-type": "Content-Type", "response-content-language": "Content-Language",
              "response-expires": "Expires", "response-cache-control": "Cache-Control",
              "response-content-disposition": "Content-Disposition",
              "response-content-encoding": "Content-Encoding"}


# ---- conditions -----------------------------------------------------------------------------

def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    plain = etag.strip('"')
    return any(t == "*" or t.strip('"').removeprefix("W/").strip('"') == plain for t in tags)


def _check_conditions(info: bk.ObjectInfo, headers, *, for_get: bool, prefix: str = "") -> int | None:
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


# ---- reads ----------------------------------------------------------------------------------

def get_object(call: S3Call) -> Response:
    return _read_object(call, head=False)


def head_object(call: S3Call) -> Response:
    return _read_object(call, head=True)


def _part_range(info: bk.ObjectInfo) -> tuple[int, int] | None:
    """(start, length) of ``?partNumber=N``, or None without one. A plain object is one part."""
    raw = request.args.get("partNumber")
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= bk.MAX_PARTS:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=raw[:50])
    if request.headers.get("Range"):
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
    number = int(raw)
    sizes = info.part_sizes or ([info.size] if not info.parts else [])
    if number > len(sizes):
        raise S3Error("InvalidPart", "The requested partnumber is not satisfiable", PartNumber=raw)
    return sum(sizes[:number - 1]), sizes[number - 1]


def _read_object(call: S3Call, *, head: bool) -> Response:
    key = call.key
    s3request.version_id()
    info, fh = service.backend().open(call.bucket, key)
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
        for param, header in _OVERRIDES.items():
            value = request.args.get(param)
            if value is not None:
                headers[header] = value
        if status == 304:
            fh.close()
            return Response(status=304, headers={k: v for k, v in headers.items()
                                                 if k in ("ETag", "Last-Modified")})
        part = _part_range(info)
        byte_range = s3request.parse_range(request.headers.get("Range"), info.size)
        if part is not None and info.parts:
            start, length = part
            byte_range = (start, start + length - 1) if length else None
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
        return object_body(fh, start, length, code, headers)
    except BaseException:
        fh.close()
        raise


def get_acl(call: S3Call) -> Response:
    service.backend().head(call.bucket, call.key)
    return xml("acl.xml")


def put_acl(call: S3Call) -> Response:
    service.backend().head(call.bucket, call.key)
    accept_private_acl(call)
    return Response(status=200)


# ---- writes ---------------------------------------------------------------------------------

def put_object(call: S3Call) -> Response:
    b = service.backend()
    meta = s3request.object_meta()
    b.bucket_info(call.bucket)
    _check_put_conditions(call.bucket, call.key)
    reader, expect = s3request.body_reader(call.signing, call.parsed, required=True)
    expect.max_size = b.max_put_size
    declared = s3request.declared_size()
    if declared is not None and declared > expect.max_size:
        raise S3Error("EntityTooLarge", ProposedSize=str(declared), MaxSizeAllowed=str(expect.max_size))
    info = b.put(call.bucket, call.key, reader, expect, meta)
    service.after_write(call.bucket, call.key)
    return Response(status=200, headers={"ETag": info.etag, **checksum_headers(info)})


def copy_object(call: S3Call) -> Response:
    bucket, key = call.bucket, call.key
    src_bucket, src_key = s3request.copy_source()
    if not call.principal.can_read(src_bucket, src_key):
        raise deny()
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
    meta = s3request.object_meta() if directive == "REPLACE" else None
    info = b.copy(src_bucket, src_key, bucket, key, meta=meta)
    service.after_write(bucket, key)
    return xml("copy_result.xml", element="CopyObjectResult", last_modified=info.last_modified, etag=info.etag,
               checksums={a: v for a, v in info.checksums.items() if "-" not in v})


def delete_object(call: S3Call) -> Response:
    version = s3request.version_id()
    service.backend().delete(call.bucket, call.key)
    if version:
        service.after_write(call.bucket, call.key)
        return Response(status=204, headers={"x-amz-version-id": version})
    service.after_write(call.bucket, call.key)
    return Response(status=204)


# ---- multipart ------------------------------------------------------------------------------

def create_upload(call: S3Call) -> Response:
    meta = s3request.object_meta()
    algorithm = (request.headers.get("x-amz-checksum-algorithm") or "").strip().lower() or None
    if algorithm and algorithm not in chunked.CHECKSUM_ALGORITHMS:
        raise S3Error("InvalidRequest", f"Checksum algorithm {algorithm!r} is not supported.")
    upload_id = service.backend().create_upload(call.bucket, call.key, meta, algorithm)
    resp = xml("initiate_multipart.xml", bucket=call.bucket, key=call.key, upload_id=upload_id)
    if algorithm:
        resp.headers["x-amz-checksum-algorithm"] = algorithm.upper()
    return resp


def upload_part(call: S3Call) -> Response:
    bucket, key = call.bucket, call.key
    upload_id = request.args.get("uploadId", "")
    number = s3request.part_number()
    b = service.backend()
    if request.headers.get("x-amz-copy-source"):
        src_bucket, src_key = s3request.copy_source()
        if not call.principal.can_read(src_bucket, src_key):
            raise deny()
        source = b.head(src_bucket, src_key)
        _check_conditions(source, request.headers, for_get=False, prefix="x-amz-copy-source-")
        byte_range = s3request.copy_source_range(source.size)
        part = b.upload_part_copy(bucket, key, upload_id, number, src_bucket, src_key, byte_range)
        return xml("copy_result.xml", element="CopyPartResult", last_modified=part.last_modified,
                   etag=part.etag, checksums={})
    reader, expect = s3request.body_reader(call.signing, call.parsed, required=True)
    declared = s3request.declared_size()
    if declared is not None and declared > bk.MAX_PART_SIZE:
        raise S3Error("EntityTooLarge", ProposedSize=str(declared), MaxSizeAllowed=str(bk.MAX_PART_SIZE))
    part = b.upload_part(bucket, key, upload_id, number, reader, expect)
    headers = {"ETag": part.etag}
    headers.update({f"x-amz-checksum-{a}": v for a, v in part.checksums.items()})
    return Response(status=200, headers=headers)


def list_parts(call: S3Call) -> Response:
    bucket, key = call.bucket, call.key
    upload_id = request.args.get("uploadId", "")
    b = service.backend()
    b.bucket_info(bucket)
    info = b.upload_info(bucket, key, upload_id)
    raw_marker = request.args.get("part-number-marker") or "0"
    if not raw_marker.isdigit():
        raise S3Error("InvalidArgument", "part-number-marker must be an integer", ArgumentName="part-number-marker",
                      ArgumentValue=raw_marker[:50])
    marker = int(raw_marker)
    max_parts = s3request.max_arg("max-parts")
    parts = [p for p in b.list_parts(bucket, key, upload_id) if p.number > marker]
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    return xml("list_parts.xml", bucket=bucket, key=key, upload_id=upload_id, marker=marker,
               next_marker=parts[-1].number if truncated and parts else None, max_parts=max_parts,
               truncated=truncated, parts=parts, checksum_algorithm=info.meta.get("checksum_algorithm"))


def complete_upload(call: S3Call) -> Response:
    bucket, key = call.bucket, call.key
    upload_id = request.args.get("uploadId", "")
    b = service.backend()
    b.bucket_info(bucket)
    if b.completed_upload(bucket, key, upload_id) is None:
        b.upload_info(bucket, key, upload_id)  # NoSuchUpload before reading the body
    root = s3request.parse_xml(s3request.read_small_body(call))
    if s3request.local(root.tag) != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    requested = []
    for part in s3request.children(root, "Part"):
        number = s3request.child_text(part, "PartNumber") or ""
        if not number.isdigit():
            raise S3Error("MalformedXML", "Every Part needs a numeric PartNumber.")
        sums = {}
        for algorithm in chunked.CHECKSUM_ALGORITHMS:
            value = s3request.child_text(part, f"Checksum{algorithm.upper()}")
            if value:
                sums[algorithm] = value
        requested.append((int(number), s3request.child_text(part, "ETag") or "", sums))
    if len(requested) > bk.MAX_PARTS:
        raise S3Error("MalformedXML", "A multipart upload has at most 10000 parts.")
    info = b.complete_upload(bucket, key, upload_id, requested)
    service.after_write(bucket, key)
    location = f"{request.host_url.rstrip('/')}{s3request.PREFIX}/{quote(bucket)}/{quote(key, safe='/')}"
    return xml("complete_multipart.xml", location=location, bucket=bucket, key=key, info=info)


def abort_upload(call: S3Call) -> Response:
    service.backend().abort_upload(call.bucket, call.key, request.args.get("uploadId", ""))
    return Response(status=204)
