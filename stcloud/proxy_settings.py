"""The outbound proxy setting (Providers page, ``GET|PUT /api/cloud/settings/proxy``) and the
``net.Proxies`` every outbound call of this process uses: the saved setting when there is
one, else ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``. Read from the database on each
call, so every process (gunicorn workers, the scheduler) follows a change at once."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from stcloud import net
from stcloud import settings as settings_store
from stcloud.errors import BadRequest

KEY = "outbound_proxy"


def _stored() -> dict:
    value = settings_store.get(KEY)
    return value if isinstance(value, dict) else {}


def current() -> net.Proxies:
    stored = _stored()
    return net.Proxies.from_env().with_setting(stored.get("proxy_url"), stored.get("no_proxy"))


def redact_url(url: str | None) -> str | None:
    """``http://user:pass@host:3128`` -> ``http://user:***@host:3128``."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def view() -> dict:
    stored = _stored()
    env = net.Proxies.from_env()
    effective = current()
    return {
        "proxy_url": redact_url(stored.get("proxy_url")),
        "no_proxy": stored.get("no_proxy") or "",
        "has_credentials": bool(stored.get("proxy_url") and urlsplit(stored["proxy_url"]).password),
        "source": "settings" if stored.get("proxy_url") else ("env" if env.configured else None),
        "effective": {"http": redact_url(effective.http), "https": redact_url(effective.https),
                      "no_proxy": list(effective.no_proxy)},
    }


def save(proxy_url, no_proxy) -> dict:
    """Store the setting (an empty ``proxy_url`` clears it: the environment applies again).
    Raises BadRequest naming the field."""
    if proxy_url is not None and not isinstance(proxy_url, str):
        raise BadRequest("proxy_url must be a string like http://proxy.example.com:3128, or null",
                         extra={"field": "proxy_url"})
    if no_proxy is not None and not isinstance(no_proxy, str):
        raise BadRequest("no_proxy must be a comma-separated string of hosts, domains and CIDRs",
                         extra={"field": "no_proxy"})
    if not (proxy_url or "").strip():
        settings_store.put(KEY, None)
        return view()
    try:
        clean = net.validate_proxy_url(proxy_url)
    except ValueError as exc:
        raise BadRequest(str(exc), extra={"field": "proxy_url"}) from None
    settings_store.put(KEY, {"proxy_url": clean, "no_proxy": ",".join(net.Proxies().with_setting(
        clean, no_proxy).no_proxy)})
    return view()
