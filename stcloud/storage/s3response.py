"""Response building for the S3 endpoint: S3 XML from the autoescaped templates under
``templates/s3/``, S3 error documents, request ids, and object bodies streamed from disk."""
from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import Response, g, render_template

from stcloud.storage import backend as bk
from stcloud.storage import s3request
from stcloud.storage.errors import S3Error

OWNER = {"id": "stcloud", "name": "stcloud"}


def s3time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def xml(template: str, status: int = 200, **ctx) -> Response:
    body = render_template(f"s3/{template}", owner=OWNER, **ctx)
    return Response(body, status=status, mimetype="application/xml")


def error(err: S3Error) -> Response:
    fields = dict(err.fields)
    bucket, key = None, None
    try:
        bucket, key = s3request.bucket_and_key()
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


def common_headers(resp: Response) -> Response:
    resp.headers["x-amz-request-id"] = g.get("s3_request_id", "")
    resp.headers["x-amz-id-2"] = g.get("s3_host_id", "")
    resp.headers.setdefault("Server", "stcloud")
    return resp


def checksum_headers(info: bk.ObjectInfo) -> dict:
    """Full-object checksums (composite multipart ones, ``…-N``, are not echoed on PUT/copy)."""
    return {f"x-amz-checksum-{a}": v for a, v in info.checksums.items() if "-" not in v}


def object_body(fh, start: int, length: int, status: int, headers: dict) -> Response:
    """Stream ``length`` bytes from ``start`` of an open file; the file is closed at the end."""
    return Response(_file_iter(fh, start, length), status=status, headers=headers, direct_passthrough=True)


def _file_iter(fh, start: int, length: int):
    try:
        fh.seek(start)
        left = length
        while left > 0:
            data = fh.read(min(s3request.STREAM_CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        fh.close()
