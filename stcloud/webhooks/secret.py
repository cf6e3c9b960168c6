"""The Replicate webhook signing secret: fetched with the official client, cached per process.

``GET /v1/webhooks/default/secret`` -> ``{"key": "whsec_..."}``
(``replicate.Client(...).webhooks.default.secret()`` in replicate-python 1.0.x).

- The cache is keyed by (base URL, token), so changing the token drops the old secret.
- On a signature mismatch the receiver asks for a re-fetch (Replicate may have rotated the
  secret). Re-fetches are single-flight and at most one per ``min_refresh_seconds``:
  otherwise every forged delivery would cost a call to Replicate (and could get our token
  rate-limited).
- The official client retries GETs answered 429/503/504 up to 10 times and sleeps for any
  ``Retry-After`` with no cap. Inside a webhook request that would hold the request (and
  Replicate's delivery) for minutes, so the transport below turns those answers into an
  immediate failure: we answer 503 and Replicate redelivers later.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import httpx

log = logging.getLogger(__name__)

FETCH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
DEFAULT_MIN_REFRESH_SECONDS = 10.0


class SecretUnavailable(Exception):
    """The secret cannot be fetched right now (no token, Replicate down, bad answer)."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class _Retryable(httpx.TransportError):
    def __init__(self, status: int, retry_after: str | None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class _SingleAttempt(httpx.BaseTransport):
    """Fail at once on the statuses replicate's RetryTransport would sleep and retry on."""

    def __init__(self, proxy: str | None = None):
        self._inner = httpx.HTTPTransport(proxy=proxy)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if response.status_code in (429, 503, 504):
            retry_after = response.headers.get("Retry-After")
            response.close()
            raise _Retryable(response.status_code, retry_after)
        return response

    def close(self) -> None:
        self._inner.close()


def fetch_secret(token: str, base_url: str, proxy: str | None = None) -> str:
    """One fetch through the official client (through ``proxy`` when given). Raises
    SecretUnavailable."""
    import replicate
    from replicate.exceptions import ReplicateError

    client = replicate.Client(api_token=token, base_url=base_url, timeout=FETCH_TIMEOUT,
                              transport=_SingleAttempt(proxy))
    try:
        key = client.webhooks.default.secret().key
    except _Retryable as exc:
        ra = exc.retry_after if exc.retry_after and exc.retry_after.isdigit() else None
        raise SecretUnavailable(f"Replicate answered {exc.status} to the webhook secret request",
                                retry_after=int(ra) if ra else None) from None
    except ReplicateError as exc:
        if exc.status in (401, 403):
            raise SecretUnavailable("Replicate refused the API token when fetching the webhook secret "
                                    f"(HTTP {exc.status}); check REPLICATE_API_TOKEN") from None
        raise SecretUnavailable(f"Replicate answered {exc.status} to the webhook secret request") from None
    except httpx.HTTPError as exc:
        raise SecretUnavailable(f"cannot reach Replicate for the webhook secret: {type(exc).__name__}") from None
    except Exception as exc:  # pydantic validation of an odd body, etc.
        raise SecretUnavailable(f"unexpected answer to the webhook secret request: {type(exc).__name__}") from None
    finally:
        try:
            client._client.close()  # the client keeps an httpx.Client open otherwise
        except Exception:  # noqa: BLE001 - closing must not hide the real outcome
            pass
    if not isinstance(key, str) or not key.startswith("whsec_"):
        raise SecretUnavailable("Replicate returned a webhook secret that is not whsec_<base64>")
    return key


@dataclass
class _Entry:
    secret: str
    fetched_at: float
    refreshed_at: float | None = None  # last re-fetch caused by a mismatch


class SecretCache:
    """Per-process cache. ``fetcher(token, base_url)`` and ``clock`` are injectable for tests."""

    def __init__(self, fetcher: Callable[[str, str], str] = fetch_secret,
                 clock: Callable[[], float] = time.monotonic,
                 min_refresh_seconds: float = DEFAULT_MIN_REFRESH_SECONDS):
        self._fetcher = fetcher
        self._clock = clock
        self.min_refresh_seconds = min_refresh_seconds
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    @staticmethod
    def _key(token: str, base_url: str) -> tuple[str, str]:
        return base_url.rstrip("/"), hashlib.sha256(token.encode()).hexdigest()

    def _fetch(self, key, token: str, base_url: str, *, refresh: bool = False) -> str:
        self.fetches += 1
        now = self._clock()
        if refresh and key in self._entries:
            self._entries[key].refreshed_at = now  # counts even if the fetch fails
        secret = self._fetcher(token, base_url)
        self._entries[key] = _Entry(secret, now, now if refresh else None)
        return secret

    def get(self, token: str | None, base_url: str) -> str:
        """The cached secret, fetching it the first time. Raises SecretUnavailable."""
        if not token:
            raise SecretUnavailable("REPLICATE_API_TOKEN not set: cannot fetch the webhook signing secret")
        key = self._key(token, base_url)
        entry = self._entries.get(key)
        if entry is not None:
            return entry.secret
        with self._lock:
            entry = self._entries.get(key)
            return entry.secret if entry is not None else self._fetch(key, token, base_url)

    def refresh(self, token: str | None, base_url: str, stale: str) -> str | None:
        """Re-fetch after ``stale`` failed to verify a delivery.

        Returns the new secret, or None when nothing new can be had: the secret did not
        change, or the last re-fetch was less than ``min_refresh_seconds`` ago (the first
        re-fetch after a plain fetch is always allowed, so a rotation is picked up at
        once). Raises SecretUnavailable when the fetch fails.
        """
        if not token:
            raise SecretUnavailable("REPLICATE_API_TOKEN not set: cannot fetch the webhook signing secret")
        key = self._key(token, base_url)
        with self._lock:  # single flight: concurrent mismatches share one fetch
            entry = self._entries.get(key)
            if entry is not None and entry.secret != stale:
                return entry.secret  # another request already picked up the rotation
            if (entry is not None and entry.refreshed_at is not None
                    and self._clock() - entry.refreshed_at < self.min_refresh_seconds):
                return None
            secret = self._fetch(key, token, base_url, refresh=True)
        if secret == stale:
            return None
        log.info("Replicate webhook signing secret changed (rotation picked up)")
        return secret

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
