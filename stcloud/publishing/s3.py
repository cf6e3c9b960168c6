"""Upload files to an external S3-compatible bucket with boto3 (deliveries; a large dataset
handed to a provider by presigned link, ``stcloud.jobs.dataset_bucket``). No Flask, no db."""
from __future__ import annotations

from pathlib import Path

from stcloud import net


class S3DeliveryError(Exception):
    pass


def client(endpoint_url: str | None, region: str, access_key: str, secret_key: str,
           proxies: net.Proxies | None = None):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or "us-east-1",
                        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                      connect_timeout=10, read_timeout=120,
                                      proxies=net.botocore_proxies(proxies or net.Proxies.from_env(), endpoint_url),
                                      retries={"max_attempts": 3, "mode": "standard"}))


def _failure(what: str, bucket: str, endpoint_url: str | None, exc: Exception) -> S3DeliveryError:
    return S3DeliveryError(f"{what} s3://{bucket} at {endpoint_url or 'AWS'} failed: "
                           f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}")


def upload_files(files: list[tuple[Path, str]], *, endpoint_url: str | None, bucket: str, region: str,
                 access_key: str, secret_key: str, proxies: net.Proxies | None = None) -> None:
    """Upload [(local path, key)]. Raises S3DeliveryError."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        c = client(endpoint_url, region, access_key, secret_key, proxies)
        for path, key in files:
            c.upload_file(str(path), bucket, key)
    except (ClientError, BotoCoreError, S3UploadFailedError, OSError) as exc:
        raise _failure("upload to", bucket, endpoint_url, exc) from exc


def object_url(endpoint_url: str | None, bucket: str, key: str) -> str:
    from urllib.parse import quote

    base = (endpoint_url or "https://s3.amazonaws.com").rstrip("/")
    return f"{base}/{quote(bucket)}/{quote(key, safe='/')}"


def put_once(c, bucket: str, key: str, path: Path, size: int, *, endpoint_url: str | None = None) -> bool:
    """Upload ``path`` to ``key`` unless an object of ``size`` bytes is there already
    (content-addressed keys). Returns True when it uploaded. Raises S3DeliveryError."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if int(c.head_object(Bucket=bucket, Key=key)["ContentLength"]) == size:
            return False
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchKey", "NotFound"):
            raise _failure("reading", bucket, endpoint_url, exc) from exc
    except BotoCoreError as exc:
        raise _failure("reading", bucket, endpoint_url, exc) from exc
    try:
        c.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": "application/zip"})
    except (ClientError, BotoCoreError, S3UploadFailedError, OSError) as exc:
        raise _failure("upload to", bucket, endpoint_url, exc) from exc
    return True


def presigned_get(c, bucket: str, key: str, ttl_seconds: int) -> str:
    """A presigned GET URL of one object (signed locally: no request)."""
    return c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl_seconds)


def delete_object(c, bucket: str, key: str, *, endpoint_url: str | None = None) -> bool:
    """Delete one object. Returns False when the bucket does not exist (nothing to delete);
    an absent key is a success, as S3 answers it. Raises S3DeliveryError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        c.delete_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) == "NoSuchBucket":
            return False
        raise _failure("deleting from", bucket, endpoint_url, exc) from exc
    except BotoCoreError as exc:
        raise _failure("deleting from", bucket, endpoint_url, exc) from exc
    return True
