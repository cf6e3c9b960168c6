"""A small REST client for the CLI (``--server``, ``--token``, else what ``stcloud login`` stored). Errors become ``ApiError``
with the problem+json detail, so the CLI prints one line and exits non-zero."""
from __future__ import annotations

import os

import requests

from stcloud import clientconfig


class ApiError(Exception):
    def __init__(self, status: int, message: str, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.body = body or {}


class Client:
    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30):
        self.server = (server or os.environ.get("STCLOUD_SERVER") or clientconfig.default_server()).rstrip("/")
        # An explicit --token / STCLOUD_TOKEN / STCLOUD_ADMIN_TOKEN wins over the key that
        # `stcloud login` stored for this server.
        self.token = (token or os.environ.get("STCLOUD_TOKEN") or os.environ.get("STCLOUD_ADMIN_TOKEN")
                      or clientconfig.token_for(self.server) or None)
        self.timeout = timeout
        self.http = requests.Session()
        if self.token:
            self.http.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, **kw):
        kw.setdefault("timeout", self.timeout)
        try:
            resp = self.http.request(method, self.server + path, **kw)
        except requests.ConnectionError:
            raise ApiError(0, f"cannot reach stcloud at {self.server} (is `stcloud serve` running?)") from None
        except requests.Timeout:
            raise ApiError(0, f"stcloud at {self.server} did not answer in {self.timeout:.0f}s") from None
        if resp.status_code >= 400:
            body = {}
            try:
                body = resp.json()
            except ValueError:
                pass
            detail = body.get("detail") or body.get("title") or resp.reason
            raise ApiError(resp.status_code, f"{resp.status_code} {detail}", body)
        if resp.status_code == 204 or not resp.content:
            return {}
        return resp.json()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json if json is not None else {}, **kw)

    def put(self, path, json=None, **kw):
        return self.request("PUT", path, json=json if json is not None else {}, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)
