"""Outbound HTTP through the user's proxy: the one place that builds HTTP clients for calls
leaving this server (Replicate, its status page, output downloads, HF Hub, external S3, the
webhook signing secret). Pure: no Flask, no database.

Which proxy: ``Proxies.from_env()`` reads ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` /
``NO_PROXY`` (the lower-case names win, as in curl and requests); the setting saved on the
Providers page replaces them (``Proxies.with_setting``). Then, per URL, ``for_url`` picks the
proxy for its scheme unless the host is in ``NO_PROXY``.

Traps:

* An httpx client given its own ``transport=`` (the ``replicate`` client always is) ignores
  the proxy variables entirely. So every client here gets an explicit proxy (or none) and
  ``trust_env`` never decides.
* A proxy or server may close a kept-alive connection right after an answer without saying
  so (tinyproxy does, after every request). A request sent on it in that instant fails with
  "disconnected without sending a response". The routing transport sends such a request once
  more on a fresh connection when that is safe: an idempotent method and a body held in memory
  (Go's net/http has the same rule). Other requests fail, and their caller's retry decides.
* ``NO_PROXY`` entries: ``*`` (everything), host names (``example.com`` and ``.example.com``
  both match the domain and its subdomains), optional ``:port``, IP addresses and CIDR ranges
  (``10.0.0.0/8``). Loopback is *not* exempt unless listed (curl's rule).
"""
from __future__ import annotations

import http.client
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

SCHEMES = ("http", "https")
# Methods whose repetition does no harm (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

log = logging.getLogger(__name__)


def _split_no_proxy(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in (value or "").replace(" ", ",").split(",") if part.strip())


def validate_proxy_url(value: str) -> str:
    """``http(s)://[user:pass@]host:port`` -> the same, stripped. Raises ValueError."""
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
        raise ValueError(f"{value!r} is not a proxy URL like http://proxy.example.com:3128")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r}: a proxy URL has no path, query or fragment")
    return text


@dataclass(frozen=True)
class Proxies:
    http: str | None = None
    https: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Proxies:
        env = os.environ if environ is None else environ

        def var(name: str) -> str | None:
            return (env.get(name.lower()) or env.get(name.upper()) or "").strip() or None

        fallback = var("all_proxy")
        return cls(http=var("http_proxy") or fallback, https=var("https_proxy") or fallback,
                   no_proxy=_split_no_proxy(var("no_proxy")))

    def with_setting(self, proxy_url: str | None, no_proxy: str | None) -> Proxies:
        """The Providers-page setting (one proxy for both schemes) replaces the environment.
        An empty setting keeps the environment."""
        if not proxy_url:
            return self
        return replace(self, http=proxy_url, https=proxy_url, no_proxy=_split_no_proxy(no_proxy))

    @property
    def configured(self) -> bool:
        return bool(self.http or self.https)

    def bypasses(self, url: str) -> bool:
        """True when ``url``'s host matches ``NO_PROXY``."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            return False
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = None
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            addr = None
        for entry in self.no_proxy:
            if entry == "*":
                return True
            name, want_port = entry, None
            if entry.count(":") == 1 and not entry.startswith("["):
                name, _, p = entry.partition(":")
                want_port = int(p) if p.isdigit() else None
            name = name.strip("[]")
            if want_port is not None and want_port != port:
                continue
            if addr is not None:
                try:
                    if addr in ipaddress.ip_network(name, strict=False):
                        return True
                except ValueError:
                    pass
                continue
            domain = name.lstrip("*").lstrip(".")
            if domain and (host == domain or host.endswith("." + domain)):
                return True
        return False

    def for_url(self, url: str) -> str | None:
        """The proxy URL to reach ``url`` through, or None to connect directly."""
        scheme = urlsplit(url).scheme.lower()
        proxy = self.https if scheme == "https" else self.http if scheme == "http" else None
        if not proxy or self.bypasses(url):
            return None
        return proxy


DIRECT = Proxies()


# ---- requests ------------------------------------------------------------------------------

class _ProxiedSession(requests.Session):
    """A requests session whose proxy for each request comes from ``Proxies`` (the
    environment's proxy variables are not consulted; .netrc and CA bundle variables are)."""

    def __init__(self, proxies: Proxies):
        super().__init__()
        self._stcloud_proxies = proxies

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, {}, stream, verify, cert)
        proxy = self._stcloud_proxies.for_url(url)
        settings["proxies"] = {scheme: proxy for scheme in SCHEMES} if proxy else {}
        return settings


