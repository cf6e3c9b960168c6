"""The credentials JSON API (admin): mint, list and revoke access keys for the S3 endpoint.

``/api/cloud/storage/credentials[/<id>]`` is a normal API route (session or bearer auth, CSRF
rules), so ``credentials`` is a reserved bucket name; an S3 client that signs a request to it
is addressing that bucket and gets ``NoSuchBucket``.
"""
from __future__ import annotations

import secrets

from flask import Blueprint, g, jsonify

from stcloud.api import validation
from stcloud.api.schemas import settings as schemas
from stcloud.api.spec import operation
from stcloud.errors import BadRequest
from stcloud.storage import credentials, s3request, s3response, sigv4
from stcloud.storage.errors import S3Error

MINT_FIELDS = {"bucket", "prefix", "ttl_seconds", "job_id", "read_only", "description"}

api = Blueprint("storage_api", __name__, url_prefix=s3request.PREFIX + "/credentials")


def _refuse_s3_client():
    """A SigV4 request routed here is an S3 client addressing a bucket named ``credentials``."""
    if sigv4.is_signed(s3request.http_request()):
        g.s3_request_id = secrets.token_hex(8).upper()
        return s3response.error(S3Error("NoSuchBucket", "The bucket name 'credentials' is reserved by this "
                                                        "endpoint.", BucketName="credentials"))
    return None


@api.get("")
@operation(summary="Every key of the S3 endpoint (no secrets)", tags=["storage"],
           responses={200: schemas.CredentialList})
def list_keys():
    refused = _refuse_s3_client()
    if refused is not None:
        return refused
    return jsonify({"credentials": credentials.list_credentials()})


@api.post("")
@operation(body=schemas.MintBody, summary="Mint a scoped key for the S3 endpoint (secret shown once)",
           tags=["storage"], responses={201: schemas.MintedKey},
           links={201: {"RevokeKey": ("storage_api.revoke_key", "delete",
                                      {"access_key_id": "$response.body#/access_key_id"})}})
def mint_key():
    refused = _refuse_s3_client()
    if refused is not None:
        return refused
    body = validation.checked(schemas.MintBody)
    unknown = set(body) - MINT_FIELDS
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}", extra={"field": sorted(unknown)[0]})
    out = credentials.mint(bucket=body.get("bucket"), prefix=body.get("prefix", ""),
                           ttl_seconds=body.get("ttl_seconds"), job_id=body.get("job_id"),
                           read_only=body.get("read_only", False), description=body.get("description"))
    return jsonify(out), 201


@api.delete("/<access_key_id>")
@operation(summary="Revoke a key", tags=["storage"], responses={200: schemas.RevokedKey})
def revoke_key(access_key_id):
    refused = _refuse_s3_client()
    if refused is not None:
        return refused
    return jsonify({"credential": credentials.revoke(access_key_id)})
