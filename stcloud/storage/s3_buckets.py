"""S3 service and bucket operations: one function per operation, each taking the parsed
``S3Call``, checking the key's scope, calling the backend and rendering the answer."""
from __future__ import annotations

import base64

from flask import Response, request

from stcloud.storage import backend as bk
from stcloud.storage import credentials, s3request, service
from stcloud.storage.errors import S3Error
from stcloud.storage.s3auth import deny
from stcloud.storage.s3request import S3Call
from stcloud.storage.s3response import xml


def list_buckets(call: S3Call) -> Response:
    """ListBuckets, with the optional ``max-buckets``/``continuation-token``/``prefix`` paging."""
    prefix = request.args.get("prefix", "")
    token = request.args.get("continuation-token")
    after = s3request.continuation_token(token) if token else ""
    limit = s3request.max_arg("max-buckets") if request.args.get("max-buckets") else None
    if limit == 0:
        raise S3Error("InvalidArgument", "max-buckets must be between 1 and 10000", ArgumentName="max-buckets")
    buckets = [bi for bi in service.backend().list_buckets()
               if call.principal.bucket_ok(bi.name) and bi.name.startswith(prefix) and bi.name > after]
    next_token = None
    if limit is not None and len(buckets) > limit:
        buckets = buckets[:limit]
        next_token = base64.urlsafe_b64encode(buckets[-1].name.encode()).decode().rstrip("=")
    return xml("list_buckets.xml", buckets=buckets, prefix=prefix if "prefix" in request.args else None,
               next_token=next_token)


def _existing(call: S3Call) -> None:
    if not call.principal.bucket_ok(call.bucket):
        raise deny()
    service.backend().bucket_info(call.bucket)


def head_bucket(call: S3Call) -> Response:
    _existing(call)
    return Response(status=200, headers={"x-amz-bucket-region": credentials.REGION})


def get_location(call: S3Call) -> Response:
    _existing(call)
    return xml("location.xml")


def get_acl(call: S3Call) -> Response:
    _existing(call)
    return xml("acl.xml")


def get_versioning(call: S3Call) -> Response:
    _existing(call)
    return xml("versioning.xml")


def unsupported_get(call: S3Call) -> Response:
    if not call.principal.bucket_ok(call.bucket):
        raise deny()
    raise S3Error("NotImplemented", f"GET ?{sorted(call.sub)[0]} is not implemented by this endpoint.")


def put_acl(call: S3Call) -> Response:
    p = call.principal
    if not p.bucket_ok(call.bucket) or p.read_only:
        raise deny()
    service.backend().bucket_info(call.bucket)
    accept_private_acl(call)
    return Response(status=200)


def accept_private_acl(call: S3Call) -> None:
    """Buckets and objects are private: a private ACL is accepted (and changes nothing)."""
    canned = (request.headers.get("x-amz-acl") or "").strip().lower()
    grants = [h for h in request.headers.keys() if h.lower().startswith("x-amz-grant-")]
    body = s3request.read_small_body(call)
    public = canned not in ("", "private", "bucket-owner-full-control") or grants or b"AllUsers" in body \
        or b"AuthenticatedUsers" in body
    if public:
        raise S3Error("NotImplemented", "Buckets and objects here are private; only the private ACL is supported.")


def create_bucket(call: S3Call) -> Response:
    """CreateBucket. Any region is accepted; re-creating a bucket you own succeeds without a
    LocationConstraint (S3's us-east-1 rule) and is BucketAlreadyOwnedByYou with one."""
    if not call.principal.can_admin_buckets():
        raise deny("This access key may not create buckets.")
    bk.check_new_bucket_name(call.bucket)
    body = s3request.read_small_body(call)
    location = ""
    if body.strip():
        location = s3request.child_text(s3request.parse_xml(body), "LocationConstraint") or ""
    b = service.backend()
    b.create_bucket(call.bucket, exist_ok=location in ("", credentials.REGION))
    return Response(status=200, headers={"Location": f"/{call.bucket}"})


def delete_bucket(call: S3Call) -> Response:
    if not call.principal.can_admin_buckets():
        raise deny("This access key may not delete buckets.")
    service.backend().delete_bucket(call.bucket)
    return Response(status=204)


# ---- listings -------------------------------------------------------------------------------

