"""AWS Signature Version 4 for S3, server side: parse, recompute, compare. No Flask, no db.

The signature is checked by recomputing it from what arrived (canonical request → string to
sign → HMAC chain) and comparing with ``hmac.compare_digest``. Traps worth knowing:

- S3 does not normalise the path: the canonical URI is the *decoded* path re-encoded with
  the standard rule (every byte except ``A-Za-z0-9-._~`` and ``/`` as ``%XX``). Working from
  the decoded path means a client that escaped ``!`` or ``'`` differently on the wire still
  verifies, as it does against S3.
- The query is split on ``&``/``=`` and percent-decoded *without* turning ``+`` into a space.
- Header values are trimmed and inner runs of whitespace collapsed; repeated headers are
  joined with ``,`` (which is also what WSGI servers do).
- Presigned URLs sign ``UNSIGNED-PAYLOAD`` unless the request carries a payload hash.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from stcloud.storage.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_MODES = {STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}

_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_QUERY_AUTH_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                      "X-Amz-SignedHeaders", "X-Amz-Signature")


@dataclass(frozen=True)
class HttpRequest:
    """What the signer needs from an HTTP request, independent of the web framework."""

    method: str
    path: bytes  # decoded path bytes (SCRIPT_NAME + PATH_INFO), as the client meant it
    query: tuple[tuple[bytes, bytes], ...]  # decoded (name, value) pairs, in arrival order
    headers: Mapping[str, str]  # lower-case name -> value (repeats joined with ",")

    def query_value(self, name: str) -> str | None:
        key = name.encode()
        for k, v in self.query:
            if k == key:
                return v.decode("utf-8", "replace")
        return None


@dataclass(frozen=True)
class Credential:
    access_key_id: str
    date: str  # YYYYMMDD from the credential scope
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class ParsedAuth:
    kind: str  # "header" | "query"
    credential: Credential
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # the timestamp string that was signed (ISO basic)
    when: datetime
    expires: int | None  # presigned only
    payload_hash: str  # hex sha256, UNSIGNED-PAYLOAD or a STREAMING-* mode


@dataclass(frozen=True)
class SigningContext:
    """Everything needed to check chunk and trailer signatures after the seed signature."""

    key: bytes
    amz_date: str
    scope: str
    seed_signature: str
    payload_hash: str
    access_key_id: str = ""
    extra: dict = field(default_factory=dict)


def parse_query(raw: str | bytes) -> tuple[tuple[bytes, bytes], ...]:
    """Split a raw query string; percent-decoding without ``+`` → space."""
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    out = []
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        out.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    return tuple(out)


def uri_encode(data: bytes, *, keep_slash: bool) -> str:
    return quote(data, safe="/" if keep_slash else "")


def _malformed(kind: str, message: str) -> S3Error:
    code = "AuthorizationHeaderMalformed" if kind == "header" else "AuthorizationQueryParametersError"
    return S3Error(code, message)


def _parse_credential(kind: str, value: str) -> Credential:
    parts = value.split("/")
    if len(parts) < 5:
        raise _malformed(kind, "The credential is malformed; expecting "
                               f"\"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\", got {value!r}.")
    akid = "/".join(parts[:-4])
    date, region, service, term = parts[-4:]
    if not akid:
        raise _malformed(kind, "The credential is missing the access key id.")
    if not re.fullmatch(r"\d{8}", date):
        raise _malformed(kind, f"Invalid credential date {date!r}: expected YYYYMMDD.")
    if service != "s3":
        raise _malformed(kind, f"The authorization is for service {service!r}; this endpoint belongs to 's3'.")
    if term != "aws4_request":
        raise _malformed(kind, f"The credential terminator must be 'aws4_request', got {term!r}.")
    if not region or not re.fullmatch(r"[A-Za-z0-9-]{1,64}", region):
        raise _malformed(kind, f"Invalid region {region!r} in the credential scope.")
    return Credential(akid, date, region, service)


def _parse_amz_date(kind: str, value: str) -> datetime:
    try:
        return datetime.strptime(value, _AMZ_DATE).replace(tzinfo=UTC)
    except (ValueError, TypeError):
        if kind == "header":
            raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header") from None
        raise S3Error("AuthorizationQueryParametersError",
                      "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"") from None


def is_signed(req: HttpRequest) -> bool:
    """Does the request try any AWS authentication (header or query)?"""
    auth = req.headers.get("authorization", "")
    return auth.startswith(("AWS4-", "AWS ")) or req.query_value("X-Amz-Algorithm") is not None \
        or req.query_value("AWSAccessKeyId") is not None


def parse(req: HttpRequest) -> ParsedAuth | None:
    """The request's SigV4 authentication, or None when it carries none. Raises S3Error for
    a malformed or unsupported one."""
    auth = req.headers.get("authorization", "")
    if auth:
        if auth.startswith("AWS "):
            raise S3Error("InvalidRequest", "The authorization mechanism you have provided is not supported. "
                                            "Please use AWS4-HMAC-SHA256.")
        if not auth.startswith("AWS4-"):
            return None  # a Bearer token or a browser's credentials: not ours to judge
        return _parse_header(req, auth)
    if req.query_value("X-Amz-Algorithm") is not None:
        return _parse_query_auth(req)
    return None


def _parse_header(req: HttpRequest, auth: str) -> ParsedAuth:
    algorithm, _, rest = auth.partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error("InvalidRequest", f"The authorization mechanism {algorithm} is not supported. "
                                        "Please use AWS4-HMAC-SHA256.")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields[name.strip()] = value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise S3Error("AuthorizationHeaderMalformed",
                      f"The authorization header is malformed; missing {', '.join(missing)}.")
    credential = _parse_credential("header", fields["Credential"])
    amz_date = req.headers.get("x-amz-date")
    if amz_date:
        when = _parse_amz_date("header", amz_date)
    else:
        raw = req.headers.get("date")
        try:
            when = parsedate_to_datetime(raw) if raw else None
        except (TypeError, ValueError):
            when = None
        if when is None:
            raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        when = when.astimezone(UTC)
        amz_date = when.strftime(_AMZ_DATE)
    if amz_date[:8] != credential.date:
        raise S3Error("AuthorizationHeaderMalformed",
                      "Invalid credential date. Date is not the same as X-Amz-Date.")
    payload = req.headers.get("x-amz-content-sha256")
    if not payload:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    signed = tuple(h for h in fields["SignedHeaders"].lower().split(";") if h)
    return ParsedAuth("header", credential, signed, fields["Signature"], amz_date, when, None,
                      _check_payload_value(payload))


def _parse_query_auth(req: HttpRequest) -> ParsedAuth:
    values = {n: req.query_value(n) for n in _QUERY_AUTH_PARAMS}
    if any(not v for v in values.values()):
        raise S3Error("AuthorizationQueryParametersError",
                      "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
                      "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
    if values["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
    credential = _parse_credential("query", values["X-Amz-Credential"])
    when = _parse_amz_date("query", values["X-Amz-Date"])
    if values["X-Amz-Date"][:8] != credential.date:
        raise S3Error("AuthorizationQueryParametersError",
                      "Invalid credential date. Date is not the same as X-Amz-Date.")
    raw_expires = values["X-Amz-Expires"]
    if not raw_expires.isdigit():
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Expires should be a number")
    expires = int(raw_expires)
    if expires > MAX_PRESIGN_EXPIRES:
        raise S3Error("AuthorizationQueryParametersError",
                      "X-Amz-Expires must be less than a week (in seconds) that is 604800")
    payload = req.headers.get("x-amz-content-sha256") or req.query_value("X-Amz-Content-Sha256") or UNSIGNED_PAYLOAD
    signed = tuple(h for h in values["X-Amz-SignedHeaders"].lower().split(";") if h)
    return ParsedAuth("query", credential, signed, values["X-Amz-Signature"], values["X-Amz-Date"], when,
                      expires, _check_payload_value(payload))


def _check_payload_value(value: str) -> str:
    if value in (UNSIGNED_PAYLOAD, *STREAMING_MODES):
        return value
    if value.startswith("STREAMING-"):
        raise S3Error("NotImplemented", f"x-amz-content-sha256 {value} is not supported by this endpoint")
    low = value.lower()
    if not _HEX64.fullmatch(low):
        raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value "
                                         "or a SHA-256 hex digest", ArgumentName="x-amz-content-sha256",
                      ArgumentValue=value[:100])
    return low


def _canonical_header_value(value: str) -> str:
    return " ".join(value.split())


def canonical_request(req: HttpRequest, parsed: ParsedAuth) -> str:
    path = uri_encode(req.path or b"/", keep_slash=True)
    pairs = []
    for name, value in req.query:
        if parsed.kind == "query" and name == b"X-Amz-Signature":
            continue
        pairs.append((uri_encode(name, keep_slash=False), uri_encode(value, keep_slash=False)))
    pairs.sort()
    query = "&".join(f"{k}={v}" for k, v in pairs)
    headers = "".join(f"{h}:{_canonical_header_value(req.headers.get(h, ''))}\n" for h in parsed.signed_headers)
    return "\n".join([req.method.upper(), path, query, headers, ";".join(parsed.signed_headers),
                      parsed.payload_hash])


def string_to_sign(parsed: ParsedAuth, canonical: str) -> str:
    return "\n".join([ALGORITHM, parsed.amz_date, parsed.credential.scope,
                      hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()])


@lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = hmac.new(("AWS4" + secret).encode("utf-8"), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def signatures_equal(expected: str, provided: str) -> bool:
    provided = (provided or "").strip().lower()
    if not _HEX64.fullmatch(provided):
        # still spend a comparison so a malformed value takes about as long as a wrong one
        hmac.compare_digest(expected.encode(), expected.encode())
        return False
    return hmac.compare_digest(expected.encode(), provided.encode())


def verify(req: HttpRequest, parsed: ParsedAuth, secret: str, now: datetime | None = None) -> SigningContext:
    """Check ``parsed`` against ``secret``; returns the context for chunk signatures.

    Raises S3Error: AccessDenied (unsigned host / x-amz-* header, presign expired or not yet
    valid), SignatureDoesNotMatch, RequestTimeTooSkewed.
    """
    now = now or datetime.now(UTC)
    if "host" not in parsed.signed_headers:
        raise S3Error("AccessDenied", "The host header must be signed.")
    # An unsigned x-amz-* header (metadata, copy source, ACL ...) could have been added by
    # anyone on the way: S3 refuses those, so do we.
    unsigned = sorted(h for h in req.headers if h.startswith("x-amz-") and h not in parsed.signed_headers)
    if unsigned:
        raise S3Error("AccessDenied", "There were headers present in the request which were not signed",
                      HeadersNotSigned=", ".join(unsigned))
    canonical = canonical_request(req, parsed)
    sts = string_to_sign(parsed, canonical)
    cred = parsed.credential
    key = signing_key(secret, cred.date, cred.region, cred.service)
    expected = _hmac_hex(key, sts)
    if not signatures_equal(expected, parsed.signature):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=cred.access_key_id, StringToSign=sts,
                      SignatureProvided=parsed.signature[:200], CanonicalRequest=canonical)
    if parsed.kind == "query":
        if parsed.when - now > MAX_SKEW:
            raise S3Error("AccessDenied", "Request is not valid yet")
        if now > parsed.when + timedelta(seconds=parsed.expires or 0):
            raise S3Error("AccessDenied", "Request has expired", **{
                "X-Amz-Expires": str(parsed.expires),
                "Expires": iso8601(parsed.when + timedelta(seconds=parsed.expires or 0)),
                "ServerTime": iso8601(now)})
    elif abs(now - parsed.when) > MAX_SKEW:
        raise S3Error("RequestTimeTooSkewed", RequestTime=parsed.amz_date, ServerTime=iso8601(now),
                      MaxAllowedSkewMilliseconds="900000")
    return SigningContext(key=key, amz_date=parsed.amz_date, scope=cred.scope, seed_signature=expected,
                          payload_hash=parsed.payload_hash, access_key_id=cred.access_key_id)


def chunk_signature(ctx: SigningContext, previous: str, chunk_sha256_hex: str) -> str:
    sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", ctx.amz_date, ctx.scope, previous, EMPTY_SHA256,
                     chunk_sha256_hex])
    return _hmac_hex(ctx.key, sts)


def trailer_signature(ctx: SigningContext, previous: str, canonical_trailers: bytes) -> str:
    sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", ctx.amz_date, ctx.scope, previous,
                     hashlib.sha256(canonical_trailers).hexdigest()])
    return _hmac_hex(ctx.key, sts)


# ---- legacy presigned URLs (signature version 2) -------------------------------------------
# boto3 still signs presigned URLs with version 2 (``AWSAccessKeyId``/``Expires``/``Signature``)
# for us-east-1 unless ``signature_version="s3v4"`` is configured, so "stock boto3" presigned
# URLs need it. Only the query form is accepted; a version 2 *header* is refused.

V2_SUBRESOURCES = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
    "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId",
    "response-content-type", "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging", "restore",
    "storageClass", "notification", "replication", "analytics", "metrics", "inventory", "select",
    "select-type", "object-lock"})


@dataclass(frozen=True)
class ParsedV2:
    access_key_id: str
    expires: int
    signature: str


def parse_v2_query(req: HttpRequest) -> ParsedV2 | None:
    akid = req.query_value("AWSAccessKeyId")
    if akid is None:
        return None
    expires = req.query_value("Expires") or ""
    signature = req.query_value("Signature") or ""
    if not akid or not expires.isdigit() or not signature:
        raise S3Error("AccessDenied", "Query-string authentication requires the Signature, Expires and "
                                      "AWSAccessKeyId parameters")
    return ParsedV2(akid, int(expires), signature)


def v2_string_to_sign(req: HttpRequest, parsed: ParsedV2, resource_path: str) -> str:
    amz = {}
    for name, value in req.headers.items():
        if name.startswith("x-amz-"):
            amz[name] = value.strip()
    lines = [req.method.upper(), req.headers.get("content-md5", "").strip(),
             req.headers.get("content-type", "").strip(), str(parsed.expires)]
    lines += [f"{k}:{v}" for k, v in sorted(amz.items())]
    subs = sorted((k.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for k, v in req.query
                  if k.decode("utf-8", "replace") in V2_SUBRESOURCES)
    resource = resource_path
    if subs:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subs)
    return "\n".join(lines + [resource])


def verify_v2(req: HttpRequest, parsed: ParsedV2, secret: str, resource_paths: list[str],
              now: datetime | None = None) -> None:
    """Check a version 2 presigned URL against each candidate resource path (the path as sent,
    and without the endpoint's own path prefix). Raises SignatureDoesNotMatch, AccessDenied."""
    import base64

    now = now or datetime.now(UTC)
    provided = parsed.signature.encode()
    ok = False
    last_sts = ""
    for path in resource_paths:
        last_sts = v2_string_to_sign(req, parsed, path)
        digest = hmac.new(secret.encode("utf-8"), last_sts.encode("utf-8", "surrogateescape"), hashlib.sha1).digest()
        expected = base64.b64encode(digest)
        ok = hmac.compare_digest(expected, provided) or ok
    if not ok:
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=parsed.access_key_id, StringToSign=last_sts,
                      SignatureProvided=parsed.signature[:200])
    if now.timestamp() > parsed.expires:
        raise S3Error("AccessDenied", "Request has expired", Expires=iso8601(datetime.fromtimestamp(
            parsed.expires, UTC)), ServerTime=iso8601(now))


def iso8601(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
