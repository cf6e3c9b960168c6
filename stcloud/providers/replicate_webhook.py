"""Replicate's webhook signing secret, fetched with the official client.

``GET /v1/webhooks/default/secret`` -> ``{"key": "whsec_..."}``
(``replicate.Client(...).webhooks.default.secret()`` in replicate-python 1.0.x).

The official client retries GETs answered 429/503/504 up to 10 times and sleeps for any
``Retry-After`` with no cap. Inside a webhook request that would hold the request (and
Replicate's delivery) for minutes, so the transport below turns those answers into an
immediate failure: the receiver answers 503 and Replicate redelivers later.
"""
from __future__ import annotations

import httpx
import replicate
from replicate.exceptions import ReplicateError

from stcloud import net
from stcloud.providers.base import SecretUnavailable

FETCH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


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
        response = net.send(self._inner.handle_request, request)
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
    if not token:
        raise SecretUnavailable("REPLICATE_API_TOKEN not set: cannot fetch the webhook signing secret")
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
