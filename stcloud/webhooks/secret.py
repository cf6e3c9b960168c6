"""The webhook signing secret, cached per process. The provider's adapter fetches it
(Replicate: ``GET /v1/webhooks/default/secret`` -> ``{"key": "whsec_..."}``); this module only
decides when to ask.

- The cache is keyed by (base URL, token), so changing the token drops the old secret.
- On a signature mismatch the receiver asks for a re-fetch (Replicate may have rotated the
  secret). Re-fetches are single-flight and at most one per ``min_refresh_seconds``:
  otherwise every forged delivery would cost a call to Replicate (and could get our token
  rate-limited).
- The fetcher must fail at once rather than wait (a webhook request must not hang): we
  answer 503 and the provider redelivers later.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from stcloud.providers.base import SecretUnavailable

log = logging.getLogger(__name__)

DEFAULT_MIN_REFRESH_SECONDS = 10.0



@dataclass
class _Entry:
    secret: str
    fetched_at: float
    refreshed_at: float | None = None  # last re-fetch caused by a mismatch


class SecretCache:
    """Per-process cache. ``fetcher(token, base_url)`` and ``clock`` are injectable for tests."""

    def __init__(self, fetcher: Callable[[str, str], str],
                 clock: Callable[[], float] = time.monotonic,
                 min_refresh_seconds: float = DEFAULT_MIN_REFRESH_SECONDS):
        self._fetcher = fetcher
        self._clock = clock
        self.min_refresh_seconds = min_refresh_seconds
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    @staticmethod
    @functools.lru_cache(maxsize=16)  # one sha256 per token, not per delivery
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
