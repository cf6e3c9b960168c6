"""Streamed, size-capped download of a provider output URL to a local file. No Flask, no db."""
from __future__ import annotations

import hashlib
from pathlib import Path

import requests

from stcloud import net

CHUNK = 1024 * 1024


class DownloadError(Exception):
    pass


def download(url: str, dest: Path, *, max_bytes: int, headers: dict | None = None,
             timeout: tuple[float, float] = (10, 120), proxies: net.Proxies | None = None) -> tuple[int, str]:
    """Write ``url`` to ``dest``; returns (size, sha256 hex). Raises DownloadError (HTTP error,
    too large, connection problem). Never holds more than one chunk in memory. ``proxies``:
    default the environment's."""
    if not url.startswith(("https://", "http://")):
        raise DownloadError(f"not an http(s) URL: {url[:100]}")
    sha = hashlib.sha256()
    size = 0
    try:
        with net.requests_session(proxies or net.Proxies.from_env()) as http, \
                http.get(url, stream=True, timeout=timeout, headers=headers or {}) as resp:
            if resp.status_code != 200:
                raise DownloadError(f"GET {url[:200]} answered {resp.status_code}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DownloadError(f"{url[:200]} is {int(declared)} bytes, over the {max_bytes}-byte limit")
            with open(dest, "wb") as out:
                for chunk in resp.iter_content(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise DownloadError(f"{url[:200]} is over the {max_bytes}-byte limit")
                    sha.update(chunk)
                    out.write(chunk)
    except requests.RequestException as exc:
        raise DownloadError(f"downloading {url[:200]} failed: {exc}") from exc
    return size, sha.hexdigest()
