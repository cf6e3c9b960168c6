"""A small REST client for the CLI (``--server``, ``--token``, else what ``stcloud login``
stored). Errors become ``ApiError``
with the problem+json detail, so the CLI prints one line and exits non-zero."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

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
        except requests.RequestException as exc:  # bad --server URL, TLS, redirects...
            raise ApiError(0, f"cannot reach stcloud at {self.server}: {exc}") from None
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
        try:
            return resp.json()
        except ValueError:
            raise ApiError(resp.status_code, f"{self.server}{path} did not answer with JSON "
                                             "(is --server an stcloud URL?)") from None

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json if json is not None else {}, **kw)

    def put(self, path, json=None, **kw):
        return self.request("PUT", path, json=json if json is not None else {}, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def download(self, url: str, dest: Path, *, chunk: int = 1024 * 1024) -> tuple[int, str]:
        """GET a file to ``dest`` (written as ``dest.part``, renamed when complete); returns
        (size, sha256). A site-relative URL (the API's download links) is fetched from the
        server with the token; the token is never sent to another host. Raises ApiError."""
        full = self.server + url if url.startswith("/") else url
        same_site = urlsplit(full)[:2] == urlsplit(self.server)[:2]
        headers = {} if same_site else {"Authorization": None}  # None drops the session header
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        try:
            with self.http.get(full, headers=headers, stream=True, timeout=self.timeout) as resp:
                if resp.status_code >= 400:
                    raise ApiError(resp.status_code, f"{resp.status_code} {resp.reason} for {url}")
                with open(part, "wb") as fh:
                    for block in resp.iter_content(chunk):
                        fh.write(block)
                        digest.update(block)
                        size += len(block)
            os.replace(part, dest)
        except requests.RequestException as exc:
            raise ApiError(0, f"downloading {url} failed: {exc}") from None
        except OSError as exc:
            raise ApiError(0, f"cannot write {dest}: {exc.strerror or exc}") from None
        finally:
            part.unlink(missing_ok=True)
        return size, digest.hexdigest()
