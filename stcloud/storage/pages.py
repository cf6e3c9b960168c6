"""The Storage page: buckets, objects (prefixes as folders), downloads, deletes, access keys.

Downloads (here and on job pages) go through ``/storage/download/<bucket>/<key>``, a normal
dashboard route guarded by the dashboard's auth (login session or API key): the S3 endpoint
itself answers only signed requests. Everything that changes something posts to this
blueprint (a normal, CSRF-protected route) — never to the S3 endpoint with a cookie.
"""
from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, redirect, request, url_for
from werkzeug.http import http_date

from stcloud.accounts import guard
from stcloud.errors import Forbidden, NotFound, StcloudError
from stcloud.storage import credentials, s3request, s3response, service
from stcloud.storage.errors import S3Error
from stcloud.storage.routes import AnyPath
from stcloud.web.htmx import is_fragment_request, render

bp = Blueprint("storage_pages", __name__)
PAGE_SIZE = 200
TTL_CHOICES = [(3600, "1 hour"), (86400, "1 day"), (7 * 86400, "7 days"), (30 * 86400, "30 days"),
               (365 * 86400, "1 year")]


def _browse(bucket: str | None, prefix: str, marker: str) -> dict:
    b = service.backend()
    view = {"buckets": b.list_buckets(), "bucket": None, "prefix": prefix, "marker": marker, "listing": None,
            "crumbs": [], "browse_error": None}
    if bucket:
        try:
            b.bucket_info(bucket)
            view["bucket"] = bucket
            view["listing"] = b.list_objects(bucket, prefix=prefix, delimiter="/", after=marker, max_keys=PAGE_SIZE)
        except S3Error as err:
            view["browse_error"] = err.message
        parts = [p for p in prefix.split("/") if p] if prefix else []
        acc = ""
        for p in parts:
            acc += p + "/"
            view["crumbs"].append((p, acc))
    return view


def _context(browse: bool = True, **extra) -> dict:
    bucket = request.values.get("bucket") or None
    prefix = request.values.get("prefix", "")
    marker = request.values.get("marker", "") if request.method == "GET" else ""
    if browse:
        ctx = _browse(bucket, prefix, marker)
        keys = credentials.list_credentials()
    else:
        ctx = {"buckets": [], "bucket": None, "prefix": "", "marker": "", "listing": None, "crumbs": [],
               "browse_error": None}
        keys = []
    ctx.update(keys=keys, endpoint_url=credentials.endpoint_url(), job_key_grace=credentials.grace_seconds(),
               region=credentials.REGION, ttl_choices=TTL_CHOICES, object_url=service.object_url,
               nav="storage", new_key=None, keys_error=None, buckets_error=None,
               browse_message=None if browse else "Your jobs' files are listed on each job's page.")
    ctx.update(extra)
    return ctx


def _may_read(job_id: str | None) -> None:
    """Admins and viewers read every stored object; members only their own jobs' files (others'
    do not exist for them) and not the bucket browser."""
    access = guard.stored_access(job_id)
    if access == "hidden":
        raise NotFound("no such object")
    if access != "yes":
        raise Forbidden("your role cannot browse stored objects; open your job's page for its files")


@bp.get("/storage")
def storage_page():
    if guard.stored_access(None) != "yes":  # members: only their own jobs' files, on the job pages
        return render("storage/index.html", block="browser", **_context(browse=False))
    return render("storage/index.html", block="browser", **_context())


def download(rest: str = ""):
    """An object as an attachment, for the signed-in dashboard user (GET and HEAD)."""
    try:
        bucket, key = s3request.bucket_and_key(service.DOWNLOAD_PATH)
        _may_read(service.job_of_key(bucket, key) if key else None)
        info, fh = service.open_download(bucket, key or "")
    except S3Error as err:
        raise NotFound(err.message) from None
    name = key.rsplit("/", 1)[-1]
    headers = {"Content-Type": info.content_type, "Content-Length": str(info.size), "ETag": info.etag,
               "Last-Modified": http_date(info.last_modified),
               "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
               "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "sandbox; default-src 'none'"}
    if request.method == "HEAD":
        fh.close()
        return Response(status=200, headers=headers)
    return s3response.object_body(fh, 0, info.size, 200, headers)


# merge_slashes=False: "a//b" is a different key from "a/b".
bp.add_url_rule(f"{service.DOWNLOAD_PATH}/<s3any:rest>", "download", download, methods=["GET", "HEAD"],
                merge_slashes=False)


def _back(**params):
    params = {k: v for k, v in params.items() if v}
    return redirect(url_for("storage_pages.storage_page", **params))


@bp.post("/storage/objects/delete")
def delete_object():
    bucket = request.form.get("bucket", "")
    key = request.form.get("key", "")
    message = None
    try:
        if not key:
            raise S3Error("InvalidArgument", "Choose an object to delete.")
        service.backend().delete(bucket, key)
        service.after_write(bucket, key)
        message = f"Deleted {key}."
    except S3Error as err:
        message = f"Could not delete {key}: {err.message}"
    if is_fragment_request():
        return render("storage/index.html", block="browser", **_context(browse_message=message))
    return _back(bucket=bucket, prefix=request.form.get("prefix", ""))


@bp.post("/storage/buckets")
def create_bucket():
    name = (request.form.get("name") or "").strip()
    error = None
    try:
        service.backend().create_bucket(name)
    except S3Error as err:
        error = f"Could not create bucket {name!r}: {err.message}"
    if is_fragment_request() or error:
        return render("storage/index.html", block="buckets", **_context(buckets_error=error))
    return _back(bucket=name)


@bp.post("/storage/buckets/delete")
def delete_bucket():
    name = request.form.get("name", "")
    error = None
    try:
        service.backend().delete_bucket(name)
    except S3Error as err:
        error = f"Could not delete bucket {name!r}: {err.message}"
    if is_fragment_request() or error:
        return render("storage/index.html", block="buckets", **_context(buckets_error=error))
    return _back()


@bp.post("/storage/credentials")
def mint_key():
    f = request.form
    error, new_key = None, None
    try:
        ttl_raw = (f.get("ttl_seconds") or "").strip()
        if ttl_raw and not ttl_raw.isdigit():
            raise S3Error("InvalidArgument", "The lifetime must be a number of seconds.")
        new_key = credentials.mint(bucket=(f.get("key_bucket") or "").strip(), prefix=f.get("key_prefix", ""),
                                   ttl_seconds=int(ttl_raw) if ttl_raw else None,
                                   read_only=f.get("read_only") in ("on", "true", "1"),
                                   description=(f.get("description") or "").strip() or None)
    except StcloudError as err:
        error = err.detail
    except S3Error as err:
        error = err.message
    # No redirect: the secret is shown once, in this response.
    return render("storage/index.html", block="keys", **_context(new_key=new_key, keys_error=error))


@bp.post("/storage/credentials/<access_key_id>/revoke")
def revoke_key(access_key_id):
    error = None
    try:
        credentials.revoke(access_key_id)
    except StcloudError as err:
        error = err.detail
    if is_fragment_request() or error:
        return render("storage/index.html", block="keys", **_context(keys_error=error))
    return _back()


def init_app(app):
    app.url_map.converters.setdefault("s3any", AnyPath)
    app.register_blueprint(bp)
