"""URL dispatch of the built-in S3-compatible endpoint (``/api/cloud/storage``).

URL space::

    /api/cloud/storage                          S3 service (ListBuckets)
    /api/cloud/storage/<bucket>[/]              S3 bucket operations      -> s3_buckets
    /api/cloud/storage/<bucket>/<key...>        S3 object operations      -> s3_objects
    /api/cloud/storage/credentials[/<id>]       JSON API (admin)          -> credentials_api

Like moto's S3, the layers are kept apart: this module maps (method, target, sub-resource) to
one handler; ``s3request`` parses paths, headers and bodies; ``s3auth`` says who is asking;
``s3_buckets``/``s3_objects`` do the operation; ``s3response`` renders S3 XML (autoescaped
templates under ``templates/s3/``) and errors; ``backend`` stores.

The S3 blueprint is a machine route: no session auth, no CSRF — SigV4 decides (``s3auth``).
Object GETs carry ``Content-Security-Policy: sandbox`` and ``nosniff`` so an uploaded HTML file
cannot run script on the dashboard's origin.

Bodies are read from ``request.stream`` in 1 MiB pieces into a temp file (never
``request.data``). Chunked transfer bodies need ``wsgi.input_terminated`` from the server
(werkzeug's dev server and gunicorn set it); without it the body would read as empty, so such
a request is refused instead of storing an empty object.
"""
from __future__ import annotations

import base64
import logging
import secrets

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.routing import BaseConverter

from stcloud.storage import (
    credentials_api,
    s3_buckets,
    s3_objects,
    s3auth,
    s3request,
    s3response,
)
from stcloud.storage.errors import S3Error
from stcloud.storage.s3request import PREFIX, S3Call
from stcloud.web import auth

log = logging.getLogger(__name__)

ALL_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]

# Sub-resources we do not implement: answered NotImplemented rather than mistaken for a
# listing or a plain object operation.
UNSUPPORTED_SUBRESOURCES = {
    "accelerate", "analytics", "cors", "encryption", "intelligent-tiering", "inventory", "lifecycle",
    "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
    "publicAccessBlock", "replication", "requestPayment", "tagging", "website", "legal-hold", "retention",
    "torrent", "restore", "select", "attributes", "renameObject",
}

# GET on a bucket with a sub-resource: the first one present wins.
BUCKET_GET = (("location", s3_buckets.get_location), ("acl", s3_buckets.get_acl),
              ("versioning", s3_buckets.get_versioning), ("versions", s3_buckets.list_versions),
              ("uploads", s3_buckets.list_uploads))

s3 = Blueprint("s3", __name__, url_prefix=PREFIX)
auth.machine(s3)


class AnyPath(BaseConverter):
    """Everything after the prefix, empty and repeated slashes included (S3 keys may hold
    ``//`` and end in ``/``); the view re-reads the raw path itself."""

    part_isolating = False
    regex = ".*"
    weight = 400  # after static routes such as /credentials


@s3.before_request
def _request_ids():
    g.s3_request_id = secrets.token_hex(8).upper()
    g.s3_host_id = base64.b64encode(secrets.token_bytes(24)).decode()


@s3.after_request
def _common_headers(resp: Response):
    return s3response.common_headers(resp)


def s3_entry(rest: str = ""):
    try:
        return _dispatch()
    except S3Error as err:
        if err.status >= 500:
            log.error("s3 %s %s: %s", request.method, request.path, err)
        s3request.drain_body()
        return s3response.error(err)
    except ClientDisconnected:
        return s3response.error(S3Error("IncompleteBody"))
    except Exception:  # noqa: BLE001 - an S3 client expects S3 XML, even for our bugs
        log.exception("s3: unhandled error on %s %s", request.method, request.path)
        s3request.drain_body()
        return s3response.error(S3Error("InternalError"))


def _dispatch() -> Response:
    bucket, key = s3request.bucket_and_key()
    principal, signing, parsed = s3auth.authenticate(s3request.http_request())
    call = S3Call(request.method, bucket, key, s3request.subresources(), principal, signing, parsed)
    unsupported = call.sub & UNSUPPORTED_SUBRESOURCES
    if unsupported:
        raise S3Error("NotImplemented", f"The {sorted(unsupported)[0]} sub-resource is not implemented by this "
                                        "endpoint.")
    if not bucket:
        if call.method in ("GET", "HEAD"):
            return s3_buckets.list_buckets(call)
        raise S3Error("MethodNotAllowed", Method=call.method, ResourceType="SERVICE")
    if key is None:
        return _bucket_handler(call)(call)
    return _object_handler(call)(call)


def _bucket_handler(call: S3Call):
    method, sub = call.method, call.sub
    if method in ("GET", "HEAD") and not sub - s3request.LIST_ARGS:
        return s3_buckets.head_bucket if method == "HEAD" else s3_buckets.list_objects
    if method == "GET":
        return next((handler for name, handler in BUCKET_GET if name in sub), s3_buckets.unsupported_get)
    if method == "PUT":
        if "acl" in sub:
            return s3_buckets.put_acl
        if sub:
            raise S3Error("NotImplemented", f"PUT ?{sorted(sub)[0]} is not implemented by this endpoint.")
        return s3_buckets.create_bucket
    if method == "DELETE":
        if sub:
            raise S3Error("NotImplemented", f"DELETE ?{sorted(sub)[0]} is not implemented by this endpoint.")
        return s3_buckets.delete_bucket
    if method == "POST" and "delete" in sub:
        return s3_buckets.delete_objects
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="BUCKET")


def _object_handler(call: S3Call):
    method, sub, p = call.method, call.sub, call.principal
    allowed = p.can_read(call.bucket, call.key) if method in ("GET", "HEAD") else p.can_write(call.bucket, call.key)
    if method in ("GET", "HEAD", "PUT", "POST", "DELETE") and not allowed:
        raise s3auth.deny()
    if method in ("GET", "HEAD"):
        if "acl" in sub:
            return s3_objects.get_acl
        if "uploadId" in sub:
            return s3_objects.list_parts
        return s3_objects.head_object if method == "HEAD" else s3_objects.get_object
    if method == "PUT":
        if "acl" in sub:
            return s3_objects.put_acl
        if "partNumber" in sub or "uploadId" in sub:
            return s3_objects.upload_part
        if request.headers.get("x-amz-copy-source"):
            return s3_objects.copy_object
        return s3_objects.put_object
    if method == "POST":
        if "uploads" in sub:
            return s3_objects.create_upload
        if "uploadId" in sub:
            return s3_objects.complete_upload
    if method == "DELETE":
        return s3_objects.abort_upload if "uploadId" in sub else s3_objects.delete_object
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="OBJECT")


# merge_slashes=False: "a//b" is a different key from "a/b"; werkzeug would redirect it.
s3.add_url_rule("", "service", s3_entry, methods=ALL_METHODS, merge_slashes=False, strict_slashes=False)
s3.add_url_rule("/<s3any:rest>", "path", s3_entry, methods=ALL_METHODS, merge_slashes=False)


def init_app(app):
    # The converter must exist before the blueprint's rules are bound to the app's map.
    app.url_map.converters["s3any"] = AnyPath
    app.jinja_env.filters["s3time"] = s3response.s3time
    app.register_blueprint(credentials_api.api)
    app.register_blueprint(s3)
