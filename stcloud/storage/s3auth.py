"""Who an S3 request acts as: AWS SigV4 (header or presigned query) or a SigV2 presigned
query, checked against the access keys in ``credentials``. The key's scope (bucket, prefix,
read-only) is then checked by each handler through the returned ``Principal``.

Nothing of the endpoint — object, listing or bucket — answers without a valid signature or
presigned URL: not a session cookie, not the admin bearer token, not an instance without
``STCLOUD_ADMIN_TOKEN``. The dashboard downloads through its own route (``pages.download``),
which the dashboard's auth guards.
"""
from __future__ import annotations

from stcloud.storage import credentials, s3request, sigv4
from stcloud.storage.errors import S3Error


def authenticate(hreq: sigv4.HttpRequest):
    """(principal, signing context or None, parsed auth or None). Raises S3Error."""
    parsed = sigv4.parse(hreq)
    v2 = sigv4.parse_v2_query(hreq) if parsed is None else None
    if v2 is not None:
        return _authenticate_v2(hreq, v2), None, None
    if parsed is None:
        raise S3Error("AccessDenied", "Anonymous access is not allowed: sign requests with AWS Signature V4 "
                                      "using an access key from stcloud.")
    akid = parsed.credential.access_key_id
    found = _lookup(akid)
    ctx = sigv4.verify(hreq, parsed, found.secret)
    if found.state == "expired":
        raise S3Error("ExpiredToken", "The provided token has expired.", AWSAccessKeyId=akid)
    return found.principal, ctx, parsed


def _lookup(akid: str) -> credentials.LookupResult:
    found = credentials.lookup(akid)
    if found is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=akid)
    if found.state == "revoked":
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided has been revoked.",
                      AWSAccessKeyId=akid)
    return found


def _authenticate_v2(hreq: sigv4.HttpRequest, v2: sigv4.ParsedV2) -> credentials.Principal:
    found = _lookup(v2.access_key_id)
    sigv4.verify_v2(hreq, v2, found.secret, s3request.v2_resource_paths(hreq))
    if found.state == "expired":
        raise S3Error("ExpiredToken", "The provided token has expired.", AWSAccessKeyId=v2.access_key_id)
    return found.principal


def deny(message: str = "Access Denied") -> S3Error:
    return S3Error("AccessDenied", message)