def list_objects(call: S3Call) -> Response:
    prefix = request.args.get("prefix", "")
    delimiter = request.args.get("delimiter", "")
    if not call.principal.can_list(call.bucket, prefix):
        raise deny()
    max_keys = s3request.max_arg("max-keys")
    encoding_type, enc = s3request.encoder()
    b = service.backend()
    bucket = call.bucket
    if request.args.get("list-type") == "2":
        token = request.args.get("continuation-token")
        start_after = request.args.get("start-after", "")
        after = s3request.continuation_token(token) if token is not None else start_after
        result = b.list_objects(bucket, prefix=prefix, delimiter=delimiter, after=after, max_keys=max_keys)
        next_token = (base64.urlsafe_b64encode(result.next_marker.encode()).decode().rstrip("=")
                      if result.truncated and result.next_marker else None)
        return xml("list_objects_v2.xml", bucket=bucket, prefix=prefix, delimiter=delimiter, result=result,
                   max_keys=max_keys, encoding_type=encoding_type, enc=enc, start_after=start_after,
                   continuation_token=token, next_token=next_token,
                   fetch_owner=request.args.get("fetch-owner") == "true")
    if request.args.get("list-type") not in (None, "1"):
        raise S3Error("InvalidArgument", "list-type must be 1 or 2", ArgumentName="list-type")
    marker = request.args.get("marker", "")
    result = b.list_objects(bucket, prefix=prefix, delimiter=delimiter, after=marker, max_keys=max_keys)
    return xml("list_objects.xml", bucket=bucket, prefix=prefix, delimiter=delimiter, marker=marker, result=result,
               max_keys=max_keys, encoding_type=encoding_type, enc=enc)


def list_versions(call: S3Call) -> Response:
    prefix = request.args.get("prefix", "")
    if not call.principal.bucket_ok(call.bucket) or not call.principal.can_list(call.bucket, prefix):
        raise deny()
    max_keys = s3request.max_arg("max-keys")
    encoding_type, enc = s3request.encoder()
    key_marker = request.args.get("key-marker", "")
    delimiter = request.args.get("delimiter", "")
    result = service.backend().list_objects(call.bucket, prefix=prefix, delimiter=delimiter, after=key_marker,
                                            max_keys=max_keys)
    return xml("list_versions.xml", bucket=call.bucket, prefix=prefix, delimiter=delimiter, key_marker=key_marker,
               version_id_marker=request.args.get("version-id-marker", ""), result=result, max_keys=max_keys,
               encoding_type=encoding_type, enc=enc)


def list_uploads(call: S3Call) -> Response:
    prefix = request.args.get("prefix", "")
    if not call.principal.bucket_ok(call.bucket) or not call.principal.can_list(call.bucket, prefix):
        raise deny()
    encoding_type, enc = s3request.encoder()
    b = service.backend()
    b.bucket_info(call.bucket)
    uploads = b.list_uploads(call.bucket, prefix)[:1000]
    return xml("list_uploads.xml", bucket=call.bucket, prefix=prefix, uploads=uploads, max_uploads=1000,
               encoding_type=encoding_type, enc=enc)


# ---- DeleteObjects --------------------------------------------------------------------------

def delete_objects(call: S3Call) -> Response:
    p = call.principal
    b = service.backend()
    if not p.bucket_ok(call.bucket) or p.read_only:
        raise deny()
    b.bucket_info(call.bucket)
    root = s3request.parse_xml(s3request.read_small_body(call))
    if s3request.local(root.tag) != "Delete":
        raise S3Error("MalformedXML")
    quiet = (s3request.child_text(root, "Quiet") or "").lower() == "true"
    objects = s3request.children(root, "Object")
    if not objects or len(objects) > 1000:
        raise S3Error("MalformedXML", "The request must contain between 1 and 1000 objects to delete.")
    deleted, errors = [], []
    for obj in objects:
        key = s3request.child_text(obj, "Key")
        if not key:
            raise S3Error("MalformedXML", "Every Object needs a Key.")
        # Unversioned buckets: "null" is every object's version; another id names nothing.
        version = s3request.child_text(obj, "VersionId") or None
        entry = {"key": key, "version_id": version}
        if version not in (None, "null"):
            errors.append({**entry, "code": "NoSuchVersion", "message": "The specified version does not exist."})
            continue
        if not p.can_write(call.bucket, key):
            errors.append({**entry, "code": "AccessDenied", "message": "Access Denied"})
            continue
        try:
            b.delete(call.bucket, key)
            service.after_write(call.bucket, key)
        except S3Error as err:
            errors.append({**entry, "code": err.code, "message": err.message})
            continue
        if not quiet:
            deleted.append(entry)
    return xml("delete_result.xml", deleted=deleted, errors=errors)