class _ResendDropped(Retry):
    """urllib3's side of ``send``: one more try for an idempotent request whose kept-alive
    connection closed before any answer; every other failure fails at once, as requests'
    default (``Retry(0, read=False)``) does."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        dropped = (isinstance(error, ProtocolError) and len(error.args) > 1
                   and isinstance(error.args[1], http.client.RemoteDisconnected))
        if not dropped or (method or "").upper() not in IDEMPOTENT:
            return Retry(0, read=False).increment(method, url, response, error, _pool, _stacktrace)
        log.info("%s %s: the connection closed before an answer; sending it again", method, url)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def requests_session(proxies: Proxies) -> requests.Session:
    session = _ProxiedSession(proxies)
    adapter = HTTPAdapter(max_retries=_ResendDropped(total=1, connect=0, read=1, status=0, other=0, redirect=0))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# ---- httpx ---------------------------------------------------------------------------------

class _Routing:
    """Sends each request directly or through its proxy, one inner transport per proxy."""

    def __init__(self, proxies: Proxies, factory: Callable[..., Any], **transport_kwargs: Any):
        self._proxies = proxies
        self._factory = factory
        self._kwargs = transport_kwargs
        self._transports: dict[str | None, Any] = {}

    def handle_request(self, request):
        proxy = self._proxies.for_url(str(request.url))
        transport = self._transports.get(proxy)
        if transport is None:
            transport = self._transports[proxy] = self._factory(proxy=proxy, **self._kwargs)
        return send(transport.handle_request, request)

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


def send(handle: Callable[[Any], Any], request) -> Any:
    """``handle(request)`` (an httpx or httpx2 transport's), sent once more when a kept-alive
    connection was closed before any answer and the request is safe to repeat. Every
    transport that sends our outbound requests goes through here."""
    try:
        return handle(request)
    except Exception as exc:
        if not (_closed_before_answer(exc) and _replayable(request)):
            raise
        log.info("%s %s: the connection closed before an answer; sending it again", request.method, request.url)
        return handle(request)


def _closed_before_answer(exc: BaseException) -> bool:
    """httpx's (and httpx2's) error for a connection the other side closed before a byte of
    the answer came."""
    return type(exc).__name__ == "RemoteProtocolError" and "without sending a response" in str(exc)


def _replayable(request) -> bool:
    # httpx reads a body given as bytes into ``_content`` when the request is built; a
    # streamed body (a generator, a file) has none and cannot be sent twice.
    return request.method in IDEMPOTENT and hasattr(request, "_content")


class RoutingTransport(_Routing, httpx.BaseTransport):
    def __init__(self, proxies: Proxies, **transport_kwargs: Any):
        super().__init__(proxies, httpx.HTTPTransport, **transport_kwargs)


def httpx_client(proxies: Proxies, **kwargs: Any) -> httpx.Client:
    return httpx.Client(transport=RoutingTransport(proxies), trust_env=False, **kwargs)


def hf_client_factory(proxies: Proxies) -> Callable[[], Any]:
    """A factory for ``huggingface_hub.set_client_factory``: the library's own client settings
    (huggingface_hub >= 1.0 speaks ``httpx2``, an httpx fork) with our proxy routing."""
    # Imported here, not at the top: huggingface_hub costs ~0.5 s of start-up for every
    # process, and only deliveries to the Hub need it.
    import httpx2
    from huggingface_hub.utils._http import hf_request_event_hook

    class HubRoutingTransport(_Routing, httpx2.BaseTransport):
        pass

    def factory() -> httpx2.Client:
        return httpx2.Client(transport=HubRoutingTransport(proxies, httpx2.HTTPTransport), trust_env=False,
                             follow_redirects=True, timeout=None, event_hooks={"request": [hf_request_event_hook]})

    return factory


# ---- botocore ------------------------------------------------------------------------------

def botocore_proxies(proxies: Proxies, endpoint_url: str | None) -> dict[str, str]:
    """``botocore.config.Config(proxies=...)`` for one endpoint: an empty dict connects
    directly (None would make botocore read the environment itself)."""
    proxy = proxies.for_url(endpoint_url or "https://s3.amazonaws.com")
    return {scheme: proxy for scheme in SCHEMES} if proxy else {}
